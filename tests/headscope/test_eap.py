"""Edge attribution (headscope/eap.py) against independent computations.

* A hand-written forward of a tiny grouped-query Llama in which every reader (each head's
  query, each key/value group, each MLP, the logits) gets its own copy of the residual
  stream, plus an offset ``δ``: EAP and both EAP-IG variants equal ``Δ_u · ∂m/∂δ_v`` from
  autograd on it (the activations variant holding one node's output at a time), and exact
  edge patching equals its run with ``δ_v = Δ_u``.
* TransformerLens 4.3's own ``attribution_patch`` (edge granularity, summed over positions)
  on GPT-2 and Phi-3 equals headscope's EAP in the denoising direction.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from headscope.archcheck import _inputs, tiny_model_dir
from headscope.common.errors import HeadscopeError
from headscope.eap import edge_attribution
from headscope.graph import HeadGraph, load_edges, save_edges
from headscope.loading import load_model

TOL = 1e-5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("eap_archs")


def _prompts(seed: int = 0):
    return _inputs(seed)  # 3 prompts of 6 tokens, differing at positions 2-3


def _ld(ans, wrong):
    def metric(lg):
        idx = torch.arange(lg.shape[0])
        return (lg[:, -1][idx, ans] - lg[:, -1][idx, wrong]).mean()

    return metric


def _hand_forward(hf, tokens, resid0=None, delta=None, fixed=None):
    """A tiny Llama forward written out head by head; reader ``v`` sees ``r + delta[v]``;
    ``fixed["attn{L}"]`` / ``fixed["m{L}"]`` replace a layer's attention / MLP output.

    Returns logits and every writer's contribution (input, each head, each MLP), and each
    layer's attention output under ``attn{L}``."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    delta = delta or {}
    fixed = fixed or {}
    cfg = hf.config
    H, K = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = cfg.hidden_size // H
    B, T = tokens.shape
    h = hf.model.embed_tokens(tokens) if resid0 is None else resid0
    writers = {"input": h}
    pos = torch.arange(T)[None]
    cos, sin = hf.model.rotary_emb(h, pos)
    causal = torch.triu(torch.full((T, T), float("-inf")), 1)
    for L, blk in enumerate(hf.model.layers):
        at = blk.self_attn
        r = h

        def inp(name, norm, r=r):
            return norm(r + delta.get(name, 0.0))

        zs = []
        for hh in range(H):
            g = hh // (H // K)
            kv = f"a{L}.kv{g}" if K != H else f"a{L}.h{g}"
            q = inp(f"a{L}.h{hh}<q>", blk.input_layernorm) @ at.q_proj.weight[hh * dh : (hh + 1) * dh].T
            k = inp(f"{kv}<k>", blk.input_layernorm) @ at.k_proj.weight[g * dh : (g + 1) * dh].T
            v = inp(f"{kv}<v>", blk.input_layernorm) @ at.v_proj.weight[g * dh : (g + 1) * dh].T
            q, k = apply_rotary_pos_emb(q[:, None], k[:, None], cos, sin)
            att = (q[:, 0] @ k[:, 0].transpose(-1, -2)) / dh**0.5 + causal
            zs.append(att.softmax(-1) @ v)
        outs = [zs[hh] @ at.o_proj.weight[:, hh * dh : (hh + 1) * dh].T for hh in range(H)]
        for hh in range(H):
            writers[f"a{L}.h{hh}"] = outs[hh]
        writers[f"attn{L}"] = sum(outs)
        mid = r + fixed.get(f"attn{L}", writers[f"attn{L}"])
        x = blk.post_attention_layernorm(mid + delta.get(f"m{L}", 0.0))
        mlp = blk.mlp.down_proj(F.silu(blk.mlp.gate_proj(x)) * blk.mlp.up_proj(x))
        writers[f"m{L}"] = mlp
        mlp = fixed.get(f"m{L}", mlp)
        h = mid + mlp
    logits = hf.lm_head(hf.model.norm(h + delta.get("logits", 0.0)))
    return logits, writers


def test_graph_shape_and_names():
    g = HeadGraph(n_layers=2, n_heads=4, n_kv_heads=2)
    assert g.writers[:2] == ["input", "a0.h0"] and g.readers[4:6] == ["a0.kv0<k>", "a0.kv1<k>"]
    # heads of L read input + every earlier writer; m_L also reads the heads of L; logits read all
    per_layer = [1 + 0, 1 + 5]  # writers before layer 0 / layer 1 heads
    readers_per_layer = 4 + 2 + 2
    expected = sum(n * readers_per_layer + (n + 4) for n in per_layer) + len(g.writers)
    assert int(g.mask.sum()) == expected == len(g.edges())
    par = HeadGraph(n_layers=2, n_heads=4, n_kv_heads=4, parallel=True)
    i, j = par.edge_index("a0.h1->m1")
    assert bool(par.mask[i, j])
    with pytest.raises(HeadscopeError, match="does not exist"):
        par.edge_index("a1.h1->m1")  # parallel blocks: the MLP does not read its own layer's heads
    with pytest.raises(HeadscopeError, match="not an edge"):
        g.edge_index("a0.h9->logits")


