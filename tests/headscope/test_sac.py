"""SAC (headscope.papers.sac): tasks as data, identification, fitting, baselines, evaluation, CLI (llama)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from headscope.cli import main
from headscope.common.errors import HeadscopeError
from headscope.controls import next_token_kl, random_heads, token_groups
from headscope.papers import sac
from headscope.results import HeadSelection, select_heads
from headscope.steering import Controller, gaussian_ot, shrunk_cov
from headscope.tasks import get_task
from headscope.tasks.advfact import advfact_score
from headscope.tasks.preference import preference_score
from headscope.tasks.sac import SacData, SacTask, Stimulus, organism_sac, organism_task
from headscope.tasks.safety import safety_score

PKG = Path(sac.__file__).parent


@pytest.fixture(scope="module")
def data() -> SacData:
    return organism_sac()


def test_jaccard_and_split_by_hand():
    assert sac.jaccard([(0, 1), (2, 3)], [(2, 3), (4, 5)]) == pytest.approx(1 / 3)
    assert sac.jaccard([], []) == 1.0
    des, und = sac.split_desired(torch.tensor([1.0, -1.0, 2.0, -3.0]), min_desired=2)
    assert des.tolist() == [True, False, True, False] and und.tolist() == [False, True, False, True]
    # too few positives: top third vs bottom third by the metric (n // 3 = 2 each here)
    des, und = sac.split_desired(torch.tensor([-5.0, -1.0, -2.0, 0.5, -4.0, -3.0]), min_desired=2)
    assert des.nonzero().flatten().tolist() == [1, 3] and und.nonzero().flatten().tolist() == [0, 4]


def test_paper_package_reads_no_organism_and_every_string_comes_from_the_data():
    for f in PKG.glob("*.py"):
        tree = ast.parse(f.read_text())
        mods = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in mods if m.startswith("headscope.organisms")], f
        assert "headscope.tasks.suite" not in mods or f.name == "cli.py", f
        assert "headscope.tasks.safety" not in mods and "World" not in f.read_text(), f


def test_user_data_runs_without_the_organism(llama_tl):
    """A SacData built by hand (own prompts, own background, own measures) goes through fit and evaluate."""
    org = organism_task("advfact")
    own = SacTask("own", org.pairs, [Stimulus(s.prompt, s.desired, s.undesired) for s in org.stimuli[:12]], "m")
    seen = []

    def measures(model, patches):
        seen.append(len(patches))
        return {"m": 0.5}

    bg = [s.prompt for s in organism_task("preference").stimuli[:12]]
    d = SacData({"own": own}, {"bg": bg}, ["a b c", "a b"], measures, ("m",))
    assert sac.background_groups(d, "own") == {"bg": bg}
    c = sac.fit(llama_tl, own, [(0, 2)], background=sac.background_groups(d, "own"))
    assert c.meta["task"] == "own" and c.heads() == [(0, 2)]
    rows = sac.evaluate_all(llama_tl, d, {"none": [], "own": c.patches()}, show_progress=False)
    assert rows["none"] == {"m": 0.5, sac.KL: 0.0} and seen == [0, len(c.patches())]
    assert "| condition | m | kl_last |" in sac.markdown_table(rows)
    with pytest.raises(HeadscopeError, match="unknown SAC task"):
        d.select(["safety"])


@pytest.mark.parametrize("name", ["safety", "advfact", "preference"])
def test_task_pairs_equal_length_single_token_answers_disjoint_splits(name, llama_tl):
    tr, ho = get_task(name, split="train"), get_task(name, split="heldout")
    assert len(tr) > 0 and len(ho) > 0
    assert not set(tr.clean) & set(ho.clean)
    for c, k, a, w in zip(tr.clean, tr.corrupt, tr.answers, tr.wrong):
        assert len(llama_tl.tokenizer(c)["input_ids"]) == len(llama_tl.tokenizer(k)["input_ids"])
        assert c != k and llama_tl.token_id(a) != llama_tl.token_id(w)
    with pytest.raises(HeadscopeError, match="split"):
        get_task(name, split="test")
    t = organism_task(name)
    assert t.pairs.clean == tr.clean and all(isinstance(s, Stimulus) for s in t.stimuli)


def test_organism_background_is_other_tasks_then_general_ability(data):
    bg = sac.background_groups(data, "safety")
    assert list(bg) == ["advfact", "preference", "arithmetic", "facts"]
    assert bg["advfact"] == [s.prompt for s in data.tasks["advfact"].stimuli]
    heldout = {s.prompt for s in organism_task("safety", "heldout").stimuli}
    assert not heldout & set(bg["preference"])


def test_scorers_exact_match():
    assert safety_score(["I cannot help with that .", "Sure , here", "I cannot"]) == pytest.approx(1 / 3)
    assert advfact_score(["Actually , the", "Rugal is the"]) == 0.5
    assert preference_score(["I have no personal", "I prefer cats", "I have"]) == pytest.approx(1 / 3)


def test_collect_matches_other_backend_and_logits(llama_tl, llama_nn, data):
    stim = data.tasks["advfact"].stimuli[:6]
    a, m = sac.collect(llama_tl, stim)
    b, m2 = sac.collect(llama_nn, stim)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    toks = llama_tl.to_tokens(stim[0].prompt)
    lg = llama_tl.logits(toks)[0, -1]
    ref = lg[llama_tl.token_id("Actually")] - lg[llama_tl.token_id(stim[0].undesired)]
    assert float(m[0]) == pytest.approx(float(ref), abs=1e-4)
    torch.testing.assert_close(m, m2, rtol=1e-4, atol=1e-4)
    # rows in the order of the stimuli, whatever their token-length groups
    torch.testing.assert_close(sac.activations(llama_tl, [s.prompt for s in stim][::-1]), a.flip(0))


def test_fit_is_the_ot_map_of_the_split_samples(llama_tl, data):
    heads = [(0, 0), (2, 1)]
    task = data.tasks["preference"]
    c = sac.fit(llama_tl, task, heads, gate=None)
    acts, met = sac.collect(llama_tl, task.stimuli)
    des, und = sac.split_desired(met)
    assert c.meta["n_desired"] == int(des.sum()) == int((met > 0).sum())
    for L, h in heads:
        s, t = acts[und, L, h], acts[des, L, h]
        A, b = gaussian_ot(s.double().mean(0), shrunk_cov(s), t.double().mean(0), shrunk_cov(t))
        i = c.layers[L]["heads"].index(h)
        torch.testing.assert_close(c.layers[L]["A"][i], A.float(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(c.layers[L]["b"][i], b.float(), rtol=1e-4, atol=1e-4)
    with pytest.raises(HeadscopeError, match="identify"):
        sac.fit(llama_tl, data.tasks["advfact"], [])
    with pytest.raises(HeadscopeError, match="unknown SAC task"):
        data.task("honesty")


def test_identify_is_one_head_selection_per_task(llama_tl):
    d = organism_sac(["advfact"])
    sel = sac.identify(llama_tl, d, k=3, n=4, show_progress=False)
    assert list(sel) == ["advfact"] and isinstance(sel["advfact"], HeadSelection)
    s = sel["advfact"]
    t = get_task("advfact", n=4)
    ref = []
    for c, w in zip(t.clean, t.wrong):
        lg = llama_tl.logits(llama_tl.to_tokens(c))[0, -1]
        ref.append(float(lg[llama_tl.token_id("Actually")] - lg[llama_tl.token_id(w)]))
    assert s.scores.info["metric_clean"] == pytest.approx(sum(ref) / len(ref), abs=1e-3)
    assert s.heads == select_heads(s.scores.by_head(), by="abs", k=3) and len(s.heads) == 3
    assert sac.summary(sel)["heads"] == {"advfact": [list(h) for h in s.heads]}


def test_random_head_control_is_controls_random_heads(llama_tl):
    selected = [(0, 2), (0, 7), (0, 1), (4, 4), (0, 0), (5, 0), (5, 4), (0, 5)]
    for seed in range(6):
        got = sac.random_control_heads(llama_tl, 4, seed, selected)
        assert got == random_heads(llama_tl.n_layers, llama_tl.n_heads, 4, seed, exclude=selected)
        assert not set(got) & set(selected) and len(set(got)) == 4
    assert sac.random_control_heads(llama_tl, 4, 0, selected) != sac.random_control_heads(llama_tl, 4, 1, selected)
    n = llama_tl.n_layers * llama_tl.n_heads
    assert set(sac.random_control_heads(llama_tl, n - len(selected), 3, selected)).isdisjoint(selected)


def test_kl_is_the_last_position_kl(llama_tl):
    texts = ["the cat sat on the mat", "a b c", "one two three four", "x y"]
    patches = sac.fit(llama_tl, organism_task("safety"), [(0, 2)], gate=None).patches()
    kl = sac.last_token_kl(llama_tl, texts, patches)
    ref = next_token_kl(
        llama_tl.logits,
        lambda t: llama_tl.run_patched(t, patches),
        token_groups(texts, llama_tl.tokenizer),
        positions="last",
    )
    assert kl == ref > 0
    allpos = next_token_kl(
        llama_tl.logits, lambda t: llama_tl.run_patched(t, patches), token_groups(texts, llama_tl.tokenizer)
    )
    assert allpos != kl
    assert sac.last_token_kl(llama_tl, texts, []) == 0.0


def test_cli_fit_apply_and_errors(tmp_path, capsys):
    ctl = tmp_path / "adv"
    assert main(["sac", "fit", "--task", "advfact", "--heads", "0.0,L0H2", "--out", str(ctl)]) == 0
    assert Controller.load(ctl).heads() == [(0, 0), (0, 2)]
    assert (
        main(
            [
                "sac",
                "apply",
                "--controller",
                str(ctl),
                "--prompt",
                "User : Why is Runix the capital of Besenia ? Assistant :",
                "--max-new",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "steer :" in out and "none  :" in out
    assert main(["sac", "fit", "--task", "advfact", "--heads", "9.0", "--out", str(ctl)]) == 2
    assert main(["sac", "fit", "--task", "honesty", "--heads", "0.0"]) == 2
    assert main(["sac", "apply", "--controller", str(tmp_path / "none"), "--prompt", "x"]) == 2
    assert main(["sac", "fit", "--task", "advfact", "--identify", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(e.startswith("headscope: error:") for e in err)


@pytest.mark.parametrize("argv", [["sac", "identify"], ["sac", "fit"], ["sac", "evaluate"], ["steer", "generate"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0 and "--model" in capsys.readouterr().out
