"""§3.5 transfer: heads identified on one style (or operator) knocked out on every style (operator)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from headscope.common.errors import HeadscopeError
from headscope.model import HeadModel
from headscope.papers.arithmetic.identify import identify
from headscope.papers.arithmetic.knockout import MeanReference
from headscope.papers.arithmetic.prompts import Row, accuracy_table


def transfer(
    model: HeadModel,
    rows: Sequence[Row],
    by: str = "style",
    k: int = 4,
    max_per_group: int | None = 32,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """Heads identified on one subset knocked out on every subset (§3.5).

    For each source subset (rows sharing ``row[by]``): identify its top-k heads
    (:func:`~headscope.papers.arithmetic.identify.identify`, heads only); for each target
    subset: accuracy with those heads mean-ablated (reference: all ``rows``).

    Returns:
        ``{"by", "k", "sources": [...], "heads": {src: [...]}, "accuracy": {src: {tgt: acc}},
        "baseline": {tgt: acc}, "overlap": {src: {tgt: |∩|/k}}}``.
    """
    if by not in ("style", "op"):
        raise HeadscopeError(f"transfer by {by!r}? use style or op")
    rows = list(rows)
    subsets: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        subsets[r[by]].append(r)
    if len(subsets) < 2:
        raise HeadscopeError(f"transfer needs prompts of at least two {by}s, got {sorted(subsets)}")
    ref = MeanReference(model, rows)
    heads = {}
    for s, sub in subsets.items():
        sel = identify(
            model, sub, max_per_group=max_per_group, min_group=1, seed=seed, mlps=False, show_progress=show_progress
        )
        heads[s] = sel.top(k)
    base = {t: accuracy_table(model, sub)["all"] for t, sub in subsets.items()}
    acc = {
        s: {t: accuracy_table(model, sub, patches_for=ref.patches(heads[s]))["all"] for t, sub in subsets.items()}
        for s in subsets
    }
    overlap = {s: {t: len(set(heads[s]) & set(heads[t])) / max(1, k) for t in subsets} for s in subsets}
    return {
        "by": by,
        "k": k,
        "sources": list(subsets),
        "heads": {s: [list(h) for h in v] for s, v in heads.items()},
        "accuracy": acc,
        "baseline": base,
        "overlap": overlap,
    }
