"""Edge attribution and edge ablation on the tracr organisms (TransformerLens native bridges,
headscope/backends/tl_native.py), against a forward written out from their weights.

* ``_native_forward`` computes a compiled program head by head from ``bridge.blocks``'
  weights (no layer norm, ReLU MLPs, bidirectional or causal attention as configured), with
  every reader (each head's query, key and value, each MLP, the logits) reading its own
  copy of the residual plus an offset ``δ_v``: EAP and EAP-IG equal ``Δ_u · ∂m/∂δ_v`` from
  autograd on it, exact edge patching its run with ``δ_v = Δ_u``.
* The ablation of :class:`~headscope.faithfulness.Ablator` (every edge kept: the clean run;
  none: the corrupt run; one cut: the exact score of that edge).
* :func:`~headscope.backends.tl_native.weight_edges` against the head roles the organisms'
  cards state, and the committed ``tests/circuits/tracr_*.edges.json`` files against it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from headscope.backends.tl_native import weight_edges
from headscope.circuits.spec import load_spec
from headscope.eap import edge_attribution
from headscope.faithfulness import Ablator
from headscope.graph import load_edges
from headscope.loading import load_model

ROOT = Path(__file__).resolve().parents[2]
CIRCUITS = ROOT / "tests" / "circuits"
TOL = 1e-4


def _native_forward(model, tokens, resid0=None, delta=None):
    """Logits and every writer's contribution of a tracr model, head by head."""
    delta = delta or {}
    b = model.bridge
    cfg = b.cfg
    assert cfg.normalization_type is None  # tracr: ln1, ln2 and ln_final are identities
    H, dh = model.n_heads, model.d_head
    B, T = tokens.shape
    h = b.embed.weight[tokens] + b.pos_embed.weight[:T] if resid0 is None else resid0
    writers = {"input": h}
    scale = cfg.attn_scale if cfg.use_attn_scale and cfg.attn_scale > 0 else math.sqrt(dh)
    mask = torch.zeros(T, T)
    if cfg.attention_dir == "causal":
        mask = torch.triu(torch.full((T, T), float("-inf")), 1)
    for L, blk in enumerate(b.blocks):
        at = blk.attn

        def proj(mod, name, hh, r=h):
            rows = slice(hh * dh, (hh + 1) * dh)
            return (r + delta.get(name, 0.0)) @ mod.weight[rows].T + mod.bias[rows]

        outs = []
        for hh in range(H):
            q = proj(at.q, f"a{L}.h{hh}<q>", hh)
            k = proj(at.k, f"a{L}.h{hh}<k>", hh)
            v = proj(at.v, f"a{L}.h{hh}<v>", hh)
            z = (q @ k.transpose(-1, -2) / scale + mask).softmax(-1) @ v
            outs.append(z @ at.o.weight[:, hh * dh : (hh + 1) * dh].T)
            writers[f"a{L}.h{hh}"] = outs[-1]
        mid = h + sum(outs) + at.o.bias
        fc_in, fc_out = getattr(blk.mlp, "in"), blk.mlp.out
        x = mid + delta.get(f"m{L}", 0.0)
        mlp = torch.relu(x @ fc_in.weight.T + fc_in.bias) @ fc_out.weight.T + fc_out.bias
        writers[f"m{L}"] = mlp
        h = mid + mlp
    logits = (h + delta.get("logits", 0.0)) @ model.unembed_matrix()
    bu = model.unembed_bias()
    return (logits if bu is None else logits + bu), writers


def _task(name: str):
    spec = load_spec(CIRCUITS / f"tracr_{name}.toml")
    model = load_model(spec.model, backend="tl")
    batch = spec.make_task().prepare(model)
    return model, batch.clean, batch.corrupt, batch.metric_fn()


@pytest.mark.parametrize("name", ["reverse", "shift2"])
def test_the_hand_written_forward_is_the_model(name):
    model, clean, _, _ = _task(name)
    with torch.no_grad():
        assert torch.allclose(_native_forward(model, clean)[0], model.logits(clean), atol=1e-4)
    run = model.block_runner(clean)
    with torch.no_grad():
        assert torch.equal(run.unembed(run.forward(run.resid0)), model.logits(clean))


