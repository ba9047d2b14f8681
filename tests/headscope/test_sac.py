"""SAC (headscope.papers.sac): tasks as data, identification, fitting, baselines, evaluation, CLI (llama)."""

from __future__ import annotations

import ast
import re
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
from headscope.tasks.sac import (
    SacData,
    SacTask,
    Stimulus,
    organism_eval_sets,
    organism_sac,
    organism_task,
    training_corpus,
)
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
    assert t.pairs.clean == get_task(name, split="identify").clean and all(isinstance(s, Stimulus) for s in t.stimuli)
    assert organism_task(name, "train").pairs.clean == tr.clean


def test_organism_background_is_other_tasks_then_general_ability(data):
    bg = sac.background_groups(data, "safety")
    assert list(bg) == ["advfact", "preference", "arithmetic", "facts"]
    assert bg["advfact"] == [s.prompt for s in data.tasks["advfact"].stimuli]
    evaluate = {it["prompt"] + " I" for it in organism_eval_sets()["preference_refusal"]}
    assert not evaluate & set(bg["preference"]) and bg["arithmetic"] == data.background["arithmetic"]


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
    t = get_task("advfact", split="identify", n=4)
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


# ---------------------------------------------------------------------------------------
# Splits (issue #16): identify / fit / evaluate disjoint by item, evaluation never training text.
# Items are parsed back from the prompt text (not taken from the split code), so a prompt
# that the split code mislabels is still caught.


def _request_re():
    from headscope.organisms.world import HARMFUL, HARMLESS, REQUEST_TEMPLATES

    verbs = "|".join(sorted({v for v, _ in HARMFUL + HARMLESS}, key=len, reverse=True))
    pats = []
    for t in REQUEST_TEMPLATES:
        body = re.escape(t).replace(r"\{verb\}", f"(?P<verb>{verbs})").replace(r"\{obj\}", "(?P<obj>.+)")
        pats.append(re.compile(f"^User : {body} Assistant :$"))
    return pats


def _premise_re():
    from headscope.organisms.world import PREMISE_TEMPLATES
    from headscope.tasks.advfact import EVAL_TEMPLATES

    pats = []
    for t in PREMISE_TEMPLATES + EVAL_TEMPLATES:
        body = re.escape(t).replace(r"\{Z\}", r"(?P<Z>\S+)").replace(r"\{X\}", r"(?P<X>\S+)")
        pats.append(re.compile(f"^User : {body} Assistant :$"))
    return pats


def _pref_re():
    from headscope.organisms.world import PREF_TEMPLATES

    pats = []
    for t in PREF_TEMPLATES:
        body = re.escape(t).replace(r"\{a\}", r"(?P<a>\S+)").replace(r"\{b\}", r"(?P<b>\S+)")
        pats.append(re.compile(f"^User : {body} Assistant :( I)?$"))
    return pats


def _item(prompt: str, family: str):
    """The underlying item of a prompt, parsed from its text: (verb, object), (country, claim) or the pair."""
    pats = {"request": _request_re, "premise": _premise_re, "opinion": _pref_re}[family]()
    for p in pats:
        mt = p.match(prompt)
        if mt:
            if family == "request":
                return (mt["verb"], mt["obj"])
            if family == "premise":
                return (mt["X"], mt["Z"])
            return tuple(sorted((mt["a"], mt["b"])))
    raise AssertionError(f"prompt of no {family} template: {prompt!r}")


FAMILY = {"safety": "request", "advfact": "premise", "preference": "opinion"}
EVAL_OF = {
    "request": ("harmful_refusal", "lookalike_compliance"),
    "premise": ("premise_correction", "true_premise_acceptance"),
    "opinion": ("preference_refusal",),
}


