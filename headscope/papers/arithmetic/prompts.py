"""§3.1 on a model: keep the prompts it answers correctly, accuracy tables, equal-length groups.

The prompt rows themselves are data (:mod:`headscope.tasks.arithmetic`: ``arith_prompts``
for the organism, or any list of dicts with ``prompt``, ``corrupt`` and ``answer`` —
plus ``op`` / ``style`` for the per-operator and per-style breakdowns). Everything here
works per group of equal token length, so that batches need no padding.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.controls import by_length
from headscope.model import HeadModel, Patch

Row = Mapping[str, Any]
PatchesFor = Callable[[int, Tensor], list[Patch]]


def length_groups(model: HeadModel, rows: Sequence[Row]) -> dict[int, list[Row]]:
    """Rows grouped by token length, shortest first (a row's prompt and counterfactual must have one length).

    Batched methods need equal-length prompts; the paper's per-template averages become
    averages over these groups (:func:`headscope.controls.by_length`).
    """
    groups = by_length([r["prompt"] for r in rows], model.tokenizer, sort=True)
    corrupt = by_length([r["corrupt"] for r in rows], model.tokenizer)
    n_of = {i: n for n, idx in corrupt.items() for i in idx}
    out: dict[int, list[Row]] = {}
    for n, idx in groups.items():
        for i in idx:
            if n_of[i] != n:
                r = rows[i]
                raise HeadscopeError(
                    f"counterfactual {r['corrupt']!r} and prompt {r['prompt']!r} differ in token length"
                )
        out[n] = [rows[i] for i in idx]
    return out


def answer_ids(model: HeadModel, rows: Sequence[Row]) -> Int[Tensor, " batch"]:
    """The token id of each row's ``answer`` (a HeadscopeError when one is not a single token)."""
    try:
        return torch.tensor([model.token_id(r["answer"]) for r in rows])
    except Exception as e:  # noqa: BLE001
        raise HeadscopeError(
            f"an answer is not a single token of this model's vocabulary ({e}); "
            "use a model whose tokenizer has the answers as single tokens"
        ) from e


@torch.no_grad()
def predictions(
    model: HeadModel, rows: Sequence[Row], patches_for: PatchesFor | None = None, batch_size: int = 512
) -> list[int]:
    """Greedy next-token id after each prompt (optionally with patches per length group:
    ``patches_for(n_tokens, tokens) -> patches``)."""
    out: dict[int, int] = {}
    index = {id(r): i for i, r in enumerate(rows)}
    for n, grp in length_groups(model, rows).items():
        for s in range(0, len(grp), batch_size):
            chunk = grp[s : s + batch_size]
            toks = model.to_tokens([r["prompt"] for r in chunk])
            patches = patches_for(n, toks) if patches_for else []
            logits = model.run_patched(toks, patches) if patches else model.logits(toks)
            for r, t in zip(chunk, logits[:, -1].argmax(-1).tolist()):
                out[index[id(r)]] = t
    return [out[i] for i in range(len(rows))]


def filter_correct(model: HeadModel, rows: Sequence[Row]) -> list[Row]:
    """Only the prompts the model answers correctly (greedy first token = C), as in §3.1."""
    rows = list(rows)
    if not rows:
        raise HeadscopeError("no prompts to filter")
    pred = predictions(model, rows)
    ans = answer_ids(model, rows).tolist()
    return [r for r, p, a in zip(rows, pred, ans) if p == a]


def accuracy_table(
    model: HeadModel,
    rows: Sequence[Row],
    preds: Sequence[int] | None = None,
    patches_for: PatchesFor | None = None,
) -> dict[str, float]:
    """Exact-match accuracy overall (``all``), per operator (``op:add``) and per style (``style:qa``)
    where the rows carry ``op`` / ``style``."""
    preds = predictions(model, rows, patches_for) if preds is None else preds
    ans = answer_ids(model, rows).tolist()
    hits: dict[str, list[int]] = defaultdict(list)
    for r, p, a in zip(rows, preds, ans):
        ok = int(p == a)
        hits["all"].append(ok)
        if "op" in r:
            hits[f"op:{r['op']}"].append(ok)
        if "style" in r:
            hits[f"style:{r['style']}"].append(ok)
    return {k: sum(v) / len(v) for k, v in hits.items()}
