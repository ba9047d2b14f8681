"""DDIM sampling and inversion against Eq. (12) written out with an independently computed schedule."""

from __future__ import annotations

import math

import pytest
import torch

from generative.ddim import DDIM


def cosine_alpha_bar(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """abar_t of the cosine schedule (Nichol & Dhariwal 2021, Eq. 17 with betas capped)."""

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(T)]
    return torch.tensor([math.prod(1 - b for b in betas[: i + 1]) for i in range(T)], dtype=torch.float64)


@pytest.fixture(scope="module")
def ddim(pixel_model):
    return DDIM(pixel_model, num_inference_steps=10)


def test_grid_and_schedule(ddim, pixel_model) -> None:
    T = pixel_model.scheduler_config["num_train_timesteps"]
    assert ddim.timesteps == [i * (T // 10) for i in range(10)]
    assert ddim.level(7) == ddim.timesteps[6]
    if pixel_model.scheduler_config["beta_schedule"] == "squaredcos_cap_v2":
        torch.testing.assert_close(ddim.alphas_cumprod.double(), cosine_alpha_bar(T), rtol=1e-5, atol=1e-7)
    assert ddim.steps_for(0.7) == 7


def test_two_sampling_steps_match_eq12(ddim, pixel_model) -> None:
    ab = ddim.alphas_cumprod.double()
    t0, t1 = ddim.timesteps[0], ddim.timesteps[1]
    x = torch.randn(2, 3, pixel_model.sample_size, pixel_model.sample_size, generator=torch.Generator().manual_seed(0))
    got = ddim.sample(x, 2)
    # by hand: t1 -> t0 -> clean (abar = 1)
    y = x.double()
    for t, a_prev in ((t1, float(ab[t0])), (t0, 1.0)):
        e = pixel_model.eps(y.float(), t).double()
        x0 = (y - math.sqrt(1 - ab[t]) * e) / math.sqrt(ab[t])
        y = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * e
    torch.testing.assert_close(got.double(), y, rtol=1e-4, atol=1e-4)


def test_two_inversion_steps_match_eq12_reversed(ddim, pixel_model, eval_images) -> None:
    ab = ddim.alphas_cumprod.double()
    t0, t1 = ddim.timesteps[0], ddim.timesteps[1]
    x0 = eval_images[1][:2]
    got = ddim.invert(x0, 2)
    # clean -> t0 (eps evaluated on x0 at t0), then t0 -> t1 (eps evaluated at the source level t0)
    e = pixel_model.eps(x0, t0).double()
    y = math.sqrt(ab[t0]) * x0.double() + math.sqrt(1 - ab[t0]) * e
    e = pixel_model.eps(y.float(), t0).double()
    xhat = (y - math.sqrt(1 - ab[t0]) * e) / math.sqrt(ab[t0])
    y = math.sqrt(ab[t1]) * xhat + math.sqrt(1 - ab[t1]) * e
    torch.testing.assert_close(got.double(), y, rtol=1e-4, atol=1e-4)


def test_reconstruction_identifies_its_input_and_fixed_point_helps(pixel_model, eval_images) -> None:
    x = eval_images[1][[0, 3, 9]]
    plain = DDIM(pixel_model, 10)
    rec = plain.reconstruct(x, 7)
    d = torch.cdist(rec.flatten(1), x.flatten(1))  # [rec, input]
    assert torch.equal(d.argmin(1), torch.arange(3))
    refined = DDIM(pixel_model, 10, fixed_point_iters=2).reconstruct(x, 7)
    assert (refined - x).pow(2).mean() < (rec - x).pow(2).mean()
