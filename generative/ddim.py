"""Deterministic DDIM sampling and inversion (eta = 0) through diffusers' schedulers.

Song et al. (2021), "Denoising Diffusion Implicit Models", Eq. (12) with sigma = 0:

    x_{t'} = sqrt(abar_{t'}) * x0_hat + sqrt(1 - abar_{t'}) * eps_theta(x_t, t),
    x0_hat = (x_t - sqrt(1 - abar_t) * eps_theta(x_t, t)) / sqrt(abar_t)

Sampling walks t -> t' = t - T/N (``DDIMScheduler.step``); inversion runs the same
update with t' = t + T/N (``DDIMInverseScheduler.step``), evaluating eps at the current
(less noisy) point, the usual first-order inversion of the probability-flow ODE (Dhariwal
& Nichol 2021, App. F; NoiseDiffusion Sec. 3). ``fixed_point_iters`` > 0 refines each
inversion step so that eps is evaluated at the step's destination instead, which makes
``sample(invert(x))`` closer to ``x``.

Levels: with ``N`` inference steps the DDIM timesteps are ``t_0 < t_1 < ... < t_{N-1}``
("leading" spacing). ``invert(x0, k)`` returns the latent at level ``t_{k-1}``;
``sample(x, k)`` runs the last ``k`` sampling steps from that level back to x0. The
official NoiseDiffusion scripts invert 140 of 200 steps, i.e. ``k = 0.7 N``.
"""

from __future__ import annotations

import inspect

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.common import HeadscopeError, progress

from .models import Denoiser


def _accepted(cls: type, cfg: dict) -> dict:
    """The keys of ``cfg`` that ``cls.__init__`` takes (a DDPM config carries a few more)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in cfg.items() if k in params}


class DDIM:
    """DDIM inversion and sampling for any :class:`generative.models.Denoiser`."""

    def __init__(self, model: Denoiser, num_inference_steps: int = 50, fixed_point_iters: int = 0):
        from diffusers import DDIMInverseScheduler, DDIMScheduler

        cfg = dict(model.scheduler_config)
        T = int(cfg.get("num_train_timesteps", 1000))
        if not 1 <= num_inference_steps <= T:
            raise HeadscopeError(
                f"--steps must be between 1 and {T} (the model's training timesteps), got {num_inference_steps}"
            )
        # eta = 0 and no x0 clipping: the update is the discretised ODE, so inversion and
        # sampling are (approximately) each other's inverse. Both schedulers share one grid.
        cfg.update(clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading", thresholding=False)
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        self.model = model
        self.num_inference_steps = int(num_inference_steps)
        self.fixed_point_iters = int(fixed_point_iters)
        self.scheduler = DDIMScheduler.from_config(_accepted(DDIMScheduler, cfg))
        self.inverse_scheduler = DDIMInverseScheduler.from_config(_accepted(DDIMInverseScheduler, cfg))
        self.scheduler.set_timesteps(self.num_inference_steps)
        self.inverse_scheduler.set_timesteps(self.num_inference_steps)
        up = self.inverse_scheduler.timesteps.tolist()
        down = self.scheduler.timesteps.tolist()
        if up != down[::-1]:  # pragma: no cover - guards a diffusers behaviour change
            raise RuntimeError("DDIMScheduler and DDIMInverseScheduler disagree on the timestep grid")
        self.timesteps: list[int] = up  # ascending t_0 < ... < t_{N-1}
        self.alphas_cumprod: Tensor = self.scheduler.alphas_cumprod.float()

    def _check_k(self, k: int | None) -> int:
        k = self.num_inference_steps if k is None else int(k)
        if not 1 <= k <= self.num_inference_steps:
            raise HeadscopeError(
                f"the number of DDIM steps to invert must be in 1..{self.num_inference_steps}, got {k}"
            )
        return k

    def steps_for(self, frac: float) -> int:
        """Number of inversion steps for a stopping fraction (0.7 = the official 140 of 200)."""
        if not 0 < frac <= 1:
            raise HeadscopeError(f"the stopping fraction must be in (0, 1], got {frac}; 0.7 is the paper's 140/200")
        return max(1, round(frac * self.num_inference_steps))

    def level(self, k: int | None = None) -> int:
        """The training timestep ``t_{k-1}`` reached after ``k`` inversion steps."""
        return self.timesteps[self._check_k(k) - 1]

    def alpha_bar(self, k: int | None = None) -> float:
        """``abar_t`` at :meth:`level` ``(k)``."""
        return float(self.alphas_cumprod[self.level(k)])

    @torch.no_grad()
    def invert(
        self, x0: Float[Tensor, " b c h w"], k: int | None = None, desc: str = "DDIM inversion"
    ) -> Float[Tensor, " b c h w"]:
        """Run ``k`` inversion steps from a clean ``x0`` (diffusion space) to level ``t_{k-1}``."""
        k = self._check_k(k)
        x = x0.float().to(self.model.device)
        for i in progress(range(k), desc=desc, total=k):
            t = self.timesteps[i]
            src = self.timesteps[max(i - 1, 0)]
            eps = self.model.eps(x, src)
            nxt = self.inverse_scheduler.step(eps, t, x).prev_sample
            for _ in range(self.fixed_point_iters):
                eps = self.model.eps(nxt, t)
                nxt = self.inverse_scheduler.step(eps, t, x).prev_sample
            x = nxt
        return x

    @torch.no_grad()
    def sample(
        self, x_t: Float[Tensor, " b c h w"], k: int | None = None, desc: str = "DDIM sampling"
    ) -> Float[Tensor, " b c h w"]:
        """Run the last ``k`` DDIM steps from level ``t_{k-1}`` down to a clean sample."""
        k = self._check_k(k)
        x = x_t.float().to(self.model.device)
        for t in progress(self.timesteps[:k][::-1], desc=desc, total=k):
            x = self.scheduler.step(self.model.eps(x, t), t, x).prev_sample
        return x

    def reconstruct(self, x0: Float[Tensor, " b c h w"], k: int | None = None) -> Float[Tensor, " b c h w"]:
        """``sample(invert(x0, k), k)``: the DDIM reconstruction of ``x0``."""
        return self.sample(self.invert(x0, k), k)

    def generate(
        self, n: int, shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw ``x_T ~ N(0, I)`` of ``shape`` per sample and DDIM-sample it; returns (x_T, x0)."""
        xT = torch.randn((n, *shape), generator=generator)
        return xT, self.sample(xT, self.num_inference_steps)
