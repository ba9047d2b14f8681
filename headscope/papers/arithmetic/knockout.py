"""§3.3 knockout: mean-ablate the top-k key heads against k random heads and measure accuracy.

Mean ablation replaces a head's ``z`` by its mean over reference prompts of the same token
length, per position (:class:`MeanReference`). The random-head control is the one shared
by every paper, :func:`headscope.controls.random_heads`, drawn from the heads outside the
top-k that the compared condition knocks out (the rule ``attribution.knockout_curve`` and
SPT use too), so a random draw never contains a knocked-out head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress
from headscope.controls import random_heads
from headscope.model import HeadModel, Patch
from headscope.papers.arithmetic.prompts import PatchesFor, Row, accuracy_table, length_groups
from headscope.results import Head


class MeanReference:
    """Per-length-group mean of every head's z over the reference prompts (per position)."""

    def __init__(self, model: HeadModel, rows: Sequence[Row]) -> None:
        self.means: dict[int, dict[int, Tensor]] = {}
        for n, grp in length_groups(model, rows).items():
            _, cache = model.run_with_heads(model.to_tokens([r["prompt"] for r in grp]), sites=("z",))
            self.means[n] = {L: cache.z[L].mean(0) for L in cache.z}  # [pos, heads, d_head]

    def patches(self, heads: Sequence[Head]) -> PatchesFor:
        """``(n_tokens, tokens) -> patches`` that mean-ablate ``heads`` on ``n_tokens``-long prompts."""

        def fn(n: int, toks: Tensor) -> list[Patch]:
            if n not in self.means:
                raise HeadscopeError(f"no mean-ablation reference for {n}-token prompts")
            return [Patch(layer=L, head=h, value=self.means[n][L][:, h]) for L, h in heads]

        return fn


@torch.no_grad()
def knockout(
    model: HeadModel,
    rows: Sequence[Row],
    ranking: Sequence[Head],
    ks: Sequence[int] = (0, 1, 2, 4, 6, 8),
    seeds: Sequence[int] = (0, 1, 2),
    reference: Sequence[Row] | None = None,
    show_progress: bool = True,
) -> dict:
    """Accuracy after mean-ablating the top-k heads of ``ranking`` vs k random heads (§3.3).

    Mean ablation: a head's z is replaced by its mean over ``reference`` (default: ``rows``)
    prompts of the same token length, per position. Random heads: for each seed,
    ``controls.random_heads(n_layers, n_heads, k, seed, exclude=ranking[:k])`` — the same
    draw every paper makes from that seed and those excluded heads, never a top-k head.

    Returns:
        a dict for :func:`headscope.viz.knockout_plot` (``k``, ``top``, ``random``,
        ``random_mean``, ``random_std``) plus ``top_by`` / ``random_by`` (per-operator
        and per-style accuracy), ``heads`` (the ranked heads), ``random_heads`` (per k,
        per seed, the heads drawn) and ``seeds``.
    """
    rows = list(rows)
    if not rows:
        raise HeadscopeError("no prompts for the knockout")
    if not ks:
        raise HeadscopeError("knockout needs at least one k")
    if max(ks) > len(ranking):
        raise HeadscopeError(
            f"k={max(ks)} exceeds the {len(ranking)} ranked heads; pass a longer ranking or smaller ks"
        )
    if not seeds:
        raise HeadscopeError("knockout needs at least one random seed")
    ranked = [(int(L), int(h)) for L, h in ranking[: max(ks)]]
    ref = MeanReference(model, reference if reference is not None else rows)
    top, top_by, rnd, rnd_by, drawn = [], [], [], [], []
    for k in progress(list(ks), desc="knockout") if show_progress else ks:
        t = accuracy_table(model, rows, patches_for=ref.patches(ranked[:k]))
        top.append(t["all"])
        top_by.append(t)
        row, row_by, row_heads = [], [], []
        for s in seeds:
            pick = random_heads(model.n_layers, model.n_heads, k, s, exclude=ranked[:k])
            r = accuracy_table(model, rows, patches_for=ref.patches(pick))
            row.append(r["all"])
            row_by.append(r)
            row_heads.append([list(h) for h in pick])
        rnd.append(row)
        rnd_by.append({key: sum(d[key] for d in row_by) / len(row_by) for key in row_by[0]})
        drawn.append(row_heads)
    tt = torch.tensor(rnd)
    return {
        "k": list(ks),
        "top": top,
        "random": rnd,
        "random_mean": tt.mean(1).tolist(),
        "random_std": (tt.std(1) if tt.shape[1] > 1 else torch.zeros(len(ks))).tolist(),
        "top_by": top_by,
        "random_by": rnd_by,
        "heads": [list(h) for h in ranked],
        "random_heads": drawn,
        "seeds": list(seeds),
    }
