"""Metrics shared by every package: logit difference, normalised patching metric, accuracy, KL."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


def _gather_last(
    logits: Float[Tensor, " batch pos vocab"] | Float[Tensor, " batch vocab"],
    ids: Int[Tensor, " batch"],
    pos: int | Tensor = -1,
) -> Float[Tensor, " batch"]:
    if logits.ndim == 3:
        if isinstance(pos, Tensor):
            logits = logits[torch.arange(logits.shape[0], device=logits.device), pos.to(logits.device)]
        else:
            logits = logits[:, pos]
    return logits.gather(-1, ids.to(logits.device).long().view(-1, 1)).squeeze(-1)


def logit_diff(
    logits: Float[Tensor, " batch pos vocab"] | Float[Tensor, " batch vocab"],
    answer: Int[Tensor, " batch"],
    wrong: Int[Tensor, " batch"],
    pos: int | Tensor = -1,
    reduce: bool = True,
) -> Tensor:
    """Logit of the answer token minus logit of the wrong-answer token at ``pos``.

    ``pos`` is an int or a per-row LongTensor of positions. Mean over the batch when
    ``reduce``.
    """
    d = _gather_last(logits, answer, pos) - _gather_last(logits, wrong, pos)
    return d.mean() if reduce else d


def answer_logit(logits: Tensor, answer: Tensor, pos: int | Tensor = -1, reduce: bool = True) -> Tensor:
    """Logit of the answer token at ``pos`` (mean over the batch when ``reduce``)."""
    v = _gather_last(logits, answer, pos)
    return v.mean() if reduce else v


def answer_logprob(logits: Tensor, answer: Tensor, pos: int | Tensor = -1, reduce: bool = True) -> Tensor:
    """Log-probability of the answer token at ``pos``."""
    if logits.ndim == 3:
        if isinstance(pos, Tensor):
            logits = logits[torch.arange(logits.shape[0], device=logits.device), pos.to(logits.device)]
        else:
            logits = logits[:, pos]
    v = _gather_last(logits.log_softmax(-1), answer)
    return v.mean() if reduce else v


def normalized_patching_metric(
    m: Tensor | float, m_clean: Tensor | float, m_corrupt: Tensor | float, eps: float = 1e-12
) -> Tensor:
    """``(m - m_corrupt) / (m_clean - m_corrupt)``: 0 = corrupt behaviour, 1 = clean behaviour.

    Raises if clean and corrupt metrics coincide (the normalisation is undefined; pick
    a task whose corruption changes the metric).
    """
    m, m_clean, m_corrupt = (torch.as_tensor(v, dtype=torch.float64) for v in (m, m_clean, m_corrupt))
    denom = m_clean - m_corrupt
    if torch.any(denom.abs() < eps):
        raise ValueError(
            f"clean and corrupt metric are equal ({float(m_clean):.6g}); the normalised patching metric is "
            "undefined — use a corruption that changes the answer"
        )
    return ((m - m_corrupt) / denom).to(torch.float32)


def accuracy(logits: Tensor, answer: Tensor, pos: int | Tensor = -1) -> float:
    """Share of rows whose argmax at ``pos`` is the answer token."""
    if logits.ndim == 3:
        if isinstance(pos, Tensor):
            logits = logits[torch.arange(logits.shape[0], device=logits.device), pos.to(logits.device)]
        else:
            logits = logits[:, pos]
    return (logits.argmax(-1).cpu() == answer.cpu()).float().mean().item()


def kl_div(logits_p: Tensor, logits_q: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean KL(P || Q) of next-token distributions, P from ``logits_p`` (the reference).

    ``mask`` (same leading shape, bool) selects the positions averaged over.
    """
    lp = F.log_softmax(logits_p.float(), dim=-1)
    lq = F.log_softmax(logits_q.float(), dim=-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    if mask is not None:
        return kl[mask.bool()].mean()
    return kl.mean()
