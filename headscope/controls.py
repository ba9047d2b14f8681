"""Controls and plumbing shared by the paper packages (docs/design.md §2).

One implementation each, so that the three papers (arithmetic heads, SPT, SAC) draw the
same random heads from the same seed, group prompts the same way and mean the same
thing by "KL":

- :func:`random_heads`: the random-head baseline (seeded, never a selected head);
- :func:`by_length`: prompts grouped by token length (batched analyses need equal lengths);
- :func:`path_patch_groups` / :func:`pooled`: path patching on several equal-length
  groups and their size-weighted mean;
- :func:`next_token_kl`: KL(p ‖ q) of next-token distributions, at every position of a
  text or only after its last token (two named variants of one quantity).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.common.progress import progress
from headscope.model import HeadModel, Metric
from headscope.patching import path_patch_heads
from headscope.results import Head, HeadResult

# ---------------------------------------------------------------------------------------
# Random heads


def random_heads(n_layers: int, n_heads: int, k: int, seed: int, exclude: Iterable[Head] = ()) -> list[Head]:
    """``k`` heads drawn uniformly without replacement from every head not in ``exclude``.

    The pool is every ``(layer, head)`` in order minus ``exclude``; the draw is
    ``torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:k]``, so
    the same seed and the same exclusions give the same heads in every paper. Returned
    sorted by (layer, head).
    """
    if k < 0:
        raise HeadscopeError(f"cannot draw a negative number of random heads ({k})")
    ex = {(int(L), int(h)) for L, h in exclude}
    pool = [(L, h) for L in range(n_layers) for h in range(n_heads) if (L, h) not in ex]
    if k > len(pool):
        raise HeadscopeError(f"cannot draw {k} random heads from the {len(pool)} heads left after excluding {len(ex)}")
    g = torch.Generator().manual_seed(int(seed))
    return sorted(pool[i] for i in torch.randperm(len(pool), generator=g)[:k].tolist())


# ---------------------------------------------------------------------------------------
# Grouping by token length


def by_length(texts: Sequence[str], tokenizer, sort: bool = False) -> dict[int, list[int]]:
    """Indices of ``texts`` grouped by token length (with BOS, as ``tokenizer(text)`` counts).

    Keys appear in order of first occurrence, or ascending with ``sort``; indices keep
    the order of ``texts``.
    """
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(len(tokenizer(t)["input_ids"]), []).append(i)
    return dict(sorted(groups.items())) if sort else groups


# ---------------------------------------------------------------------------------------
# Path patching pooled over equal-length groups


@dataclass
class PromptGroup:
    """Equal-length clean/corrupt token pairs and the metric that scores them."""

    clean: Int[Tensor, " batch pos"]
    corrupt: Int[Tensor, " batch pos"]
    metric: Metric

    def __len__(self) -> int:
        return int(self.clean.shape[0])


def path_patch_groups(
    model: HeadModel,
    groups: Sequence[PromptGroup],
    *,
    normalize: bool,
    show_progress: bool = True,
    desc: str = "path patching (groups)",
) -> list[HeadResult]:
    """:func:`headscope.patching.path_patch_heads` (sender → logits) on each group."""
    if not groups:
        raise HeadscopeError("no prompt groups to path-patch; give at least one group of equal-length pairs")
    it = progress(list(groups), desc=desc) if show_progress else groups
    return [
        path_patch_heads(model, g.clean, g.corrupt, g.metric, normalize=normalize, show_progress=False) for g in it
    ]


def pooled(values: Sequence[Tensor | float], weights: Sequence[int]) -> Tensor:
    """Size-weighted mean ``Σ w_i v_i / Σ w_i`` (accumulated in the order given)."""
    if not values or len(values) != len(weights):
        raise HeadscopeError("pooled() needs one weight per value and at least one value")
    total = sum(weights)
    acc: Tensor | None = None
    for v, w in zip(values, weights):
        term = torch.as_tensor(v) * w
        acc = term if acc is None else acc + term
    assert acc is not None
    return acc / total


# ---------------------------------------------------------------------------------------
# KL of next-token distributions

Positions = Literal["all", "last"]
LogitsFn = Callable[[Tensor], Float[Tensor, " batch pos vocab"]]


@torch.no_grad()
def next_token_kl(
    p_logits: LogitsFn,
    q_logits: LogitsFn,
    token_groups: Iterable[Int[Tensor, " batch pos"]],
    positions: Positions = "all",
) -> float:
    """Mean ``KL(p ‖ q) = Σ_v p(v) (log p(v) − log q(v))`` of next-token distributions.

    ``p_logits`` / ``q_logits`` map a token batch to logits (e.g. the base and the tuned
    model, or the unsteered and the steered run). ``positions="all"``: every position of
    every sequence counts once ("how much did the model change on this text");
    ``"last"``: only the distribution after the final token ("how much did the next
    token change after this prompt"). Groups hold equal-length rows, so there is no
    padding. Computed in float32.
    """
    if positions not in ("all", "last"):
        raise HeadscopeError(f"unknown KL positions {positions!r}; use all or last")
    tot, n = 0.0, 0
    for toks in token_groups:
        lp = torch.log_softmax(p_logits(toks).float(), -1)
        lq = torch.log_softmax(q_logits(toks).float().to(lp.device), -1)
        if positions == "last":
            lp, lq = lp[:, -1:], lq[:, -1:]
        kl = (lp.exp() * (lp - lq)).sum(-1)  # [batch, pos]
        tot += float(kl.double().sum())
        n += kl.numel()
    if n == 0:
        raise HeadscopeError("no texts to measure the KL on")
    return tot / n


def token_groups(texts: Sequence[str], tokenizer, batch_size: int = 64, device=None) -> list[Tensor]:
    """``texts`` tokenized and grouped by length into batches of at most ``batch_size`` rows."""
    out = []
    for _, idx in by_length(texts, tokenizer).items():
        ids = [tokenizer(texts[i])["input_ids"] for i in idx]
        for s in range(0, len(ids), batch_size):
            out.append(torch.tensor(ids[s : s + batch_size], device=device))
    return out
