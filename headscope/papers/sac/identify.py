"""SAC §3.2: find each behaviour's heads by path patching on its stimulus pairs.

Per task, path patching from every head to the logits (:func:`headscope.controls.path_patch_groups`,
sender → logits) with clean = experimental prompt, corrupt = reference prompt and the
metric ``logit(desired) − logit(undesired)`` at the last token, on groups of equal token
length pooled by size (:func:`headscope.controls.pooled`). The top-``k`` heads by
|score| are the task's head set (one :class:`~headscope.results.HeadSelection` per
task); the overlap between tasks is the Jaccard index.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.controls import PromptGroup, by_length, path_patch_groups, pooled
from headscope.model import HeadModel
from headscope.results import Head, HeadResult, HeadSelection, select_heads
from headscope.tasks.base import Task
from headscope.tasks.sac import SacData, SacTask

_METRICS = ("metric_clean", "metric_corrupt")


def jaccard(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> float:
    """|A ∩ B| / |A ∪ B| of two head sets (1 for two empty sets)."""
    sa, sb = set(map(tuple, a)), set(map(tuple, b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def overlap(selections: dict[str, HeadSelection]) -> dict[str, float]:
    """Jaccard index of every pair of tasks' head sets, keyed ``"a|b"`` (in task order)."""
    names = list(selections)
    return {
        f"{a}|{b}": jaccard(selections[a].heads, selections[b].heads)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }


def _first(pairs: Task, n: int | None) -> Task:
    if n is None:
        return pairs
    return Task(
        pairs.name,
        pairs.clean[:n],
        pairs.corrupt[:n],
        pairs.answers[:n],
        pairs.wrong[:n],
        pairs.meta[:n],
        pairs.description,
    )


def task_groups(model: HeadModel, pairs: Task) -> tuple[list[PromptGroup], list[int]]:
    """The pairs as equal-length :class:`~headscope.controls.PromptGroup` s and their sizes.

    Metric: logit(desired) − logit(undesired) at the last token, mean over the group.
    """
    answer = torch.tensor([model.token_id(a) for a in pairs.answers])
    wrong_all = torch.tensor([model.token_id(w) for w in pairs.wrong])
    groups, sizes = [], []
    for _, idx in by_length(pairs.clean, model.tokenizer).items():
        ans, wrong = answer[idx], wrong_all[idx]

        def metric(lg: Tensor, ans: Tensor = ans, wrong: Tensor = wrong) -> Tensor:
            last = lg[:, -1]
            a, w = ans.to(lg.device), wrong.to(lg.device)
            return (last.gather(-1, a[:, None]) - last.gather(-1, w[:, None])).mean()

        clean = model.to_tokens([pairs.clean[i] for i in idx])
        corrupt = model.to_tokens([pairs.corrupt[i] for i in idx])
        groups.append(PromptGroup(clean, corrupt, metric))
        sizes.append(len(idx))
    return groups, sizes


def path_scores(model: HeadModel, pairs: Task, show_progress: bool = True) -> HeadResult:
    """Path patching (sender → logits) on one task's pairs, pooled over equal-length groups by size."""
    groups, sizes = task_groups(model, pairs)
    res = path_patch_groups(
        model, groups, normalize=True, show_progress=show_progress, desc=f"path patching {pairs.name}"
    )
    info: dict = {}
    for key in _METRICS:  # size-weighted, in float64
        vals = [torch.tensor(float(r.info.get(key, 0.0)), dtype=torch.float64) for r in res]
        info[key] = float(pooled(vals, sizes))
    for r in res:
        info.update({k: v for k, v in r.info.items() if k not in _METRICS})
    return HeadResult(pooled([r.scores for r in res], sizes), ("layer", "head"), {}, info)


def identify_task(
    model: HeadModel, task: SacTask, k: int = 4, n: int | None = 24, show_progress: bool = True
) -> HeadSelection:
    """One task's path-patching map and its top-``k`` heads by |score| (the first ``n`` pairs)."""
    if k < 1:
        raise HeadscopeError(f"k must be >= 1 heads per task; got {k}")
    r = path_scores(model, _first(task.pairs, n), show_progress)
    r.info.update({"task": task.name, "title": f"{task.name}: path patching to logits"})
    heads = select_heads(r.by_head(), by="abs", k=k)
    return HeadSelection(r, heads, f"top {k} by |path-patching score|", {"task": task.name})


def identify(
    model: HeadModel, data: SacData, k: int = 4, n: int | None = 24, show_progress: bool = True
) -> dict[str, HeadSelection]:
    """Every task's head selection (:func:`identify_task`), keyed by task name; :func:`overlap` gives the Jaccard."""
    if k < 1:
        raise HeadscopeError(f"k must be >= 1 heads per task; got {k}")
    return {t: identify_task(model, task, k, n, show_progress) for t, task in data.tasks.items()}


def heads_of(selections: dict[str, HeadSelection]) -> dict[str, list[Head]]:
    """``{task: [(layer, head), ...]}``."""
    return {t: list(s.heads) for t, s in selections.items()}


def summary(selections: dict[str, HeadSelection]) -> dict:
    """The JSON of an identification: heads and rule per task, Jaccard, clean/corrupt metrics."""
    return {
        "heads": {t: [list(h) for h in s.heads] for t, s in selections.items()},
        "rule": {t: s.rule for t, s in selections.items()},
        "jaccard": overlap(selections),
        "metrics": {t: {k: s.scores.info.get(k) for k in _METRICS} for t, s in selections.items()},
    }


def save(selections: dict[str, HeadSelection], out: str | Path) -> Path:
    """``out/identify.json`` (:func:`summary`), ``out/path_<task>.{json,safetensors}`` and side-by-side heatmaps."""
    from headscope.common.plotting import save_figure
    from headscope.viz import side_by_side

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "identify.json").write_text(json.dumps(summary(selections), indent=1))
    for t, s in selections.items():
        s.scores.save(d / f"path_{t}.json")
    scores = {t: s.scores for t, s in selections.items()}
    save_figure(side_by_side(scores, title="SAC path patching per task"), d / "identify_heads.html")
    return d


def load_heads(path: str | Path, task: str) -> list[Head]:
    """``task``'s heads from an ``identify.json`` written by :func:`save`."""
    p = Path(path)
    if not p.exists():
        raise HeadscopeError(f"{p} not found; run `headscope sac identify` first or pass --heads L.H,...")
    hs = json.loads(p.read_text()).get("heads", {})
    if task not in hs:
        raise HeadscopeError(f"{p} has no heads for task {task!r}; rerun identify with it in --tasks")
    return [(int(L), int(h)) for L, h in hs[task]]
