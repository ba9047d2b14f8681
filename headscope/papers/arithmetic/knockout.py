"""§3.3 knockout: mean-ablate the top-k key heads against k random heads and measure accuracy.

Mean ablation replaces a head's ``z`` by its mean over reference prompts of the same token
length, per position (:class:`MeanReference`). The random-head control is the one shared
by every paper, :func:`headscope.controls.random_heads`, drawn from the heads outside the
top-k that the compared condition knocks out (the rule ``attribution.knockout_curve`` and
SPT use too), so a random draw never contains a knocked-out head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress
from headscope.controls import random_heads
from headscope.model import HeadModel, Patch
from headscope.papers.arithmetic.prompts import PatchesFor, Row, accuracy_table, answer_ids, length_groups, predictions
from headscope.results import Head, format_head
from headscope.stats import mcnemar_p, paired_diff, placebo, rate


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


@torch.no_grad()
def correct_mask(model: HeadModel, rows: Sequence[Row], patches_for: PatchesFor | None = None) -> list[bool]:
    """Per prompt: is the greedy next token the answer (optionally under ``patches_for``)?"""
    pred = predictions(model, rows, patches_for)
    return [p == a for p, a in zip(pred, answer_ids(model, rows).tolist())]


def _by_key(rows: Sequence[Row], ok: Sequence[bool], key: str) -> dict[str, dict]:
    out: dict[str, list[bool]] = {}
    for r, o in zip(rows, ok):
        if key in r:
            out.setdefault(str(r[key]), []).append(bool(o))
    return {k: rate(sum(v), len(v)).to_dict() for k, v in out.items()}


@torch.no_grad()
def knockout_placebo(
    model: HeadModel,
    rows: Sequence[Row],
    conditions: Mapping[str, Sequence[Head]],
    reference: Sequence[Row],
    n_draws: int = 50,
    single: bool = True,
    show_progress: bool = True,
) -> dict:
    """Knockout with a placebo distribution and per-prompt outcomes (issue 16, items 3–4).

    Mean ablation as in :func:`knockout`, with the means taken over ``reference`` (prompts
    of the same token lengths, other items: no evaluation prompt informs its own ablation).

    - ``single``: every head alone → accuracy (Wilson 95 % CI, n) and McNemar's exact
      p-value against the unablated model on the same prompts;
    - per named condition (a set of k heads, e.g. the selected heads): accuracy with its
      Wilson CI; ``n_draws`` placebo draws ``controls.random_heads(n_layers, n_heads, k,
      seed=d, exclude=heads)`` for d = 0..n_draws−1; the placebo p-value
      ``stats.placebo_p(selected, draws, "less")``; and the gap (mean placebo accuracy
      − selected accuracy) as a paired difference over prompts (per prompt: the share of
      draws that answer it, minus the selected knockout's 0/1) with a bootstrap CI.

    Returns a JSON-ready dict; ``per_prompt`` holds every 0/1 outcome (base, each single
    head, each condition, each draw) in the order of ``rows``.
    """
    rows = list(rows)
    if not rows:
        raise HeadscopeError("no prompts for the knockout")
    if n_draws < 1:
        raise HeadscopeError(f"n_draws must be at least 1 (the issue asks for >= 20), got {n_draws}")
    ref = MeanReference(model, reference)
    missing = sorted(set(length_groups(model, rows)) - set(ref.means))
    if missing:
        raise HeadscopeError(
            f"the mean-ablation reference has no prompts of token length {missing}; "
            "use reference prompts in the same templates as the evaluated ones"
        )
    n = len(rows)
    base = correct_mask(model, rows)
    res: dict = {
        "n": n,
        "n_draws": n_draws,
        "base": rate(sum(base), n).to_dict(),
        "single": {},
        "conditions": {},
        "per_prompt": {"items": [[r.get("op"), r.get("a"), r.get("b")] for r in rows], "base": base},
    }
    if single:
        heads = [(L, h) for L in range(model.n_layers) for h in range(model.n_heads)]
        per: dict[str, list[bool]] = {}
        for hd in progress(heads, desc="knockout (single heads)") if show_progress else heads:
            ok = correct_mask(model, rows, ref.patches([hd]))
            per[format_head(hd)] = ok
            res["single"][format_head(hd)] = {
                "accuracy": rate(sum(ok), n).to_dict(),
                "mcnemar_p_vs_base": mcnemar_p(base, ok),
            }
        res["per_prompt"]["single"] = per
    res["per_prompt"]["conditions"] = {}
    for name, hs in conditions.items():
        hs = [(int(L), int(h)) for L, h in hs]
        if not hs:
            raise HeadscopeError(f"knockout condition {name!r} has no heads")
        ok = correct_mask(model, rows, ref.patches(hs))
        draws, draw_heads, draw_ok = [], [], []
        it = range(n_draws)
        for d in progress(it, desc=f"knockout placebo ({name})") if show_progress else it:
            pick = random_heads(model.n_layers, model.n_heads, len(hs), d, exclude=hs)
            dok = correct_mask(model, rows, ref.patches(pick))
            draws.append(sum(dok) / n)
            draw_heads.append([format_head(x) for x in pick])
            draw_ok.append(dok)
        share = np.mean(np.asarray(draw_ok, dtype=float), axis=0)
        gap = paired_diff(share, np.asarray(ok, dtype=float))
        acc = rate(sum(ok), n)
        res["conditions"][name] = {
            "heads": [format_head(x) for x in hs],
            "k": len(hs),
            "accuracy": acc.to_dict(),
            "by_op": _by_key(rows, ok, "op"),
            "by_style": _by_key(rows, ok, "style"),
            "placebo": placebo(acc.value, draws, "less"),
            "placebo_accuracy": draws,
            "placebo_heads": draw_heads,
            "gap": gap.to_dict(),
            "mcnemar_p_vs_base": mcnemar_p(base, ok),
        }
        res["per_prompt"]["conditions"][name] = {"selected": ok, "draws": draw_ok}
    return res
