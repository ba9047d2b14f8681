"""Image interpolation with a diffusion model: invert, mix the latents, denoise.

The pipeline of NoiseDiffusion Sec. 3 / the official scripts, for any
:class:`generative.models.Denoiser`:

1. encode both images to the diffusion space (``x1_0, x2_0``);
2. DDIM-invert each for ``k = round(stop_frac * N)`` of ``N`` steps to level t
   (official: 140 of 200, stop_frac = 0.7), giving ``x1_t, x2_t``;
3. for each lambda build the mixed latent with the chosen method
   (:func:`generative.noisediffusion.noisediffusion`, :func:`generative.baselines.slerp`
   of the inverted latents, or :func:`generative.baselines.noise_interpolation`);
4. DDIM-denoise all mixed latents from level t (one batch) and decode.

At lambda = 0 and 1, "noisediffusion" and "slerp" use the inverted latents themselves,
so the end frames are the DDIM reconstructions of the inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.common import HeadscopeError

from .baselines import lerp, noise_interpolation, slerp
from .ddim import DDIM
from .models import Denoiser
from .noisediffusion import noisediffusion

METHODS: tuple[str, ...] = ("noisediffusion", "slerp", "noise", "lerp")


def default_lambdas(n_frames: int) -> list[float]:
    """``n_frames`` evenly spaced lambdas from 0 to 1 inclusive."""
    if n_frames < 2:
        raise HeadscopeError(f"an interpolation needs at least 2 frames (the two ends), got {n_frames}")
    return [i / (n_frames - 1) for i in range(n_frames)]


@dataclass
class Interpolation:
    """Frames ``[n_lambda, 3, H, W]`` in [-1, 1] and what produced them."""

    frames: Tensor
    lambdas: list[float]
    method: str
    level: int  # training timestep t the latents were mixed at
    alpha_bar: float
    x1_t: Tensor  # inverted latents [1, c, h, w]
    x2_t: Tensor


@dataclass
class Inverted:
    """Both inputs' clean and DDIM-inverted latents (reusable across methods)."""

    x1_0: Tensor
    x2_0: Tensor
    x1_t: Tensor
    x2_t: Tensor
    k: int


class InterpolationPipeline:
    """Interpolate two images with a denoiser and DDIM (see module docstring)."""

    def __init__(
        self, model: Denoiser, num_inference_steps: int = 50, stop_frac: float = 0.7, fixed_point_iters: int = 0
    ):
        self.model = model
        self.ddim = DDIM(model, num_inference_steps, fixed_point_iters=fixed_point_iters)
        self.k = self.ddim.steps_for(stop_frac)

    def invert_pair(self, img_a: Float[Tensor, " 1 3 H W"], img_b: Float[Tensor, " 1 3 H W"]) -> Inverted:
        """Encode and DDIM-invert both images (one batch of 2) to level ``t_{k-1}``."""
        if img_a.shape != img_b.shape:
            raise HeadscopeError(
                f"the two images must have the same shape, got {tuple(img_a.shape)} and {tuple(img_b.shape)}; "
                "resize them first"
            )
        x0 = self.model.encode(torch.cat([img_a, img_b]))
        xt = self.ddim.invert(x0, self.k)
        return Inverted(x0[:1], x0[1:], xt[:1], xt[1:], self.k)

    def mix(
        self,
        inv: Inverted,
        method: str,
        lambdas: Sequence[float],
        gamma: float = 0.0,
        boundary: float | None = 2.0,
        mu_scale: float = 1.2,
        generator: torch.Generator | None = None,
    ) -> Float[Tensor, " n c h w"]:
        """The mixed latents at level t, one per lambda."""
        if method not in METHODS:
            raise HeadscopeError(f"unknown interpolation method {method!r}; choose one of {', '.join(METHODS)}")
        if any(not 0 <= lam <= 1 for lam in lambdas):
            raise HeadscopeError(f"lambdas must lie in [0, 1], got {list(lambdas)}")
        ab = self.ddim.alpha_bar(inv.k)
        # one shared eps per call (official code: one draw per frame; shared here so that
        # consecutive frames differ only through lambda)
        eps = torch.randn(inv.x1_t.shape, generator=generator).to(inv.x1_t.device)
        out = []
        for lam in lambdas:
            if method == "noisediffusion":
                z = noisediffusion(
                    inv.x1_t,
                    inv.x2_t,
                    inv.x1_0,
                    inv.x2_0,
                    ab,
                    lam,
                    gamma=gamma,
                    boundary=boundary,
                    mu_scale=mu_scale,
                    noise=eps,
                )
            elif method == "slerp":
                z = slerp(inv.x1_t, inv.x2_t, lam)
            elif method == "lerp":
                z = lerp(inv.x1_t, inv.x2_t, lam)
            else:
                z = noise_interpolation(inv.x1_0, inv.x2_0, ab, lam, eps)
            out.append(z)
        return torch.cat(out)

    def __call__(
        self,
        img_a: Float[Tensor, " 1 3 H W"],
        img_b: Float[Tensor, " 1 3 H W"],
        method: str = "noisediffusion",
        lambdas: Sequence[float] | None = None,
        gamma: float = 0.0,
        boundary: float | None = 2.0,
        mu_scale: float = 1.2,
        generator: torch.Generator | None = None,
        inverted: Inverted | None = None,
    ) -> Interpolation:
        """Interpolate ``img_a`` -> ``img_b``; pass ``inverted`` to reuse an inversion across methods."""
        lambdas = list(default_lambdas(7) if lambdas is None else lambdas)
        inv = inverted if inverted is not None else self.invert_pair(img_a, img_b)
        z = self.mix(inv, method, lambdas, gamma, boundary, mu_scale, generator)
        frames = self.model.decode(self.ddim.sample(z, inv.k, desc=f"denoise ({method})"))
        return Interpolation(
            frames.cpu(), lambdas, method, self.ddim.level(inv.k), self.ddim.alpha_bar(inv.k), inv.x1_t, inv.x2_t
        )
