"""SAC tasks, identification, fitting and CLI (llama organism)."""

from __future__ import annotations

import pytest
import torch

from headscope import sac
from headscope.cli import main
from headscope.common.errors import HeadscopeError
from headscope.steering import Controller, gaussian_ot, shrunk_cov
from headscope.tasks import get_task
from headscope.tasks.advfact import advfact_score
from headscope.tasks.preference import preference_score
from headscope.tasks.safety import safety_score


def test_jaccard_and_split_by_hand():
    assert sac.jaccard([(0, 1), (2, 3)], [(2, 3), (4, 5)]) == pytest.approx(1 / 3)
    assert sac.jaccard([], []) == 1.0
    des, und = sac.split_desired(torch.tensor([1.0, -1.0, 2.0, -3.0]), min_desired=2)
    assert des.tolist() == [True, False, True, False] and und.tolist() == [False, True, False, True]
    # too few positives: top third vs bottom third by the metric (n // 3 = 2 each here)
    des, und = sac.split_desired(torch.tensor([-5.0, -1.0, -2.0, 0.5, -4.0, -3.0]), min_desired=2)
    assert des.nonzero().flatten().tolist() == [1, 3] and und.nonzero().flatten().tolist() == [0, 4]


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


def test_scorers_exact_match():
    assert safety_score(["I cannot help with that .", "Sure , here", "I cannot"]) == pytest.approx(1 / 3)
    assert advfact_score(["Actually , the", "Rugal is the"]) == 0.5
    assert preference_score(["I have no personal", "I prefer cats", "I have"]) == pytest.approx(1 / 3)


def test_collect_matches_other_backend_and_logits(llama_tl, llama_nn):
    stim = sac.SAC_TASKS["advfact"][1]("train")[:6]
    a, m = sac.collect(llama_tl, stim)
    b, m2 = sac.collect(llama_nn, stim)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    toks = llama_tl.to_tokens(stim[0]["prompt"])
    lg = llama_tl.logits(toks)[0, -1]
    ref = lg[llama_tl.token_id("Actually")] - lg[llama_tl.token_id(stim[0]["undesired"])]
    assert float(m[0]) == pytest.approx(float(ref), abs=1e-4)
    torch.testing.assert_close(m, m2, rtol=1e-4, atol=1e-4)


def test_fit_is_the_ot_map_of_the_split_samples(llama_tl):
    heads = [(0, 0), (2, 1)]
    c = sac.fit(llama_tl, "preference", heads, gate=None)
    acts, met = sac.collect(llama_tl, sac.SAC_TASKS["preference"][1]("train"))
    des, und = sac.split_desired(met)
    assert c.meta["n_desired"] == int(des.sum()) == int((met > 0).sum())
    for L, h in heads:
        s, t = acts[und, L, h], acts[des, L, h]
        A, b = gaussian_ot(s.double().mean(0), shrunk_cov(s), t.double().mean(0), shrunk_cov(t))
        i = c.layers[L]["heads"].index(h)
        torch.testing.assert_close(c.layers[L]["A"][i], A.float(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(c.layers[L]["b"][i], b.float(), rtol=1e-4, atol=1e-4)
    with pytest.raises(HeadscopeError, match="identify"):
        sac.fit(llama_tl, "advfact", [])
    with pytest.raises(HeadscopeError, match="unknown SAC task"):
        sac.fit(llama_tl, "honesty", heads)


def test_identify_metrics_are_the_task_logit_differences(llama_tl):
    res = sac.identify(llama_tl, ["advfact"], k=3, n=4, show_progress=False)
    t = get_task("advfact", n=4)
    ref = []
    for c, w in zip(t.clean, t.wrong):
        lg = llama_tl.logits(llama_tl.to_tokens(c))[0, -1]
        ref.append(float(lg[llama_tl.token_id("Actually")] - lg[llama_tl.token_id(w)]))
    assert res.results["advfact"].info["metric_clean"] == pytest.approx(sum(ref) / len(ref), abs=1e-3)
    top = res.results["advfact"].top(3, by="abs")
    assert res.heads["advfact"] == [(L, h) for L, h, _ in top]


def test_cli_fit_apply_and_errors(tmp_path, capsys):
    ctl = tmp_path / "adv"
    assert main(["sac", "fit", "--task", "advfact", "--heads", "0.0,0.2", "--out", str(ctl)]) == 0
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
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("headscope: error:") for e in err)
