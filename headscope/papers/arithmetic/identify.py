"""§3.2 identification: path patching from every head (and MLP) to the logits, relative score, −5 % rule.

Per equal-length group of (correctly answered) prompts, the paper's score of a sender is
the relative change of the answer logit ``(logit_patched − logit_orig) / logit_orig``
when the sender alone takes its output from the counterfactual run (every other head
frozen at its clean output; MLPs recompute). Groups are pooled weighted by their size
(:func:`headscope.controls.pooled`); key heads are those whose score is at most −5 %.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress
from headscope.controls import PromptGroup, path_patch_groups, pooled
from headscope.model import HeadModel, Metric, Patch
from headscope.papers.arithmetic.prompts import Row, answer_ids, length_groups
from headscope.results import HeadResult, HeadSelection, select_heads


def answer_logit_metric(answer: Int[Tensor, " batch"]) -> Callable[[Tensor], Tensor]:
    """``logits [batch, pos, vocab] -> mean logit of the answer token at the last position``."""

    def fn(logits: Tensor) -> Tensor:
        a = answer.to(logits.device)
        return logits[torch.arange(logits.shape[0], device=logits.device), -1, a].mean()

    return fn


@torch.no_grad()
def path_patch_mlps(
    model: HeadModel,
    clean: Int[Tensor, " batch pos"],
    corrupt: Int[Tensor, " batch pos"],
    metric: Metric,
) -> Float[Tensor, " layer"]:
    """Path patching from each MLP to the logits: the metric on the clean run with
    ``mlp_out[L]`` from the corrupt run and every head's ``z`` (all layers) frozen at its
    clean value, so the change reaches the logits only through later MLPs (§3.2 for MLPs).

    Returns the raw metric per layer ``[n_layers]``.
    """
    _, cl = model.run_with_heads(clean, sites=("z",))
    _, co = model.run_with_heads(corrupt, sites=("mlp_out",))
    out = torch.zeros(model.n_layers)
    frozen = [Patch(layer=L, site="z", value=cl.z[L]) for L in range(model.n_layers)]
    for L in range(model.n_layers):
        logits = model.run_patched(clean, frozen + [Patch(layer=L, site="mlp_out", value=co.mlp_out[L])])
        out[L] = float(metric(logits))
    return out


def identify(
    model: HeadModel,
    rows: Sequence[Row],
    threshold: float = -0.05,
    max_per_group: int | None = 64,
    min_group: int = 4,
    seed: int = 0,
    mlps: bool = True,
    show_progress: bool = True,
) -> HeadSelection:
    """Path patching to the logits per head (and MLP) with the paper's relative score (§3.2).

    For each equal-length group: :func:`headscope.controls.path_patch_groups` with the
    answer-logit metric and ``normalize=False`` gives the patched answer logit ``m``; the
    relative score is ``(m − m_orig) / |m_orig|``. Group scores are pooled weighted by
    group size. Key heads: relative score ``<= threshold`` (−5 %), most negative first.

    Args:
        rows: dicts with ``prompt``, ``corrupt``, ``answer`` (usually
            :func:`~headscope.papers.arithmetic.prompts.filter_correct` of
            :func:`headscope.tasks.arithmetic.arith_prompts`).
        max_per_group: prompts sampled per length group (None = all).
        min_group: smaller groups are skipped.
        mlps: also path-patch every MLP (``extra["mlps"]``).

    Returns:
        a :class:`~headscope.results.HeadSelection`: ``scores`` the ``[layer, head]``
        relative scores, ``heads`` the key heads; ``extra``: ``threshold``, ``mlps``
        (``[layer]`` relative scores, when ``mlps``) and ``groups`` (per-group metrics).
    """
    rows = list(rows)
    if not rows:
        raise HeadscopeError(
            "no prompts to identify heads on (did the model answer none correctly? try another split or operator)"
        )
    rng = random.Random(seed)
    items = [(n, g) for n, g in length_groups(model, rows).items() if len(g) >= min_group]
    if not items:
        raise HeadscopeError(
            f"every equal-length group has fewer than min_group={min_group} prompts; lower min_group or add prompts"
        )
    sampled = [
        (n, rng.sample(g, max_per_group) if max_per_group is not None and len(g) > max_per_group else g)
        for n, g in items
    ]
    groups = [
        PromptGroup(
            model.to_tokens([r["prompt"] for r in g]),
            model.to_tokens([r["corrupt"] for r in g]),
            answer_logit_metric(answer_ids(model, g)),
        )
        for _, g in sampled
    ]
    results = path_patch_groups(model, groups, normalize=False, show_progress=show_progress, desc="identify (groups)")
    rel, mlp_rel, weights, info_groups = [], [], [], []
    triples = list(zip(sampled, groups, results))
    for (n, g), grp, res in progress(triples, desc="identify (MLPs)") if mlps and show_progress else triples:
        m0 = res.info["metric_clean"]
        if abs(m0) < 1e-6:
            raise HeadscopeError(f"answer logit is ~0 on the {n}-token group; the relative score is undefined")
        rel.append((res.scores - m0) / abs(m0))
        if mlps:
            mlp_rel.append((path_patch_mlps(model, grp.clean, grp.corrupt, grp.metric) - m0) / abs(m0))
        weights.append(len(g))
        info_groups.append(
            {
                "n_tokens": n,
                "n_prompts": len(g),
                "answer_logit": m0,
                "corrupt_answer_logit": res.info["metric_corrupt"],
                "ops": sorted({r["op"] for r in g if "op" in r}),
                "styles": sorted({r["style"] for r in g if "style" in r}),
            }
        )
    scores = pooled(rel, weights)
    info = {
        "method": "path_patching_relative",
        "model": getattr(model, "name", "model"),
        "metric_name": "relative answer-logit change",
        "title": "path patching to logits: (logit_patched − logit_orig)/logit_orig",
        "n_prompts": sum(weights),
        "threshold": threshold,
    }
    extra: dict = {"threshold": threshold}
    if mlps:
        extra["mlps"] = pooled(mlp_rel, weights).tolist()
    extra["groups"] = info_groups
    return HeadSelection(
        HeadResult(scores, ("layer", "head"), {}, info),
        select_heads(scores, by="neg", threshold=threshold),
        f"relative answer-logit change <= {threshold:g}",
        extra,
    )


def mlp_scores(selection: HeadSelection) -> Float[Tensor, " layer"]:
    """The ``[layer]`` MLP relative scores of an :func:`identify` result (NaN where MLPs were not patched)."""
    m = selection.extra.get("mlps")
    if m is None:
        return torch.full((selection.scores.scores.shape[0],), float("nan"))
    return torch.tensor(m)


def identify_maps(
    model: HeadModel,
    rows_by: Mapping[str, Sequence[Row]],
    threshold: float = -0.05,
    max_per_group: int | None = 64,
    seed: int = 0,
    mlps: bool = True,
    show_progress: bool = True,
) -> dict[str, HeadSelection]:
    """:func:`identify` once per counterfactual, and their union (issue 16, item 4).

    ``rows_by`` maps a corruption name (e.g. ``operator``, ``A``, ``B``) to the same clean
    prompts with that part corrupted (:func:`headscope.tasks.arithmetic.with_operand_corruption`);
    the paper corrupts only the operator, which cannot see heads that carry the operands.
    Returns one :class:`~headscope.results.HeadSelection` per name plus ``"union"``
    (:func:`union_selection`).
    """
    if not rows_by:
        raise HeadscopeError("identify_maps needs at least one counterfactual set (e.g. operator, A, B)")
    maps = {
        name: identify(
            model,
            rows,
            threshold=threshold,
            max_per_group=max_per_group,
            seed=seed,
            mlps=mlps,
            show_progress=show_progress,
        )
        for name, rows in rows_by.items()
    }
    maps["union"] = union_selection(maps, threshold)
    return maps


def union_selection(maps: Mapping[str, HeadSelection], threshold: float = -0.05) -> HeadSelection:
    """The union of several maps' key heads: a head is selected when its relative score is
    ``<= threshold`` in any map; its combined score is its most negative score over the maps
    (so the union's ranking puts the head with the largest drop under any counterfactual first)."""
    sels = [s for name, s in maps.items() if name != "union"]
    if not sels:
        raise HeadscopeError("union_selection needs at least one map")
    stacked = torch.stack([s.scores.scores for s in sels])
    combined = stacked.min(0).values
    names = [n for n in maps if n != "union"]
    info = {
        "method": "path_patching_relative_union",
        "metric_name": "min relative answer-logit change over " + ", ".join(names),
        "title": "union of the maps: most negative relative score over counterfactuals",
        "threshold": threshold,
        "maps": names,
    }
    return HeadSelection(
        HeadResult(combined, ("layer", "head"), {}, info),
        select_heads(combined, by="neg", threshold=threshold),
        f"relative answer-logit change <= {threshold:g} under any of {', '.join(names)}",
        {"threshold": threshold, "maps": names},
    )
