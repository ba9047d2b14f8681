"""Edge attribution: EAP, EAP-IG and exact edge patching on the head-level graph.

Methods (graph: :mod:`headscope.graph`; ``Δ_u = a_u(other) − a_u(base)`` is writer ``u``'s
change between the two runs, ``G_v = ∂m/∂(input of reader v)``):

* **EAP** (Syed, Rager & Conmy 2023): ``score(u→v) = Σ_{pos} Δ_u · G_v`` with ``G_v`` at
  the base run: 2 forwards + 1 backward for every edge at once.
* **EAP-IG, inputs** (Hanna, Pezzelle & Belinkov 2024): ``G_v`` averaged over ``steps``
  runs whose input embeddings lie on the straight line from the other run's to the base
  run's (``other + k/steps·(base − other)``, ``k = 1..steps``); with one step it is EAP.
* **EAP-IG, activations** (the reference code's ``ig-activations``): ``G_v`` averaged over
  runs on the base prompts in which *one* node at a time (the embeddings, a layer's whole
  attention output, or an MLP's output) is held at ``other + k/steps·(base − other)``,
  ``k = 1..steps``, with no gradient through it; ``(1 + 2·n_layers)·steps`` backward passes.
  The reference code (hannamw/EAP-IG) averages its *inputs* variant over ``k = 0..steps−1``
  instead of the paper's ``1..steps``; headscope follows the paper, so that one step is EAP.
* **exact**: the base run with reader ``v``'s input alone moved by ``Δ_u``
  (``norm(r + Δ_u)`` feeds only that head's query, key or value projection, or only the
  MLP, or only the unembedding), minus the base metric. One patched copy per edge, batched
  as the node sweeps are and restarted at the reader's layer.

Direction: ``"noise"`` (the EAP-IG convention: base = clean, other = corrupt, so a score
estimates how much the metric moves when that edge alone is corrupted) or ``"denoise"``
(base = corrupt, other = clean: TransformerLens's ``attribution_patch`` convention).
Scores are raw metric differences; a batch's scores are means over its prompts (the metric
averages over the batch).

Reader gradients: the gradient with respect to one head's query (key, value) input is the
gradient at that head's slice of the projection output, taken back through the
projection's rows and the attention norm's vector-Jacobian product at the run's residual,
so every head gets its own copy of the residual stream without re-implementing attention.
Written by hand: TransformerLens 4.3's ``attribution_patch`` covers EAP on the bridge but
refuses grouped-query models and ``ig_steps > 1``; EAP-IG's reference code needs the
removed ``HookedTransformer``. Needs head outputs that add linearly into the residual
(not Gemma 2's post-attention norm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from headscope.backends._hf import get_path, split_qkv
from headscope.common.batching import chunks
from headscope.common.errors import HeadscopeError
from headscope.fastpatch import BlockRunner
from headscope.graph import HeadGraph

Method = Literal["eap", "eap-ig", "eap-ig-activations", "exact"]
Metric = Callable[[Tensor], Tensor]


@dataclass
class EdgeScores:
    """Scores ``[n_writers, n_readers]`` of every edge of ``graph`` (NaN where no edge)."""

    graph: HeadGraph
    scores: Tensor
    info: dict = field(default_factory=dict)

    def edge(self, name: str) -> float:
        i, j = self.graph.edge_index(name)
        return float(self.scores[i, j])

    def ranked(self, absolute: bool = True) -> list[tuple[str, float]]:
        """Every edge with its score, strongest first (by |score| when ``absolute``)."""
        W, R = self.graph.writers, self.graph.readers
        idx = self.graph.mask.nonzero().tolist()
        vals = [float(self.scores[i, j]) for i, j in idx]
        order = sorted(range(len(idx)), key=lambda k: -(abs(vals[k]) if absolute else vals[k]))
        return [(f"{W[idx[k][0]]}->{R[idx[k][1]]}", vals[k]) for k in order]

    def top(self, n: int, absolute: bool = True) -> list[str]:
        """The names of the ``n`` strongest edges."""
        return [e for e, _ in self.ranked(absolute)[:n]]

    def as_dict(self) -> dict[str, float]:
        return dict(self.ranked())


def _check_model(model) -> None:
    native = model.supports("edges") and hasattr(model, "block_runner")
    if not native and (not model.supports("fast_reentry") or getattr(model, "hf_model", None) is None):
        raise HeadscopeError(
            "edge attribution runs on Hugging Face decoder models (both backends) and on the tracr organisms; this "
            "model has neither an HF module tree nor native blocks"
        )
    if model.paths.attn_out is not None:
        raise HeadscopeError(
            "edge attribution needs head outputs that add linearly into the residual stream; this architecture "
            "normalises the attention output before adding it (Gemma 2), so a head's contribution is not its own"
        )


def _runner(model, tokens: Tensor) -> BlockRunner:
    """The block runner of ``model`` on ``tokens``: a :class:`BlockRunner` on an HF module
    tree, or the model's own (``block_runner``: the tracr organisms' native blocks)."""
    own = getattr(model, "block_runner", None)
    return own(tokens) if own is not None else BlockRunner(model, tokens)


def _weight(mod: nn.Module) -> Tensor:
    from headscope.backends.base import materialized

    with materialized(mod):
        w = mod.weight
        assert isinstance(w, Tensor)
        return w.detach().clone()


class _Arch:
    """Per-layer modules and weights of one runner (inside its session)."""

    def __init__(self, runner: BlockRunner) -> None:
        m = runner.model
        self.p = m.paths
        self.H, self.K, self.dh, self.d = m.n_heads, m.n_kv_heads, m.d_head, m.d_model
        self.blocks = runner.blocks
        self.model = m

    def attn(self, L: int) -> nn.Module:
        return get_path(self.blocks[L], self.p.attn)

    def attn_norm(self, L: int) -> nn.Module:
        return get_path(self.blocks[L], self.p.attn_norm)

    def mlp_norm(self, L: int) -> nn.Module:
        return get_path(self.blocks[L], self.p.mlp_norm)

    def mlp_in(self, L: int) -> nn.Module:
        return get_path(self.blocks[L], self.p.mlp_in)

    def mlp(self, L: int) -> nn.Module:
        return get_path(self.blocks[L], self.p.mlp)

    def o_proj(self, L: int) -> nn.Module:
        return get_path(self.attn(L), self.p.o_proj)

    def projections(self, L: int) -> list[nn.Module]:
        """The q/k/v projection modules (one fused module, or three)."""
        a = self.attn(L)
        if self.p.qkv_fused:
            return [get_path(a, self.p.qkv_fused)]
        assert self.p.qkv is not None
        return [get_path(a, n) for n in self.p.qkv]

    def weights(self, L: int) -> tuple[Tensor, Tensor, Tensor]:
        """``W_q, W_k, W_v`` as ``[d_model, heads, d_head]`` (rows of the projections)."""
        mods = self.projections(L)
        if self.p.qkv_fused:
            w = _weight(mods[0])
            wf = w if self.p.conv1d else w.T  # [d, F]
            q, k, v = split_qkv(wf[None], self.p, self.H, self.K, self.dh)
            return q[0], k[0], v[0]
        ws = [_weight(m).T for m in mods]  # [d, n*dh]
        return (
            ws[0].reshape(self.d, self.H, self.dh),
            ws[1].reshape(self.d, self.K, self.dh),
            ws[2].reshape(self.d, self.K, self.dh),
        )

    def split_out(self, outs: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Projection output(s) as per-head ``q, k, v`` ``[B, T, n, d_head]``."""
        if self.p.qkv_fused:
            return split_qkv(outs[0], self.p, self.H, self.K, self.dh)
        b, t = outs[0].shape[:2]
        return (
            outs[0].view(b, t, self.H, self.dh),
            outs[1].view(b, t, self.K, self.dh),
            outs[2].view(b, t, self.K, self.dh),
        )