@pytest.mark.parametrize("method", ["eap", "eap-ig", "eap-ig-activations", "exact"])
def test_against_the_hand_written_forward(method, root):
    path = tiny_model_dir("llama", root)
    model = load_model(str(path), "nnsight")
    hf = model.hf_model
    clean, corrupt, ans, wrong = _prompts()
    metric = _ld(ans, wrong)
    ours = edge_attribution(model, clean, corrupt, metric, method=method, steps=3)
    graph = ours.graph
    with torch.no_grad():
        lg_clean, w_clean = _hand_forward(hf, clean)
        _, w_corrupt = _hand_forward(hf, corrupt)
    d_w = {u: w_corrupt[u] - w_clean[u] for u in graph.writers}
    m0 = float(metric(lg_clean))
    ref = torch.full_like(ours.scores, float("nan"))
    if method == "exact":
        with torch.no_grad():
            for e in graph.edges():
                u, v = e.split("->")
                i, j = graph.edge_index(e)
                ref[i, j] = float(metric(_hand_forward(hf, clean, delta={v: d_w[u]})[0])) - m0
    else:
        steps = 3 if method.startswith("eap-ig") else 1
        # (held node, interpolation point) of every gradient pass
        held = ["input"] if method != "eap-ig-activations" else ["input", "attn0", "m0", "attn1", "m1"]
        passes = [(n, k / steps) for n in held for k in range(1, steps + 1)]
        G = {v: 0.0 for v in graph.readers}
        for node, a in passes:
            point = w_corrupt[node] + a * (w_clean[node] - w_corrupt[node])
            resid0 = point.detach() if node == "input" else w_clean["input"]
            fixed = {} if node == "input" else {node: point.detach()}
            deltas = {v: torch.zeros_like(resid0, requires_grad=True) for v in graph.readers}
            m = metric(_hand_forward(hf, clean, resid0=resid0, delta=deltas, fixed=fixed)[0])
            # a held attention output cuts its own layer's q/k/v from the metric: gradient 0
            grads = torch.autograd.grad(m, [deltas[v] for v in graph.readers], allow_unused=True)
            for v, gr in zip(graph.readers, grads):
                G[v] = G[v] + (0.0 if gr is None else gr / len(passes))
        for e in graph.edges():
            u, v = e.split("->")
            i, j = graph.edge_index(e)
            ref[i, j] = float((d_w[u] * G[v]).sum())
    M = graph.mask
    scale = float(ref[M].abs().max())
    assert scale > 1e-3  # the prompts move the metric
    assert float((ours.scores[M] - ref[M]).abs().max()) <= TOL * max(1.0, scale)
    assert torch.isnan(ours.scores[~M]).all()


def test_eap_ig_with_one_step_is_eap_and_backends_agree(root):
    path = tiny_model_dir("llama", root)
    clean, corrupt, ans, wrong = _prompts(1)
    metric = _ld(ans, wrong)
    ns = load_model(str(path), "nnsight")
    tl = load_model(str(path), "tl")
    eap = edge_attribution(ns, clean, corrupt, metric)
    ig1 = edge_attribution(ns, clean, corrupt, metric, method="eap-ig", steps=1)
    M = eap.graph.mask
    assert torch.equal(eap.scores[M], ig1.scores[M])
    for method in ("eap", "exact"):
        a = edge_attribution(ns, clean, corrupt, metric, method=method)
        b = edge_attribution(tl, clean, corrupt, metric, method=method)
        assert float((a.scores[M] - b.scores[M]).abs().max()) <= 1e-4


@pytest.mark.parametrize("arch", ["gpt2", "phi3"])
def test_denoising_eap_equals_transformer_lens(arch, root):
    from headscope.backends.tl import tl_edge_attribution

    model = load_model(str(tiny_model_dir(arch, root)), "tl")
    clean, corrupt, ans, wrong = _prompts(2)
    ours = edge_attribution(model, clean, corrupt, _ld(ans, wrong), direction="denoise")
    # TransformerLens scores per position, one pair at a time; the helper sums and averages
    peer = tl_edge_attribution(model, clean, corrupt, ans, wrong)
    assert len(peer) == ours.info["n_edges"]
    err = max(abs(ours.edge(e) - v) for e, v in peer.items())
    assert err <= TOL * max(1.0, max(abs(v) for v in peer.values()))


def test_bad_inputs_and_circuit_files(root, tmp_path):
    model = load_model(str(tiny_model_dir("gemma2", root)), "nnsight")
    clean, corrupt, ans, wrong = _prompts(3)
    with pytest.raises(HeadscopeError, match="Gemma 2"):
        edge_attribution(model, clean, corrupt, _ld(ans, wrong))
    llama = load_model(str(tiny_model_dir("llama", root)), "nnsight")
    with pytest.raises(HeadscopeError, match="unknown edge attribution method"):
        edge_attribution(llama, clean, corrupt, _ld(ans, wrong), method="acdc")
    res = edge_attribution(llama, clean, corrupt, _ld(ans, wrong))
    top = res.top(5)
    f = save_edges(tmp_path / "c.json", res.graph, top, {"method": "eap"})
    g, edges = load_edges(f)
    assert g == res.graph and sorted(top) == edges