@pytest.mark.parametrize("name", ["reverse", "shift2"])
@pytest.mark.parametrize("method", ["eap", "eap-ig", "exact"])
def test_edge_scores_against_the_hand_written_forward(name, method):
    model, clean, corrupt, metric = _task(name)
    ours = edge_attribution(model, clean, corrupt, metric, method=method, steps=3)
    graph = ours.graph
    with torch.no_grad():
        lg_clean, w_clean = _native_forward(model, clean)
        _, w_corrupt = _native_forward(model, corrupt)
    d_w = {u: w_corrupt[u] - w_clean[u] for u in graph.writers}
    m0 = float(metric(lg_clean))
    ref = torch.full_like(ours.scores, float("nan"))
    if method == "exact":
        with torch.no_grad():
            for e in graph.edges():
                u, v = e.split("->")
                ref[graph.edge_index(e)] = float(metric(_native_forward(model, clean, delta={v: d_w[u]})[0])) - m0
    else:
        steps = 3 if method == "eap-ig" else 1
        G = {v: 0.0 for v in graph.readers}
        for k in range(1, steps + 1):
            point = (w_corrupt["input"] + k / steps * (w_clean["input"] - w_corrupt["input"])).detach()
            deltas = {v: torch.zeros_like(point, requires_grad=True) for v in graph.readers}
            m = metric(_native_forward(model, clean, resid0=point, delta=deltas)[0])
            grads = torch.autograd.grad(m, [deltas[v] for v in graph.readers], allow_unused=True)
            for v, gr in zip(graph.readers, grads):
                G[v] = G[v] + (0.0 if gr is None else gr / steps)
        for e in graph.edges():
            u, v = e.split("->")
            ref[graph.edge_index(e)] = float((d_w[u] * G[v]).sum())
    M = graph.mask
    scale = float(ref[M].abs().max())
    assert scale > 0.5  # the corruption moves the answer
    assert float((ours.scores[M] - ref[M]).abs().max()) <= TOL * max(1.0, scale)


def test_ablation_on_a_native_model():
    model, clean, corrupt, metric = _task("sort")
    ab = Ablator(model, clean, corrupt, metric)
    edges = ab.graph.edges()
    assert abs(ab.metric(edges) - float(metric(model.logits(clean)))) <= 1e-5
    assert abs(ab.m_empty - float(metric(model.logits(corrupt)))) <= 1e-5
    exact = edge_attribution(model, clean, corrupt, metric, method="exact")
    for e in edges:
        cut_one = ab.metric([x for x in edges if x != e]) - ab.m_clean
        assert abs(cut_one - exact.edge(e)) <= 1e-4, e


def test_weight_edges_follow_the_cards():
    rev = set(weight_edges(load_model("tracr-reverse", backend="tl")))
    # CARD: L1H0 and L2H0 are unused slots (all weights zero); L3H0 writes reverse -> logits;
    # L0H0 (length) reads tokens and feeds the MLPs that compute opp_idx, not the logits.
    assert not any(n in e for e in rev for n in ("a1.h0", "a2.h0"))
    assert "a3.h0->logits" in rev and "a0.h0->logits" not in rev
    assert {"input->a3.h0<v>", "input->a3.h0<k>", "a0.h0->m0"} <= rev
    sh = set(weight_edges(load_model("tracr-shift2", backend="tl")))
    # shift2: both layer-0 heads move a token (value: tokens; query/key: indices); the MLP
    # combines them into the pair that the logits read.
    assert {"input->a0.h0<v>", "input->a0.h1<v>", "a0.h0->m0", "a0.h1->m0", "m0->logits"} <= sh
    assert "a0.h0->logits" not in sh


@pytest.mark.parametrize("path", sorted(CIRCUITS.glob("tracr_*.edges.json")), ids=lambda p: p.name)
def test_committed_ground_truths_are_the_weights(path):
    meta = json.loads(path.read_text())
    graph, edges = load_edges(path)
    model = load_model(meta["model"], backend="tl")
    assert graph.n_layers == model.n_layers and graph.n_heads == model.n_heads
    assert sorted(edges) == sorted(weight_edges(model))