@contextmanager
def _record(arch: _Arch, n_layers: int, detach: bool) -> Iterator[dict]:
    """Hooks that record, per layer, the attention norm's input, the projection outputs,
    ``z``, the MLP norm's input, the MLP's input and output (removed on exit)."""
    rec: dict = {k: {} for k in ("attn_in", "proj", "z", "attn_out", "mlp_norm_in", "mlp_in", "mlp_out")}
    handles = []

    def keep(x: Tensor) -> Tensor:
        return x.detach() if detach else x

    for L in range(n_layers):

        def pre_attn_norm(mod, args, L=L):
            rec["attn_in"].setdefault(L, keep(args[0]))

        def pre_mlp_norm(mod, args, L=L):
            rec["mlp_norm_in"][L] = keep(args[0])

        def proj_out(mod, args, out, L=L, i=0):
            rec["proj"].setdefault(L, []).append(keep(out))

        def pre_z(mod, args, L=L):
            rec["z"][L] = keep(args[0])

        def pre_mlp_in(mod, args, L=L):
            if detach:
                rec["mlp_in"][L] = args[0].detach()
                return None
            # A view of its own, so that its gradient is the MLP's alone even where the MLP
            # norm is the identity and hands on the residual tensor itself (tracr).
            x = args[0].view_as(args[0])
            rec["mlp_in"][L] = x
            return (x,) + tuple(args[1:])

        def mlp_out(mod, args, out, L=L):
            rec["mlp_out"][L] = keep(out[0] if isinstance(out, tuple) else out)

        def o_out(mod, args, out, L=L):
            rec["attn_out"][L] = keep(out)

        handles.append(arch.attn_norm(L).register_forward_pre_hook(pre_attn_norm))
        handles.append(arch.mlp_norm(L).register_forward_pre_hook(pre_mlp_norm))
        for mod in arch.projections(L):
            handles.append(mod.register_forward_hook(proj_out))
        handles.append(arch.o_proj(L).register_forward_pre_hook(pre_z))
        handles.append(arch.mlp_in(L).register_forward_pre_hook(pre_mlp_in))
        handles.append(arch.mlp(L).register_forward_hook(mlp_out))
        handles.append(arch.o_proj(L).register_forward_hook(o_out))
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


