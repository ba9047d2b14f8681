"""NoiseDiffusion's coefficients and update against independent closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from generative.noisediffusion import noisediffusion, noisediffusion_coefficients
from headscope.common import HeadscopeError

LAMS = [0.01, 0.17, 0.33, 0.5, 0.67, 0.83, 0.99]


@pytest.mark.parametrize("lam", LAMS)
@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_coefficients_match_trig_closed_form(lam: float, gamma: float) -> None:
    # l = cot(lam pi/2)  =>  l^2/(l^2+1) = cos^2, 1/(l^2+1) = sin^2
    c = noisediffusion_coefficients(lam, gamma)
    r = math.sqrt(1 - gamma**2)
    assert c.alpha == pytest.approx(r * math.cos(lam * math.pi / 2), abs=1e-12)
    assert c.beta == pytest.approx(r * math.sin(lam * math.pi / 2), abs=1e-12)
    assert c.alpha**2 + c.beta**2 + gamma**2 == pytest.approx(1.0, abs=1e-12)
    assert c.mu + c.nu == pytest.approx(1.2, abs=1e-12)
    assert c.mu / c.nu == pytest.approx(c.alpha / c.beta, rel=1e-12)


def test_gamma_zero_unit_norm_and_symmetry() -> None:
    for lam in LAMS:
        c = noisediffusion_coefficients(lam)
        d = noisediffusion_coefficients(1 - lam)
        assert c.alpha**2 + c.beta**2 == pytest.approx(1.0, abs=1e-12)
        assert (c.alpha, c.beta, c.mu, c.nu) == pytest.approx((d.beta, d.alpha, d.nu, d.mu), abs=1e-12)


@pytest.mark.parametrize("lam", [0.2, 0.5, 0.8])
def test_reduces_to_signal_plus_rotated_noise_without_clipping(lam: float) -> None:
    """gamma = 0, |values| < B: x_t = sqrt(ab)(mu x1_0 + nu x2_0) + alpha n1 + beta n2.

    Here n_i = x_i,t - sqrt(ab) x_i,0.
    """
    g = torch.Generator().manual_seed(0)
    shape = (2, 3, 8, 8)
    x1_0, x2_0 = (torch.rand(shape, generator=g, dtype=torch.float64) - 0.5 for _ in range(2))
    n1, n2 = (0.5 * torch.randn(shape, generator=g, dtype=torch.float64).clamp(-2, 2) for _ in range(2))
    ab = 0.4
    x1_t = math.sqrt(ab) * x1_0 + math.sqrt(1 - ab) * n1
    x2_t = math.sqrt(ab) * x2_0 + math.sqrt(1 - ab) * n2
    assert x1_t.abs().max() < 2 and x2_t.abs().max() < 2
    out = noisediffusion(x1_t, x2_t, x1_0, x2_0, ab, lam, gamma=0.0, boundary=2.0)
    a, b = math.cos(lam * math.pi / 2), math.sin(lam * math.pi / 2)
    mu, nu = 1.2 * a / (a + b), 1.2 * b / (a + b)
    expected = math.sqrt(ab) * (mu * x1_0 + nu * x2_0) + math.sqrt(1 - ab) * (a * n1 + b * n2)
    assert expected.abs().max() < 2  # so the final clip is inactive too
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # and the same with clipping switched off
    torch.testing.assert_close(
        noisediffusion(x1_t, x2_t, x1_0, x2_0, ab, lam, boundary=None), expected, rtol=0, atol=1e-12
    )


def test_clipping_and_gamma_noise_term() -> None:
    g = torch.Generator().manual_seed(1)
    x1_t, x2_t = 3 * torch.randn(1, 3, 8, 8, generator=g), 3 * torch.randn(1, 3, 8, 8, generator=g)
    x1_0, x2_0 = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1, torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(1, 3, 8, 8, generator=g)
    ab, lam, gamma, B = 0.3, 0.4, 0.5, 2.0
    out = noisediffusion(x1_t, x2_t, x1_0, x2_0, ab, lam, gamma=gamma, boundary=B, noise=eps)
    assert out.abs().max() <= B
    c = noisediffusion_coefficients(lam, gamma)
    raw = (
        c.alpha * x1_t.clamp(-B, B)
        + c.beta * x2_t.clamp(-B, B)
        + (c.mu - c.alpha) * math.sqrt(ab) * x1_0
        + (c.nu - c.beta) * math.sqrt(ab) * x2_0
        + gamma * math.sqrt(1 - ab) * eps
    )
    torch.testing.assert_close(out, raw.clamp(-B, B))


def test_endpoints_are_the_inverted_latents_and_bad_lambda_raises() -> None:
    x1_t, x2_t = (
        5 * torch.randn(1, 3, 4, 4),
        5 * torch.randn(1, 3, 4, 4),
    )  # out of range on purpose: ends are unclipped
    z = torch.zeros(1, 3, 4, 4)
    assert torch.equal(noisediffusion(x1_t, x2_t, z, z, 0.5, 0.0), x1_t)
    assert torch.equal(noisediffusion(x1_t, x2_t, z, z, 0.5, 1.0), x2_t)
    with pytest.raises(HeadscopeError, match="lambda"):
        noisediffusion_coefficients(0.0)
    with pytest.raises(HeadscopeError, match="gamma"):
        noisediffusion_coefficients(0.5, gamma=1.5)
