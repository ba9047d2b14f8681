"""Induction task: a repeated random segment, corrupted where the query's earlier match is.

Clean ``[BOS] r_1..r_n r_1..r_k``: the last token ``r_k`` occurred before, followed by
``r_{k+1}`` — the answer. Corrupt: the same sequence with the *first* occurrence of
``r_k`` replaced by a fresh token ``u``, so nothing earlier predicts the next token. The
pair differs at one position only, which isolates the induction mechanism: the
previous-token head's output at position k+1 ("the previous token was r_k") and the
induction head's output at the last position. The contrasting answer is a token that
occurs nowhere in the prompt. Token words are ``t{id}`` (the organism's tokenizer).
"""

from __future__ import annotations

import torch

from headscope.common.errors import HeadscopeError
from headscope.tasks.base import Task


def induction_task(n: int = 32, seg: int = 10, k: int = 5, vocab: int = 64, seed: int = 0) -> Task:
    if not 0 < k < seg - 1:
        raise HeadscopeError(f"the query index k must lie in 1..{seg - 2}, got {k}")
    if seg + 2 > vocab - 4:
        raise HeadscopeError(f"a segment of {seg} distinct tokens needs a larger vocabulary than {vocab}")
    gen = torch.Generator().manual_seed(seed)
    clean, corrupt, ans, wrong = [], [], [], []
    for _ in range(n):
        perm = torch.randperm(vocab - 4, generator=gen)[: seg + 2] + 4
        r, u, w = perm[:seg], int(perm[seg]), int(perm[seg + 1])
        r_cor = r.clone()
        r_cor[k] = u
        words = lambda xs: " ".join(f"t{int(x)}" for x in xs)  # noqa: E731
        clean.append(f"{words(r)} {words(r[: k + 1])}")
        corrupt.append(f"{words(r_cor)} {words(r[: k + 1])}")
        ans.append(f"t{int(r[k + 1])}")
        wrong.append(f"t{w}")
    return Task(
        "induction",
        clean,
        corrupt,
        ans,
        wrong,
        description=f"repeat of a {seg}-token segment; first match of the query replaced",
    )
