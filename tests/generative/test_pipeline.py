"""The interpolation pipeline: endpoints are DDIM reconstructions; mixing uses the documented formulas."""

from __future__ import annotations

import pytest
import torch

from generative.baselines import noise_interpolation, slerp
from generative.ddim import DDIM
from generative.noisediffusion import noisediffusion
from generative.pipeline import InterpolationPipeline, default_lambdas
from headscope.common import HeadscopeError


@pytest.fixture(scope="module")
def setup(pixel_model, eval_images):
    pipe = InterpolationPipeline(pixel_model, num_inference_steps=10, stop_frac=0.7)
    a, b = eval_images[1][0:1], eval_images[1][3:4]
    inv = pipe.invert_pair(a, b)
    return pipe, a, b, inv


@pytest.mark.parametrize("method", ["noisediffusion", "slerp"])
def test_lambda_0_and_1_are_the_ddim_reconstructions(setup, pixel_model, method) -> None:
    pipe, a, b, inv = setup
    res = pipe(a, b, method, [0.0, 0.5, 1.0], inverted=inv)
    ddim = DDIM(pixel_model, 10)  # independent: its own inversion and sampling of each input alone
    rec_a = pixel_model.decode(ddim.reconstruct(a, 7))
    rec_b = pixel_model.decode(ddim.reconstruct(b, 7))
    torch.testing.assert_close(res.frames[0:1], rec_a, rtol=0, atol=1e-4)
    torch.testing.assert_close(res.frames[2:3], rec_b, rtol=0, atol=1e-4)
    assert not torch.allclose(res.frames[1], res.frames[0], atol=1e-3)
    assert res.level == ddim.level(7) and res.alpha_bar == pytest.approx(ddim.alpha_bar(7))


def test_mixed_latents_follow_each_method(setup) -> None:
    pipe, a, b, inv = setup
    ab = pipe.ddim.alpha_bar(inv.k)
    lams = [0.25, 0.6]
    nd = pipe.mix(inv, "noisediffusion", lams)
    for i, lam in enumerate(lams):
        torch.testing.assert_close(nd[i : i + 1], noisediffusion(inv.x1_t, inv.x2_t, inv.x1_0, inv.x2_0, ab, lam))
    sl = pipe.mix(inv, "slerp", lams)
    torch.testing.assert_close(sl[1:2], slerp(inv.x1_t, inv.x2_t, 0.6))
    g = torch.Generator().manual_seed(3)
    nz = pipe.mix(inv, "noise", lams, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(inv.x1_t.shape, generator=g)
    torch.testing.assert_close(nz[0:1], noise_interpolation(inv.x1_0, inv.x2_0, ab, 0.25, eps))


def test_bad_input_raises(setup) -> None:
    pipe, a, b, inv = setup
    with pytest.raises(HeadscopeError, match="unknown interpolation method"):
        pipe.mix(inv, "cubic", [0.5])
    with pytest.raises(HeadscopeError, match=r"\[0, 1\]"):
        pipe.mix(inv, "slerp", [1.5])
    with pytest.raises(HeadscopeError, match="same shape"):
        pipe.invert_pair(a, torch.zeros(1, 3, 16, 16))
    with pytest.raises(HeadscopeError, match="at least 2"):
        default_lambdas(1)
    with pytest.raises(HeadscopeError, match="32x32|resize"):
        pipe.model.encode(torch.zeros(1, 3, 16, 16))
