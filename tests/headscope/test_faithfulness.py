"""Faithfulness by edge ablation, circuits from scores, CPR/CMD and edge-recovery AUROC
(headscope/faithfulness.py), against the plain runs and the exact edge patching of
headscope/eap.py (which cuts one edge through different hooks), and closed forms."""

from __future__ import annotations

import pytest
import torch

from headscope.archcheck import _inputs, _ld, tiny_model_dir
from headscope.common.errors import HeadscopeError
from headscope.eap import EdgeScores, edge_attribution
from headscope.faithfulness import Ablator, cmd, cpr, edge_auroc, greedy_edges
from headscope.graph import HeadGraph
from headscope.loading import load_model


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("faith_archs")


def _prompts(seed: int = 0):
    clean, corrupt, ans, wrong = _inputs(seed)  # 3 prompts of 6 tokens, differing at positions 2-3
    return clean, corrupt, lambda lg: _ld(lg, ans, wrong)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "opt", "gptj"])
def test_full_and_empty_circuits_and_single_cuts(arch, root):
    model = load_model(str(tiny_model_dir(arch, root)), "nnsight")
    clean, corrupt, metric = _prompts()
    ab = Ablator(model, clean, corrupt, metric)
    edges = ab.graph.edges()
    assert abs(ab.metric(edges) - float(metric(model.logits(clean)))) <= 1e-5
    # every edge cut: each reader reads the corrupt writers, i.e. the corrupt run
    assert abs(ab.m_empty - float(metric(model.logits(corrupt)))) <= 1e-5
    assert ab.faithfulness(edges) == pytest.approx(1.0) and ab.faithfulness([]) == pytest.approx(0.0)
    exact = edge_attribution(model, clean, corrupt, metric, method="exact")
    g = torch.Generator().manual_seed(1)
    for k in torch.randperm(len(edges), generator=g)[:12].tolist():
        cut_one = ab.metric([e for e in edges if e != edges[k]]) - ab.m_clean
        assert abs(cut_one - exact.edge(edges[k])) <= 1e-5, edges[k]


def test_mean_ablation_uses_the_corrupt_mean(root):
    model = load_model(str(tiny_model_dir("llama", root)), "tl")
    clean, corrupt, metric = _prompts(1)
    ab = Ablator(model, clean, corrupt, metric, ablation="mean")
    assert torch.allclose(ab.ref[:, 0, 0], ab.ref[:, -1, -1])  # one mean per writer
    assert abs(ab.metric(ab.graph.edges()) - ab.m_clean) <= 1e-5


def test_curves_and_circuits(root):
    model = load_model(str(tiny_model_dir("llama", root)), "nnsight")
    clean, corrupt, metric = _prompts(2)
    scores = edge_attribution(model, clean, corrupt, metric)
    ab = Ablator(model, clean, corrupt, metric)
    cur = ab.curve(scores, fractions=(0.0, 0.25, 0.5, 1.0))
    f = [p["faithfulness"] for p in cur["points"]]
    assert f[0] == pytest.approx(0.0) and f[-1] == pytest.approx(1.0)
    assert cur["cpr"] == pytest.approx(cpr([0, 0.25, 0.5, 1], f)) and cur["cmd"] >= 0
    greedy = greedy_edges(scores, 10)
    assert len(greedy) == 10 and greedy[0].endswith("->logits")
    live = {"logits"}
    for e in greedy:  # each edge's reader was already connected to the logits
        u, v = e.split("->")
        assert v.split("<")[0] in live
        live.add(u)


def test_cpr_cmd_closed_form():
    x = [0.0, 0.5, 1.0]
    y = [0.0, 0.5, 1.0]
    assert cpr(x, y) == pytest.approx(0.5)  # area under the diagonal
    assert cmd(x, y) == pytest.approx(0.5)
    assert cpr([1.0, 0.0], [1.0, 1.0]) == pytest.approx(1.0) and cmd([0.0, 1.0], [1.0, 1.0]) == 0.0
    # overshooting counts in CMD: |1 - 1.5| over half the axis
    assert cmd([0.0, 0.5, 1.0], [1.5, 1.5, 1.0]) == pytest.approx(0.5 * 0.5 + 0.5 * 0.25)
    with pytest.raises(HeadscopeError):
        cpr([0.0], [1.0])


def test_edge_auroc_closed_form():
    g = HeadGraph(1, 2, 2)
    s = torch.full((len(g.writers), len(g.readers)), float("nan"))
    names = g.edges()
    for rank, e in enumerate(names):
        s[g.edge_index(e)] = float(len(names) - rank)  # strictly decreasing
    es = EdgeScores(g, s)
    assert edge_auroc(es, names[:3])["auroc"] == pytest.approx(1.0)
    assert edge_auroc(es, names[-3:])["auroc"] == pytest.approx(0.0)
    with pytest.raises(HeadscopeError):
        edge_auroc(es, names)


def test_cli_discover_then_score(tmp_path, capsys):
    import json

    from headscope.cli import main

    args = ["--model", "induction", "--task", "induction", "-n", "8"]
    truth = "tests/circuits/induction.edges.json"
    out = tmp_path / "c"
    opts = ["--method", "eap", "--edges", "6", "--truth", truth, "--out", str(out)]
    assert main(["circuits", "discover", *args, *opts]) == 0
    report = json.loads(next(out.glob("*_edges_eap_*seed0.json")).read_text())
    circuit = json.loads(next(out.glob("*_circuit.json")).read_text())
    ranked = sorted(report["scores"].items(), key=lambda kv: -abs(kv[1]))
    assert sorted(e for e, _ in ranked[:6]) == circuit["edges"] and len(report["circuit"]) == 6
    assert 0.0 <= report["auroc"] <= 1.0 and next(out.glob("*.html")).stat().st_size > 0
    capsys.readouterr()
    assert main(["circuits", "score", str(next(out.glob("*_circuit.json"))), *args]) == 0
    printed = capsys.readouterr().out
    assert f"faithfulness {report['faithfulness']:.3f}" in printed
    assert main(["circuits", "discover", *args, "--truth", "missing.json", "--out", str(out)]) == 2
