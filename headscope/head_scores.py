"""Head scores from attention patterns: one implementation for the CLI, the organisms and the circuit specs.

Two families of measures:

- **Detector scores** (TransformerLens ``head_detector``, :func:`head_scores`): a
  detection pattern marks where an ideal head attends (previous token; earlier copies of
  the current token; the token after an earlier copy); the score is the share of the
  head's attention that falls there, over *all* queries, averaged over the batch.
- **Targeted attention** (:func:`attention_to`, :func:`repeat_scores`): the mean
  attention from each query to one target key (``q − 1``; on ``[BOS] r r`` the token
  after the earlier copy), over the queries that have a target. This is the organisms'
  and the circuit specs' measure; on repeated tokens it is higher than the detector's
  induction score, which also averages over first-copy queries where no induction is
  possible (≈0.97 vs ≈0.55 on the ``induction`` organism).

Plus :func:`attention_to_positions` (share of attention onto marked positions, e.g.
operands) and the probe inputs :func:`repeated_tokens` / :func:`random_input_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.model import HeadModel
from headscope.results import HeadResult

Target = Callable[[int, int], int | None]


def attention_to(pattern: Float[Tensor, " batch head q k"], target: Target, per_input: bool = False) -> Tensor:
    """Mean attention from each query ``q`` to key ``target(q, T)`` (queries whose target
    is None are skipped), averaged over the batch: ``[n_heads]``; with ``per_input`` one
    row per input, ``[batch, n_heads]`` (its mean over the batch is the averaged score)."""
    T = pattern.shape[-1]
    qs, ks = [], []
    for q in range(T):
        k = target(q, T)
        if k is not None and 0 <= k < T:
            qs.append(q)
            ks.append(k)
    if not qs:
        raise HeadscopeError("no query position has a target key for this attention pattern; use longer inputs")
    qi, ki = torch.tensor(qs), torch.tensor(ks)
    per = pattern[:, :, qi, ki].mean(dim=2)
    return per if per_input else per.mean(dim=0)


@torch.no_grad()
def repeat_scores(
    model: HeadModel, tokens: Int[Tensor, " batch pos"], seq: int, bos_target: bool = True, per_input: bool = False
) -> dict[str, Tensor]:
    """Previous-token and induction scores ``[n_layers, n_heads]`` on ``tokens = [BOS] r r``.

    ``seq`` is the length of ``r``. Previous-token: mean attention from each query to the
    position before it (from query 1 when ``bos_target``, else from query 2, so that BOS
    is never a target); induction: mean attention from each query of the second copy to
    the token after its earlier occurrence (``q − seq + 1``). ``per_input``: scores per
    input row, ``[batch, n_layers, n_heads]`` (for confidence intervals over inputs).
    """
    _, cache = model.run_with_heads(tokens, sites=(), pattern=True)
    first = 1 if bos_target else 2

    def prev(q: int, T: int) -> int | None:
        return q - 1 if q >= first else None

    def ind(q: int, T: int) -> int | None:
        return q - seq + 1 if q > seq else None

    L = range(model.n_layers)
    d = 1 if per_input else 0
    return {
        "previous_token": torch.stack([attention_to(cache.pattern[i].cpu(), prev, per_input) for i in L], dim=d),
        "induction": torch.stack([attention_to(cache.pattern[i].cpu(), ind, per_input) for i in L], dim=d),
    }


def random_input_tokens(model: HeadModel, n: int, length: int, seed: int) -> Tensor:
    """Random ``[BOS, x_1..x_{length-1}]`` over a word-level tokenizer's ordinary tokens
    (a tracr program's input vocabulary: every token but BOS and pad)."""
    tok = model.tokenizer
    ids = torch.tensor([i for w, i in tok.vocab.items() if w not in (tok.bos_token, tok.pad_token)])
    gen = torch.Generator().manual_seed(seed)
    body = ids[torch.randint(len(ids), (n, length - 1), generator=gen)]
    return torch.cat([torch.full((n, 1), tok.bos_token_id), body], dim=1)


def _detection_score(pattern: Tensor, detection: Tensor, exclude_bos: bool, exclude_current: bool) -> Tensor:
    """TransformerLens ``compute_head_attention_similarity_score`` with ``error_measure="mul"``:
    ``Σ(pattern ⊙ detection) / Σ pattern`` per head, after optionally zeroing the BOS
    column and the diagonal. ``pattern``: [batch, head, q, k]; ``detection``: [batch, q, k]."""
    p = pattern.clone()
    if exclude_bos:
        p[..., 0] = 0
    if exclude_current:
        idx = torch.arange(p.shape[-1])
        p[..., idx, idx] = 0
    num = (p * detection[:, None]).sum(dim=(-1, -2))
    den = p.sum(dim=(-1, -2)).clamp_min(1e-12)
    return (num / den).mean(0)


def _detection_patterns(tokens: Tensor, kind: str) -> Tensor:
    B, T = tokens.shape
    det = torch.zeros(B, T, T)
    if kind == "previous_token":
        idx = torch.arange(1, T)
        det[:, idx, idx - 1] = 1
    elif kind == "duplicate_token":
        for b in range(B):
            t = tokens[b]
            same = (t[:, None] == t[None, :]).float().tril(-1)
            det[b] = same
    elif kind == "induction":
        for b in range(B):
            t = tokens[b]
            same = (t[:, None] == t[None, :]).float().tril(-1)  # [q, k]: earlier occurrence of q's token at k
            shifted = torch.zeros(T, T)
            shifted[:, 1:] = same[:, :-1]  # attend to the token after that occurrence
            det[b] = shifted.tril(-1)
    else:
        raise HeadscopeError(f"unknown head score {kind!r}; use previous_token, duplicate_token, induction")
    return det


@torch.no_grad()
def head_scores(
    model: HeadModel,
    tokens: Int[Tensor, " batch pos"],
    kind: str = "induction",
    exclude_bos: bool = False,
    exclude_current: bool = False,
) -> HeadResult:
    """Previous-token, duplicate-token or induction score of every head on ``tokens``.

    Definitions follow TransformerLens's ``head_detector``: a detection pattern marks
    where an ideal head attends (previous token; earlier copies of the current token; the
    token after an earlier copy of the current token); the score is the share of the
    head's attention that falls there, averaged over the batch.
    """
    tokens = model.check_tokens(tokens)
    _, cache = model.run_with_heads(tokens, sites=(), pattern=True)
    det = _detection_patterns(tokens.cpu(), kind)
    scores = torch.stack(
        [_detection_score(cache.pattern[L].cpu(), det, exclude_bos, exclude_current) for L in range(model.n_layers)]
    )
    return HeadResult(
        scores,
        ("layer", "head"),
        {},
        {
            "method": f"head_score:{kind}",
            "model": getattr(model, "name", "model"),
            "metric_name": f"{kind} score",
            "title": f"{kind} score",
        },
    )


def repeated_tokens(model: HeadModel, n: int = 32, seq: int = 20, seed: int = 0) -> Tensor:
    """``[BOS] r r`` with ``r`` random tokens (the standard induction probe)."""
    gen = torch.Generator().manual_seed(seed)
    low = 4 if model.d_vocab > 8 else 0
    r = torch.randint(low, model.d_vocab, (n, seq), generator=gen)
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    first = torch.full((n, 1), bos if bos is not None else int(r[0, 0]))
    return torch.cat([first, r, r], dim=1)


@torch.no_grad()
def attention_to_positions(
    model: HeadModel, tokens: Int[Tensor, " batch pos"], positions: Sequence[int] | Tensor, query: int = -1
) -> HeadResult:
    """Share of each head's attention from position ``query`` onto ``positions``.

    ``positions``: indices shared by every row, or a bool mask ``[batch, pos]`` (e.g.
    where the operands and the operator are). Averaged over the batch.
    """
    tokens = model.check_tokens(tokens)
    _, cache = model.run_with_heads(tokens, sites=(), pattern=True)
    B, T = tokens.shape
    if isinstance(positions, Tensor) and positions.dtype == torch.bool:
        mask = positions.float()
    else:
        mask = torch.zeros(B, T)
        mask[:, torch.as_tensor(list(positions), dtype=torch.long)] = 1
    scores = torch.stack(
        [(cache.pattern[L][:, :, query, :].cpu() * mask[:, None]).sum(-1).mean(0) for L in range(model.n_layers)]
    )
    return HeadResult(
        scores,
        ("layer", "head"),
        {},
        {
            "method": "attention_to_positions",
            "metric_name": "attention share",
            "title": "attention from the final position",
        },
    )
