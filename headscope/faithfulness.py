"""Circuits from edge scores, faithfulness by ablating everything outside them, and the
MIB scores over circuit sizes (docs/circuits.md, "Circuit discovery").

Faithfulness of a circuit ``C`` (a set of edges; Mueller et al. 2025, MIB):
``f(C) = (m(C) − m(∅)) / (m(full) − m(∅))``, where ``m(C)`` is the metric on the clean
prompts when every edge *outside* ``C`` is ablated: each reader ``v`` reads
``Σ_{u→v ∈ C} a_u + Σ_{u→v ∉ C} ã_u``, with ``a_u`` the writer's output in this same
(intervened) run and ``ã_u`` its output on the corrupt prompts (``ablation="corrupt"``)
or its mean over the corrupt prompts' batch and positions (``"mean"``). ``m(full)`` is
the clean run and ``m(∅)`` the run with every edge ablated (the corrupt run, for corrupt
ablation). Heads' queries, keys and values, MLPs and the unembedding each read their own
copy of the residual, so one edge can be cut without touching the others.

Curves and areas (MIB): ``f`` at circuit sizes given as fractions of all edges;
**CPR** = the area under the curve, **CMD** = the area between the curve and 1
(``∫ |1 − f|``), both by the trapezoid rule over the fraction axis. Edge recovery against a
known circuit: ROC / AUROC of ``|score|`` (scikit-learn).

Written by hand: no library ablates edges of a Hugging Face model (TransformerLens 4.3's
``faithfulness`` runs on its bridge for multi-head attention only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.eap import EdgeScores, _Arch, _check_model, _proj_columns, _record, _runner, _writers
from headscope.graph import HeadGraph

Metric = Callable[[Tensor], Tensor]
#: The circuit sizes of MIB's faithfulness curves, as fractions of all edges.
MIB_FRACTIONS = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def top_edges(scores: EdgeScores, n: int) -> list[str]:
    """The ``n`` edges with the largest ``|score|``."""
    return scores.top(n)


def greedy_edges(scores: EdgeScores, n: int) -> list[str]:
    """``n`` edges grown from the logits: repeatedly the strongest (``|score|``) edge whose
    reader's node is already in the circuit (the logits, or a writer with an edge in it),
    so every chosen edge has a path to the logits (EAP-IG's greedy construction)."""
    g = scores.graph
    W, R = g.writers, g.readers
    s = scores.scores.abs().nan_to_num(-1.0)
    chosen: list[tuple[int, int]] = []
    live = {"logits"}  # nodes reachable to the logits
    taken = torch.zeros_like(g.mask)
    while len(chosen) < n:
        ok = torch.tensor([_node(r) in live for r in R])
        cand = g.mask & ~taken & ok[None, :]
        if not bool(cand.any()):
            break
        flat = torch.where(cand, s, torch.full_like(s, -2.0)).flatten().argmax()
        i, j = divmod(int(flat), len(R))
        taken[i, j] = True
        chosen.append((i, j))
        live.add(W[i])
    return [f"{W[i]}->{R[j]}" for i, j in chosen]


def _node(reader: str) -> str:
    return reader.split("<")[0] if "<" in reader else reader


class Ablator:
    """Clean runs with chosen edges ablated (see the module docstring).

    ``Ablator(model, clean, corrupt, metric)`` caches the corrupt writers once;
    :meth:`metric` evaluates a circuit, :meth:`faithfulness` normalises it.
    """

    def __init__(
        self,
        model,
        clean: Tensor,
        corrupt: Tensor,
        metric: Metric,
        ablation: Literal["corrupt", "mean"] = "corrupt",
    ) -> None:
        if ablation not in ("corrupt", "mean"):
            raise HeadscopeError(f"unknown ablation {ablation!r}; use corrupt or mean")
        _check_model(model)
        self.model = model
        clean, corrupt = model.check_tokens(clean), model.check_tokens(corrupt)
        self.metric_fn = metric
        self.graph = HeadGraph.from_model(model)
        self.runner = _runner(model, clean)
        other = _runner(model, corrupt)
        with self.runner.session(), torch.no_grad():
            self.arch = _Arch(self.runner)
            with _record(self.arch, self.graph.n_layers, detach=True) as rec:
                self.m_corrupt_run = float(metric(self.runner.unembed(self.runner.forward(other.resid0))))
            ref = _writers(self.arch, self.graph, rec, other.resid0)
            self.m_clean = float(metric(self.runner.unembed(self.runner.forward(self.runner.resid0))))
        if ablation == "mean":
            ref = ref.mean(dim=(1, 2), keepdim=True).expand_as(ref).clone()
        self.ref = ref  # [n_writers, B, T, d]
        self.ablation = ablation
        self.m_empty = self.metric(frozenset())

    def metric(self, edges: Sequence[str] | frozenset[str]) -> float:
        """The metric with every edge outside ``edges`` ablated."""
        g = self.graph
        keep = torch.zeros_like(g.mask)
        for e in edges:
            keep[g.edge_index(e)] = True
        cut = (g.mask & ~keep).to(self.ref.dtype)  # [n_writers, n_readers]: 1 = ablated
        with self.runner.session(), torch.no_grad(), _ablation_hooks(self, cut) as final_shift:
            final = self.runner.forward(self.runner.resid0)
            return float(self.metric_fn(self.runner.unembed(final - final_shift())))

    def faithfulness(self, edges: Sequence[str]) -> float:
        """``(m(C) − m(∅)) / (m(full) − m(∅))``."""
        gap = self.m_clean - self.m_empty
        if abs(gap) < 1e-9:
            raise HeadscopeError(
                "the metric does not change when every edge is ablated; faithfulness is undefined (use prompts "
                "whose corruption changes the answer)"
            )
        return (self.metric(edges) - self.m_empty) / gap

    def curve(self, scores: EdgeScores, fractions: Sequence[float] = MIB_FRACTIONS, how: str = "top") -> dict:
        """Faithfulness of the top (or greedy) circuits at each fraction of all edges."""
        n_all = int(self.graph.mask.sum())
        pick = top_edges if how == "top" else greedy_edges
        pts = []
        for f in fractions:
            n = int(round(f * n_all))
            edges = pick(scores, n)
            pts.append({"fraction": f, "n_edges": len(edges), "faithfulness": self.faithfulness(edges)})
        fr = [p["fraction"] for p in pts]
        fa = [p["faithfulness"] for p in pts]
        return {"points": pts, "cpr": cpr(fr, fa), "cmd": cmd(fr, fa), "how": how, "ablation": self.ablation}


@contextmanager
def _ablation_hooks(ab: Ablator, cut: Tensor) -> Iterator[Callable[[], Tensor]]:
    """Hooks that give every reader its own input ``r − Σ_{u cut} (a_u − ã_u)``, with
    ``a_u`` recorded as this run goes; yields a function for the logits' shift."""
    arch, g = ab.arch, ab.graph
    B, T, d = ab.runner.resid0.shape
    diff: list[Tensor] = [torch.zeros(B, T, d)]  # per writer, in writer order: a_u − ã_u (input: 0)
    cols = _proj_columns(arch)
    seen: dict[int, Tensor] = {}
    handles = []

    def shift(readers: slice | int) -> Tensor:
        n = len(diff)
        D = torch.stack(diff)  # [n_written, B, T, d]
        c = cut[:n, readers]
        if c.ndim == 1:
            return torch.einsum("u,ubtd->btd", c, D)
        return torch.einsum("ur,ubtd->rbtd", c, D)

    for L in range(g.n_layers):
        sl = g.reader_slices(L)

        def pre_attn_norm(mod, args, L=L):
            seen.setdefault(2 * L, args[0])

        def pre_mlp_norm(mod, args, L=L):
            seen.setdefault(2 * L + 1, args[0])

        def proj_hook(mi: int, L=L, sl=sl):
            names = ["q", "k", "v"] if arch.p.qkv_fused else [["q", "k", "v"][mi]]

            def hook(mod, args, out):
                out = out.clone()
                r = seen[2 * L]
                for k in names:
                    part = sl[k]
                    D = shift(part)  # [n, B, T, d]
                    if not bool(D.abs().any()):
                        continue
                    x = arch.attn_norm(L).forward(r[None] - D).reshape(-1, T, d)
                    alt = mod.forward(x).reshape(D.shape[0], B, T, -1)
                    for i in range(D.shape[0]):
                        out[:, :, cols[k][i]] = alt[i][:, :, cols[k][i]]
                return out

            return hook

        def pre_z(mod, args, L=L):
            z = args[0].reshape(B, T, arch.H, arch.dh)
            W_O = arch.model.o_proj_weight(L).to(z.dtype)
            heads = torch.einsum("bthk,hkd->hbtd", z, W_O)
            base = 1 + L * (arch.H + 1)
            for h in range(arch.H):
                diff.append(heads[h] - ab.ref[base + h])

        def pre_mlp_in(mod, args, L=L, sl=sl):
            D = shift(sl["mlp"].start)
            if not bool(D.abs().any()):
                return None
            x = args[0]
            alt = arch.mlp_norm(L).forward(seen[2 * L + 1].reshape(B, T, d) - D)
            return (alt.reshape(x.shape),) + tuple(args[1:])

        def mlp_out(mod, args, out, L=L):
            o = out[0] if isinstance(out, tuple) else out
            diff.append(o.reshape(B, T, d) - ab.ref[1 + L * (arch.H + 1) + arch.H])

        handles.append(arch.attn_norm(L).register_forward_pre_hook(pre_attn_norm))
        handles.append(arch.mlp_norm(L).register_forward_pre_hook(pre_mlp_norm))
        for mi, mod in enumerate(arch.projections(L)):
            handles.append(mod.register_forward_hook(proj_hook(mi)))
        handles.append(arch.o_proj(L).register_forward_pre_hook(pre_z))
        handles.append(arch.mlp_in(L).register_forward_pre_hook(pre_mlp_in))
        handles.append(arch.mlp(L).register_forward_hook(mlp_out))
    # the embedding writer: a_input − ã_input
    diff[0] = ab.runner.resid0 - ab.ref[0]
    try:
        yield lambda: shift(len(g.readers) - 1)
    finally:
        for h in handles:
            h.remove()


def cpr(fractions: Sequence[float], faith: Sequence[float]) -> float:
    """Area under the faithfulness curve over the fraction-of-edges axis (trapezoids)."""
    x, y = _sorted(fractions, faith)
    return float(torch.trapezoid(torch.tensor(y, dtype=torch.float64), torch.tensor(x, dtype=torch.float64)))


def cmd(fractions: Sequence[float], faith: Sequence[float]) -> float:
    """Area between the faithfulness curve and 1, ``∫ |1 − f|`` (trapezoids)."""
    x, y = _sorted(fractions, faith)
    gap = torch.tensor([abs(1 - v) for v in y], dtype=torch.float64)
    return float(torch.trapezoid(gap, torch.tensor(x, dtype=torch.float64)))


def _sorted(x: Sequence[float], y: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(x) != len(y) or len(x) < 2:
        raise HeadscopeError("a faithfulness curve needs at least two (fraction, faithfulness) points")
    pairs = sorted(zip(x, y))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def edge_auroc(scores: EdgeScores, truth: Sequence[str], rtol: float = 1e-6) -> dict:
    """ROC and AUROC of ``|score|`` for recovering the edges of a known circuit ``truth``.

    Scores within ``rtol × max|score|`` of zero count as exactly zero (tied): edges a
    corruption does not move score zero up to float rounding, and rounding noise would
    otherwise rank them arbitrarily (a batch and the mean of its pairs round differently).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    g = scores.graph
    idx = g.mask.nonzero().tolist()
    names = [f"{g.writers[i]}->{g.readers[j]}" for i, j in idx]
    true = set(truth)
    for e in true:
        g.edge_index(e)
    y = [1 if e in true else 0 for e in names]
    s = [abs(float(scores.scores[i, j])) for i, j in idx]
    floor = rtol * max(s, default=0.0)
    s = [v if v > floor else 0.0 for v in s]
    if not 0 < sum(y) < len(y):
        raise HeadscopeError("edge recovery needs a known circuit with some, but not all, of the graph's edges")
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": float(roc_auc_score(y, s)), "fpr": fpr.tolist(), "tpr": tpr.tolist(), "n_true": sum(y)}