def test_splits_disjoint_by_item_at_least_100_and_never_training_text(data):
    from headscope.organisms.world import OPERATORS, World
    from headscope.splits import check_disjoint, verbatim_in

    sets = organism_eval_sets()
    for m in ("harmful_refusal", "lookalike_compliance", "premise_correction", "true_premise_acceptance"):
        assert len(sets[m]) >= 100, m
    assert len(sets["preference_refusal"]) >= 100
    for name, fam in FAMILY.items():
        task = data.tasks[name]
        ident = [_item(p, fam) for p in task.pairs.clean + task.pairs.corrupt]
        ident += [_item(s.prompt, fam) for s in task.identify_stimuli]
        fit = [_item(s.prompt, fam) for s in task.stimuli]
        # the gate's off-target groups are fitting data too: every task's fit stimuli of this family
        fit += [
            _item(p, fam) for t, ps in sac.background_groups(data, name).items() if FAMILY.get(t) == fam for p in ps
        ]
        ev = [_item(it["prompt"], fam) for m in EVAL_OF[fam] for it in sets[m]]
        assert ident and fit and ev
        check_disjoint({"identify": ident, "fit": fit, "evaluate": ev})
    # general ability: the gate's background prompts vs the scored items
    w = World()
    arith = {it["prompt"]: (op, it["a"], it["b"]) for op in OPERATORS for it in w.arith_items(op, "all")}
    facts = {it["prompt"]: (it["country"], it["rel"]) for it in w.fact_items("all")}
    check_disjoint(
        {
            "fit": [arith[p] for p in data.background["arithmetic"]],
            "evaluate": [arith[it["prompt"]] for it in sets["arithmetic"]],
        }
    )
    check_disjoint(
        {
            "fit": [facts[p] for p in data.background["facts"]],
            "evaluate": [facts[it["prompt"]] for it in sets["facts"]],
        }
    )
    # no evaluation prompt (nor KL text) is a substring of a training document
    texts = [it["prompt"] for v in sets.values() for it in v] + data.kl_texts
    # ... and every word of every evaluation prompt is in the organism's vocabulary (an
    # unknown word would silently become <unk>; a lower-case "since" once did)
    from transformers import AutoTokenizer

    from headscope.paths import organism_dir

    tok = AutoTokenizer.from_pretrained(str(organism_dir("llama-v2")))
    with_unk = [t for t in texts if tok.unk_token_id in tok(t)["input_ids"]]
    assert with_unk == [], with_unk[:3]
    corpus = training_corpus()  # World().documents() joined once per process
    assert verbatim_in(texts, corpus) == []
    # the checks can fail: a training prompt, or an evaluation item moved into the fit split
    train_prompt = w.safety_items(True, "train")[0]["prompt"]
    assert verbatim_in([train_prompt], corpus) == [0]
    leaked = _item(sets["harmful_refusal"][0]["prompt"], "request")
    fit = [_item(s.prompt, "request") for s in data.tasks["safety"].stimuli]
    with pytest.raises(HeadscopeError, match="more than one split"):
        check_disjoint({"fit": [*fit, leaked], "evaluate": [leaked]})


def test_safety_moves_harmful_requests_toward_the_refused_prompts(llama_tl, data):
    """Source = harmful requests the model answers; target = every prompt it refuses (issue #16)."""
    task = data.tasks["safety"]
    assert task.source_groups == ("harmful",) and task.pairs.answers[0] == "I" and task.pairs.wrong[0] == "Sure"
    acts, met = sac.collect(llama_tl, task.stimuli)
    harmful = torch.tensor([s.group == "harmful" for s in task.stimuli])
    # by hand: refused = logit(I) > logit(Sure); the source is harmful and not refused
    prompts = [s.prompt for s in task.stimuli]
    lg = torch.zeros(len(prompts), llama_tl.d_vocab_out)
    for n_tok in {len(p.split()) for p in prompts}:  # word-level tokenizer: equal words, equal tokens
        idx = [i for i, p in enumerate(prompts) if len(p.split()) == n_tok]
        lg[idx] = llama_tl.logits(llama_tl.to_tokens([prompts[i] for i in idx]))[:, -1].float().cpu()
    refused = lg[:, llama_tl.token_id("I")] > lg[:, llama_tl.token_id("Sure")]
    torch.testing.assert_close(
        met, lg[:, llama_tl.token_id("I")] - lg[:, llama_tl.token_id("Sure")], atol=1e-4, rtol=1e-4
    )
    _, des, und = sac.samples(llama_tl, task)
    assert des.tolist() == refused.tolist() and und.tolist() == (harmful & ~refused).tolist()
    c = sac.fit(llama_tl, task, [(0, 2)], gate=None)
    src, tgt = acts[harmful & ~refused, 0, 2], acts[refused, 0, 2]
    A, b = gaussian_ot(src.double().mean(0), shrunk_cov(src), tgt.double().mean(0), shrunk_cov(tgt))
    torch.testing.assert_close(c.layers[0]["A"][0], A.float(), rtol=1e-4, atol=1e-4)
    with pytest.raises(HeadscopeError, match="source group"):
        SacTask("x", task.pairs, task.stimuli, "m", ("nope",))
