"""§4.1 identification: path patching from every head to the logits with the paper's metric.

The counterfactual ("I do think that's right . Are you sure ?") is patched into the
challenge dialogue; metric ``F = p(apology) / (p(apology) + p(affirm))`` at the final
position; score ``(F_patched − F_orig) / F_orig``; the heads with the most negative
scores (at most ``max_share`` of all heads, below ``threshold``) are selected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.controls import PromptGroup, path_patch_groups, pooled
from headscope.model import HeadModel
from headscope.results import HeadResult, HeadSelection, format_head, select_heads
from headscope.tasks.base import Task
from headscope.tasks.sycophancy import SycophancyData, apology_fraction


def sycophancy_metric(model: HeadModel, data: SycophancyData) -> Callable[[Float[Tensor, " batch pos vocab"]], Tensor]:
    """``logits → F`` (batch mean) for ``data``'s apology and affirmation tokens."""
    i, y = model.token_id(data.apology), model.token_id(data.affirm)
    return lambda logits: apology_fraction(logits, i, y)


def family_pairs(
    data: SycophancyData,
    families: Sequence[str] | None,
    n: int,
    split: str,
    seed: int,
    challenge: str | None = None,
) -> list[tuple[str, Task]]:
    """``(family, challenge/counterfactual pairs)`` per family (each family one token length)."""
    fams = data.families if families is None else families
    return [(fam, data.pairs(fam, n, split, seed, challenge or data.challenge)) for fam in fams]


def relative_scores(results: Sequence[HeadResult], weights: Sequence[int]) -> tuple[Tensor, float, float]:
    """SPT's score from per-group path patching (``normalize=False``): F pooled over the
    groups by ``weights``, then ``(F̄_patched − F̄_orig)/F̄_orig`` per head; also F̄_orig
    and F̄ on the counterfactual."""
    f_p = pooled([r.scores.double() for r in results], list(weights))
    f_o = float(pooled([torch.tensor(r.info["metric_clean"], dtype=torch.float64) for r in results], list(weights)))
    f_c = float(pooled([torch.tensor(r.info["metric_corrupt"], dtype=torch.float64) for r in results], list(weights)))
    return ((f_p - f_o) / f_o).float(), f_o, f_c


def choose_heads(rel: Tensor, threshold: float, max_share: float, k: int | None) -> tuple[list, str]:
    """The selected heads (most negative first) and the rule's text: score <= ``threshold``
    and at most ``max_share`` of all heads, or exactly the ``k`` most negative."""
    if k is None:
        rule = f"(F_patched − F_orig)/F_orig <= {threshold:g}, at most {max_share:g} of all heads"
        return select_heads(rel, by="neg", threshold=threshold, max_share=max_share), rule
    return select_heads(rel, by="neg", k=k), f"the {k} most negative (F_patched − F_orig)/F_orig"


def identify(
    model: HeadModel,
    data: SycophancyData,
    families: Sequence[str] | None = None,
    n: int = 32,
    split: str = "all",
    threshold: float = -0.02,
    max_share: float = 0.10,
    k: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> HeadSelection:
    """Path patching per head (counterfactual → challenge dialogue, to the logits) with the paper's score.

    Each family's prompts have one length, so path patching runs per family
    (:func:`headscope.controls.path_patch_groups`, ``normalize=False``: the raw patched
    F); F is then pooled over families weighted by prompt count
    (:func:`headscope.controls.pooled`) and scored as ``(F̄_patched − F̄_orig)/F̄_orig``.

    Returns a :class:`HeadSelection` whose ``extra`` holds ``f_orig`` (F on the challenge
    dialogues), ``f_counter`` (F on the counterfactual) and ``per_family``.
    """
    metric = sycophancy_metric(model, data)
    tasks = family_pairs(data, families, n, split, seed)
    groups = []
    for _, task in tasks:
        b = task.prepare(model)
        groups.append(PromptGroup(b.clean, b.corrupt, metric))
    results = path_patch_groups(
        model, groups, normalize=False, show_progress=show_progress, desc="identify (families)"
    )
    weights = [len(t) for _, t in tasks]
    per: dict[str, dict] = {}
    for (fam, task), res in zip(tasks, results):
        fo, fc = res.info["metric_clean"], res.info["metric_corrupt"]
        per[fam] = {"n": len(task), "f_orig": fo, "f_counter": fc, "score": ((res.scores.double() - fo) / fo).tolist()}
    rel, f_o, f_c = relative_scores(results, weights)
    selected, rule = choose_heads(rel, threshold, max_share, k)
    if not selected and k is None:
        lowest = float(torch.nan_to_num(rel, nan=float("inf")).min())
        raise HeadscopeError(
            f"no head scores at or below {threshold:+.3f} (lowest {lowest:+.4f}); raise the threshold or pass k"
        )
    info = {
        "method": "spt_identify",
        "model": getattr(model, "name", "model"),
        "metric_name": "(F_patched − F_orig) / F_orig",
        "title": "SPT: path patching to logits, relative change of F",
        "metric_clean": f_o,
        "metric_corrupt": f_c,
        "families": [fam for fam, _ in tasks],
        "n_per_family": n,
        "threshold": threshold,
        "max_share": max_share,
        "selected": [format_head(h) for h in selected],
    }
    extra = {"f_orig": f_o, "f_counter": f_c, "per_family": per}
    return HeadSelection(HeadResult(rel, ("layer", "head"), {}, info), selected, rule, extra)


__all__ = ["choose_heads", "family_pairs", "identify", "relative_scores", "sycophancy_metric"]
