"""The interpolation baselines NoiseDiffusion is compared with: lerp, slerp and "noise".

All work on whole samples: a tensor ``[b, ...]`` is treated as ``b`` vectors, and the
angle in slerp is taken per sample.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor


def lerp(x1: Float[Tensor, " b *d"], x2: Float[Tensor, " b *d"], lam: float) -> Float[Tensor, " b *d"]:
    """Linear interpolation ``(1 - lam) x1 + lam x2``."""
    return (1 - lam) * x1 + lam * x2


def slerp(
    x1: Float[Tensor, " b *d"], x2: Float[Tensor, " b *d"], lam: float, eps: float = 1e-7
) -> Float[Tensor, " b *d"]:
    """Spherical linear interpolation (Shoemake 1985), per sample.

    ``theta = arccos(<x1, x2> / (|x1| |x2|))``,
    ``slerp = sin((1 - lam) theta) / sin(theta) * x1 + sin(lam theta) / sin(theta) * x2``.
    Computed in float64; falls back to lerp where the vectors are (anti)parallel.
    Endpoints are returned exactly at ``lam`` = 0 and 1.
    """
    if lam == 0:
        return x1.clone()
    if lam == 1:
        return x2.clone()
    a = x1.double().flatten(1)
    b = x2.double().flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)
    theta = torch.arccos(cos.clamp(-1 + eps, 1 - eps))
    s = torch.sin(theta)
    w1 = torch.sin((1 - lam) * theta) / s
    w2 = torch.sin(lam * theta) / s
    parallel = s < 1e-6
    w1 = torch.where(parallel, torch.full_like(w1, 1 - lam), w1)
    w2 = torch.where(parallel, torch.full_like(w2, lam), w2)
    out = w1[:, None] * a + w2[:, None] * b
    return out.view_as(x1).to(x1.dtype)


def noise_interpolation(
    x1_0: Float[Tensor, " b *d"],
    x2_0: Float[Tensor, " b *d"],
    alpha_bar_t: float,
    lam: float,
    noise: Float[Tensor, " b *d"],
) -> Float[Tensor, " b *d"]:
    """The "noise" baseline (NoiseDiffusion Sec. 4, as in the official code).

    Both clean inputs are forward-noised with one shared ``eps``,
    ``x_i,t = sqrt(abar_t) x_i,0 + sqrt(1 - abar_t) eps``, and the two are slerped; the
    result is then denoised from level t (SDEdit-like: the inverted noise is ignored).
    """
    s, n = math.sqrt(alpha_bar_t), math.sqrt(1 - alpha_bar_t)
    return slerp(s * x1_0 + n * noise, s * x2_0 + n * noise, lam)
