"""Induction task: a repeated random segment (clean) vs a fresh first copy (corrupt).

Clean ``[BOS] r_1..r_n r_1..r_k`` — the answer is ``r_{k+1}``; corrupt replaces the first
copy by other random tokens ``s_1..s_n``, so nothing earlier predicts the next token; the
contrasting answer is ``s_{k+1}``. Token words are ``t{id}`` (the organism's tokenizer).
"""

from __future__ import annotations

import torch

from headscope.tasks.base import Task


def induction_task(n: int = 32, seg: int = 10, k: int = 7, vocab: int = 64, seed: int = 0) -> Task:
    gen = torch.Generator().manual_seed(seed)
    clean, corrupt, ans, wrong = [], [], [], []
    for _ in range(n):
        while True:
            r = torch.randperm(vocab - 4, generator=gen)[:seg] + 4
            s = torch.randperm(vocab - 4, generator=gen)[:seg] + 4
            if r[k] != s[k] and not set(r[:k + 1].tolist()) & set(s.tolist()):
                break
        w = lambda xs: " ".join(f"t{int(x)}" for x in xs)  # noqa: E731
        clean.append(f"{w(r)} {w(r[:k + 1])}")
        corrupt.append(f"{w(s)} {w(r[:k + 1])}")
        ans.append(f"t{int(r[k + 1])}")
        wrong.append(f"t{int(s[k + 1])}")
    return Task("induction", clean, corrupt, ans, wrong, description=f"repeat of a {seg}-token random segment")
