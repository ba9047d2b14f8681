"""NoiseDiffusion: correcting the inverted noise before interpolating (Zheng et al., ICLR 2024).

Paper Sec. 3 (the final NoiseDiffusion update) and the official scripts (Tranquil1ty/NoiseDiffusion). Given
DDIM-inverted latents ``x1_t, x2_t`` at level t and the clean inputs ``x1_0, x2_0``:

    alpha0 = cos(lam pi / 2),  beta0 = sin(lam pi / 2),  l = alpha0 / beta0
    alpha  = sqrt((1 - gamma^2) l^2 / (l^2 + 1)),   beta = sqrt((1 - gamma^2) / (l^2 + 1))
    mu     = m alpha / (alpha + beta),              nu   = m beta / (alpha + beta)     (m = 1.2)
    x1_t, x2_t <- clip(x1_t, -B, B), clip(x2_t, -B, B)                                 (B = 2)
    x_t    = alpha x1_t + beta x2_t
             + (mu - alpha) sqrt(abar_t) x1_0 + (nu - beta) sqrt(abar_t) x2_0
             + gamma eps sqrt(1 - abar_t),         eps ~ N(0, I)
    x_t    <- clip(x_t, -B, B)

and x_t is denoised with DDIM. Reading: if ``x_i,t = sqrt(abar) x_i,0 + sqrt(1-abar) n_i``,
the signal part of x_t is ``sqrt(abar) (mu x1_0 + nu x2_0)`` (the inputs mixed with weights
summing to m, a mild contrast boost), and the noise part is ``alpha n_1 + beta n_2 +
gamma eps`` with ``alpha^2 + beta^2 + gamma^2 = 1`` (unit variance when the n_i are
independent standard normal); the clipping removes the out-of-range values the inversion
of natural images produces (the paper's premise: that noise is not Gaussian).

The formula divides by ``sin(lam pi / 2)``, so ``lam = 0`` and ``lam = 1`` are the
endpoints themselves: they return the (unclipped) inverted latent of that input, whose
denoising is the DDIM reconstruction. (The continuous limit would be
``x1_t + (m - 1) sqrt(abar) x1_0``, not the reconstruction.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.common import HeadscopeError


@dataclass(frozen=True)
class NoiseDiffusionCoefficients:
    """``alpha, beta`` (weights of the inverted latents) and ``mu, nu`` (weights of the clean inputs)."""

    alpha: float
    beta: float
    mu: float
    nu: float


def noisediffusion_coefficients(lam: float, gamma: float = 0.0, mu_scale: float = 1.2) -> NoiseDiffusionCoefficients:
    """The NoiseDiffusion coefficients for ``lam`` in (0, 1), computed as in the paper (via ``l = cot(lam pi/2)``)."""
    if not 0 < lam < 1:
        raise HeadscopeError(
            f"NoiseDiffusion coefficients need 0 < lambda < 1, got {lam}; lambda 0 and 1 are the inputs' own latents"
        )
    if not 0 <= gamma <= 1:
        raise HeadscopeError(f"gamma must be in [0, 1] (the share of fresh noise), got {gamma}")
    a0 = math.cos(lam * math.pi / 2)
    b0 = math.sin(lam * math.pi / 2)
    cot = a0 / b0  # the paper's l
    alpha = math.sqrt((1 - gamma**2) * cot * cot / (cot * cot + 1))
    beta = math.sqrt((1 - gamma**2) / (cot * cot + 1))
    mu = mu_scale * alpha / (alpha + beta)
    nu = mu_scale * beta / (alpha + beta)
    return NoiseDiffusionCoefficients(alpha, beta, mu, nu)


def noisediffusion(
    x1_t: Float[Tensor, " b *d"],
    x2_t: Float[Tensor, " b *d"],
    x1_0: Float[Tensor, " b *d"],
    x2_0: Float[Tensor, " b *d"],
    alpha_bar_t: float,
    lam: float,
    gamma: float = 0.0,
    boundary: float | None = 2.0,
    mu_scale: float = 1.2,
    noise: Float[Tensor, " b *d"] | None = None,
    generator: torch.Generator | None = None,
) -> Float[Tensor, " b *d"]:
    """The NoiseDiffusion latent at level t for one ``lam`` (see the module docstring).

    Args:
        x1_t, x2_t: DDIM-inverted latents of the two inputs at level t.
        x1_0, x2_0: the clean inputs in the same (pixel or VAE-latent) space.
        alpha_bar_t: ``abar_t`` of that level.
        lam: interpolation position; 0 and 1 return ``x1_t`` / ``x2_t`` unchanged.
        gamma: share of fresh Gaussian noise (paper default 0).
        boundary: clipping bound B (paper 2.0); ``None`` disables both clippings.
        mu_scale: m, the sum mu + nu (official code 1.2).
        noise: the eps for the gamma term; drawn with ``generator`` when omitted.
    """
    if lam == 0:
        return x1_t.clone()
    if lam == 1:
        return x2_t.clone()
    if not 0 <= alpha_bar_t <= 1:
        raise HeadscopeError(f"alpha_bar_t must be in [0, 1], got {alpha_bar_t}")
    c = noisediffusion_coefficients(lam, gamma, mu_scale)
    clip = (lambda x: x.clamp(-boundary, boundary)) if boundary is not None else (lambda x: x)
    s = math.sqrt(alpha_bar_t)
    x = c.alpha * clip(x1_t) + c.beta * clip(x2_t) + (c.mu - c.alpha) * s * x1_0 + (c.nu - c.beta) * s * x2_0
    if gamma > 0:
        if noise is None:
            noise = torch.randn(x1_t.shape, generator=generator, dtype=x1_t.dtype)
        x = x + gamma * math.sqrt(1 - alpha_bar_t) * noise
    return clip(x)