def _writers(arch: _Arch, graph: HeadGraph, rec: dict, resid0: Tensor) -> Tensor:
    """Every writer's contribution ``[n_writers, B, T, d]`` of one recorded run."""
    B, T, d = resid0.shape
    out = [resid0[None]]
    for L in range(graph.n_layers):
        z = rec["z"][L].reshape(B, T, arch.H, arch.dh)
        W_O = arch.model.o_proj_weight(L).to(z.dtype)  # [H, dh, d]
        out.append(torch.einsum("bthk,hkd->hbtd", z, W_O))
        out.append(rec["mlp_out"][L].reshape(B, T, d)[None])
    return torch.cat(out)


def _vjp(norm: nn.Module, x: Tensor, grads: Tensor) -> Tensor:
    """``grads`` ``[n, B, T, d]`` at the norm's output, taken back to its input ``x``."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        y = norm(xi)
        return torch.stack([torch.autograd.grad(y, xi, g, retain_graph=True)[0] for g in grads])


def _reader_grads(
    runner: BlockRunner,
    arch: _Arch,
    graph: HeadGraph,
    resid0: Tensor,
    metric: Metric,
    override: tuple[str, int, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """``(metric, G)``: ``G`` ``[n_readers, B, T, d]`` the metric's gradient with respect to
    every reader's own copy of its input residual, at a run entering with ``resid0``.
    ``override=("attn"|"mlp", L, value)`` replaces that layer's attention (``o_proj``) or MLP
    output by the constant ``value`` (no gradient flows through it)."""
    B, T, d = resid0.shape
    handles = []
    if override is not None:
        kind, L, value = override
        mod = arch.o_proj(L) if kind == "attn" else arch.mlp(L)

        def fixed(m, args, out, value=value):
            o = out[0] if isinstance(out, tuple) else out
            v = value.detach().reshape(o.shape).to(o.dtype)
            return (v,) + tuple(out[1:]) if isinstance(out, tuple) else v

        handles.append(mod.register_forward_hook(fixed))
    try:
        return _reader_grads_run(runner, arch, graph, resid0, metric)
    finally:
        for h in handles:
            h.remove()


def _reader_grads_run(
    runner: BlockRunner, arch: _Arch, graph: HeadGraph, resid0: Tensor, metric: Metric
) -> tuple[Tensor, Tensor]:
    B, T, d = resid0.shape
    with _record(arch, graph.n_layers, detach=False) as rec, torch.enable_grad():
        h0 = resid0.detach().clone().requires_grad_(True)
        final = runner.forward(h0)
        m = metric(runner.unembed(final))
        targets: list[Tensor] = [final]
        for L in range(graph.n_layers):
            targets += rec["proj"][L] + [rec["mlp_in"][L]]
        grads = torch.autograd.grad(m, targets, allow_unused=True)
    g_final, rest = grads[0], list(grads[1:])
    G = torch.zeros(len(graph.readers), B, T, d, dtype=resid0.dtype)
    n_proj = len(arch.projections(0))
    for L in range(graph.n_layers):
        gp = [g if g is not None else torch.zeros_like(t) for g, t in zip(rest[:n_proj], rec["proj"][L])]
        g_mlp = rest[n_proj]
        rest = rest[n_proj + 1 :]
        gq, gk, gv = arch.split_out(gp)
        Wq, Wk, Wv = arch.weights(L)
        heads = torch.cat(
            [
                torch.einsum("btnk,dnk->nbtd", gq, Wq.to(gq.dtype)),
                torch.einsum("btnk,dnk->nbtd", gk, Wk.to(gk.dtype)),
                torch.einsum("btnk,dnk->nbtd", gv, Wv.to(gv.dtype)),
            ]
        )
        sl = graph.reader_slices(L)
        G[sl["q"].start : sl["v"].stop] = _vjp(arch.attn_norm(L), rec["attn_in"][L], heads)
        g_mlp = torch.zeros(B, T, d) if g_mlp is None else g_mlp.reshape(B, T, d)
        G[sl["mlp"]] = _vjp(arch.mlp_norm(L), rec["mlp_norm_in"][L].reshape(B, T, d), g_mlp[None])
    G[-1] = g_final.reshape(B, T, d) if g_final is not None else 0
    return m.detach(), G


def edge_attribution(
    model,
    clean: Tensor,
    corrupt: Tensor,
    metric: Metric,
    *,
    method: Method = "eap",
    steps: int = 5,
    direction: Literal["noise", "denoise"] = "noise",
    max_rows: int = 256,
) -> EdgeScores:
    """Score every edge of the model's head-level graph (module docstring for the methods).

    Args:
        metric: logits ``[batch, pos, vocab]`` → scalar (mean over the batch).
        method: ``"eap"``, ``"eap-ig"`` (``steps`` points) or ``"exact"``.
        direction: ``"noise"`` (gradients at the clean run, ``Δ = corrupt − clean``) or
            ``"denoise"`` (at the corrupt run, ``Δ = clean − corrupt``).
        max_rows: rows per forward pass of the exact method (copies × batch).

    Returns:
        :class:`EdgeScores`; ``info`` holds the method, direction, steps and the base and
        other metric values.
    """
    if method not in ("eap", "eap-ig", "eap-ig-activations", "exact"):
        raise HeadscopeError(
            f"unknown edge attribution method {method!r}; use eap, eap-ig, eap-ig-activations or exact"
        )
    if direction not in ("noise", "denoise"):
        raise HeadscopeError(f"unknown direction {direction!r}; use noise (EAP-IG's) or denoise")
    if method.startswith("eap-ig") and steps < 1:
        raise HeadscopeError(f"EAP-IG needs steps >= 1; got {steps}")
    _check_model(model)
    clean, corrupt = model.check_tokens(clean), model.check_tokens(corrupt)
    if clean.shape != corrupt.shape:
        raise HeadscopeError(
            f"clean {tuple(clean.shape)} and corrupt {tuple(corrupt.shape)} tokens differ in shape; pair prompts "
            "of equal token length"
        )
    base_t, other_t = (clean, corrupt) if direction == "noise" else (corrupt, clean)
    graph = HeadGraph.from_model(model)
    base = _runner(model, base_t)
    other = _runner(model, other_t)
    with base.session():
        arch = _Arch(base)
        with torch.no_grad():
            with _record(arch, graph.n_layers, detach=True) as rec_b:
                m_base = metric(base.unembed(base.forward(base.resid0))).detach()
            a_base = _writers(arch, graph, rec_b, base.resid0)
            with _record(arch, graph.n_layers, detach=True) as rec_o:
                m_other = metric(base.unembed(base.forward(other.resid0))).detach()
            a_other = _writers(arch, graph, rec_o, other.resid0)
        delta = a_other - a_base  # [n_writers, B, T, d]
        if method == "exact":
            scores = _exact(base, arch, graph, rec_b, delta, metric, m_base, max_rows)
        elif method == "eap-ig-activations":
            G = torch.zeros(len(graph.readers), *base.resid0.shape)
            nodes: list[tuple[str, int, Tensor, Tensor]] = [("input", -1, base.resid0, other.resid0)]
            for L in range(graph.n_layers):
                nodes.append(("attn", L, rec_b["attn_out"][L], rec_o["attn_out"][L]))
                nodes.append(("mlp", L, rec_b["mlp_out"][L], rec_o["mlp_out"][L]))
            for kind, L, b_out, o_out in nodes:
                for k in range(1, steps + 1):
                    value = o_out + (k / steps) * (b_out - o_out)
                    if kind == "input":
                        G += _reader_grads(base, arch, graph, value, metric)[1]
                    else:
                        G += _reader_grads(base, arch, graph, base.resid0, metric, (kind, L, value))[1]
            G /= len(nodes) * steps
            scores = torch.einsum("ubtd,rbtd->ur", delta.float(), G.float())
        else:
            n = steps if method == "eap-ig" else 1
            G = torch.zeros(len(graph.readers), *base.resid0.shape)
            for k in range(1, n + 1):
                point = other.resid0 + (k / n) * (base.resid0 - other.resid0)
                G += _reader_grads(base, arch, graph, point, metric)[1] / n
            scores = torch.einsum("ubtd,rbtd->ur", delta.float(), G.float())
    scores = torch.where(graph.mask, scores, torch.full_like(scores, float("nan")))
    info = {
        "method": method,
        "steps": steps if method.startswith("eap-ig") else 1,
        "direction": direction,
        "metric_base": float(m_base),
        "metric_other": float(m_other),
        "model": getattr(model, "name", "model"),
        "backend": getattr(model, "backend", "?"),
        "n_edges": int(graph.mask.sum()),
    }
    return EdgeScores(graph, scores, info)


@torch.no_grad()
def _exact(
    runner: BlockRunner,
    arch: _Arch,
    graph: HeadGraph,
    rec: dict,
    delta: Tensor,
    metric: Metric,
    m_base: Tensor,
    max_rows: int,
) -> Tensor:
    """Exact edge patching: one copy of the base batch per edge, restarted at the reader's layer."""
    B, T, d = runner.resid0.shape
    scores = torch.full((len(graph.writers), len(graph.readers)), float("nan"))
    final = runner.forward(runner.resid0)
    per = max(1, max_rows // B)
    # logits reader: no block to run
    for us in chunks(list(range(len(graph.writers))), per):
        h = final.repeat(len(us), 1, 1) + delta[us].reshape(len(us) * B, T, d)
        lg = runner.unembed(h)
        for j, u in enumerate(us):
            scores[u, -1] = float(metric(lg[j * B : (j + 1) * B]) - m_base)
    cols = _proj_columns(arch)
    for L in range(graph.n_layers):
        sl = graph.reader_slices(L)
        jobs = [
            (u, r) for r in range(sl["q"].start, sl["mlp"].stop) for u in graph.mask[:, r].nonzero().flatten().tolist()
        ]
        for chunk in chunks(jobs, per):
            n = len(chunk)
            dl = torch.stack([delta[u] for u, _ in chunk])  # [n, B, T, d]
            kind = []
            for _, r in chunk:
                if r < sl["k"].start:
                    kind.append(("q", r - sl["q"].start))
                elif r < sl["v"].start:
                    kind.append(("k", r - sl["k"].start))
                elif r < sl["mlp"].start:
                    kind.append(("v", r - sl["v"].start))
                else:
                    kind.append(("mlp", 0))
            with _edge_hooks(arch, L, dl, kind, cols, B):
                h = rec["attn_in"][L].repeat(n, 1, 1)
                out = runner.forward(h, start_layer=L, rows=torch.arange(B).repeat(n))
                lg = runner.unembed(out)
            for j, (u, r) in enumerate(chunk):
                scores[u, r] = float(metric(lg[j * B : (j + 1) * B]) - m_base)
    return scores


def _proj_columns(arch: _Arch) -> dict[str, list[Tensor]]:
    """For each of q/k/v and head index: (projection module index, output columns)."""
    if arch.p.qkv_fused:
        F = int(_weight(arch.projections(0)[0]).shape[1 if arch.p.conv1d else 0])
        idx = torch.arange(F, dtype=torch.float64)[None, None]
        q, k, v = split_qkv(idx, arch.p, arch.H, arch.K, arch.dh)
        return {"q": [q[0, 0, h].long() for h in range(arch.H)], "k": [k[0, 0, g].long() for g in range(arch.K)],
                "v": [v[0, 0, g].long() for g in range(arch.K)]}  # fmt: skip
    return {
        "q": [torch.arange(h * arch.dh, (h + 1) * arch.dh) for h in range(arch.H)],
        "k": [torch.arange(g * arch.dh, (g + 1) * arch.dh) for g in range(arch.K)],
        "v": [torch.arange(g * arch.dh, (g + 1) * arch.dh) for g in range(arch.K)],
    }


@contextmanager
def _edge_hooks(arch: _Arch, L: int, dl: Tensor, kind: list[tuple[str, int]], cols: dict, B: int) -> Iterator[None]:
    """Block ``L`` of a stacked run (copy ``c`` = rows ``c·B..``) with copy ``c``'s reader
    input moved by ``dl[c]``: one head's q/k/v projection sees ``norm(r + Δ)``, or the MLP
    does (through its own norm)."""
    n = dl.shape[0]
    T, d = dl.shape[2], dl.shape[3]
    flat = dl.reshape(n * B, T, d)
    seen: dict[str, Tensor] = {}
    mods = arch.projections(L)
    which = {0: "q", 1: "k", 2: "v"}
    handles = []

    # Our own calls below use .forward (no hooks fire); setdefault keeps the block's own call.
    def pre_norm(mod, args):
        seen.setdefault("attn_in", args[0])

    def pre_mlp_norm(mod, args):
        seen.setdefault("mlp_norm_in", args[0])

    def proj_hook(mi: int):
        def hook(mod, args, out):
            rows = [c for c, (k, _) in enumerate(kind) if k != "mlp" and (arch.p.qkv_fused or which[mi] == k)]
            if not rows:
                return None
            alt = mod.forward(arch.attn_norm(L).forward(seen["attn_in"] + flat))
            out = out.clone()
            for c in rows:
                k, h = kind[c]
                out[c * B : (c + 1) * B, :, cols[k][h]] = alt[c * B : (c + 1) * B, :, cols[k][h]]
            return out

        return hook

    def pre_mlp_in(mod, args):
        x = args[0]
        rows = [c for c, (k, _) in enumerate(kind) if k == "mlp"]
        if not rows:
            return None
        alt = arch.mlp_norm(L).forward(seen["mlp_norm_in"].reshape(n * B, T, d) + flat)
        x2 = x.reshape(n * B, T, -1).clone()
        for c in rows:
            x2[c * B : (c + 1) * B] = alt[c * B : (c + 1) * B]
        return (x2.reshape(x.shape),) + tuple(args[1:])

    handles.append(arch.attn_norm(L).register_forward_pre_hook(pre_norm))
    handles.append(arch.mlp_norm(L).register_forward_pre_hook(pre_mlp_norm))
    for mi, mod in enumerate(mods):
        handles.append(mod.register_forward_hook(proj_hook(mi)))
    handles.append(arch.mlp_in(L).register_forward_pre_hook(pre_mlp_in))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def edge_scores_table(scores: EdgeScores, n: int = 20) -> str:
    """The ``n`` strongest edges as a Markdown table."""
    lines = ["| edge | score |", "|---|---|"]
    lines += [f"| {e} | {v:+.4f} |" for e, v in scores.ranked()[:n]]
    return "\n".join(lines)


__all__: Sequence[str] = ("EdgeScores", "edge_attribution", "edge_scores_table")
