"""slerp / lerp / noise baselines against their geometric definitions."""

from __future__ import annotations

import math

import pytest
import torch

from generative.baselines import lerp, noise_interpolation, slerp


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return math.acos(float((a @ b) / (a.norm() * b.norm())))


@pytest.mark.parametrize("lam", [0.1, 0.25, 0.5, 0.9])
def test_slerp_moves_at_constant_angular_speed_in_the_plane(lam: float) -> None:
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(1, 3, 8, 8, generator=g), torch.randn(1, 3, 8, 8, generator=g)
    u1, u2 = x1 / x1.norm(), x2 / x2.norm()  # the angular-speed property is for equal norms
    theta = _angle(u1, u2)
    z = slerp(u1, u2, lam)
    assert _angle(u1, z) == pytest.approx(lam * theta, abs=1e-5)
    assert _angle(z, u2) == pytest.approx((1 - lam) * theta, abs=1e-5)
    assert float(z.norm()) == pytest.approx(1.0, abs=1e-5)
    # unequal norms: the same weights on the raw vectors (scaling one input scales its weight's term)
    w = slerp(x1, x2, lam)
    s1, s2 = math.sin((1 - lam) * theta) / math.sin(theta), math.sin(lam * theta) / math.sin(theta)
    torch.testing.assert_close(w, s1 * x1 + s2 * x2, rtol=1e-5, atol=1e-5)


def test_slerp_per_sample_endpoints_and_parallel_fallback() -> None:
    x1, x2 = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    assert torch.equal(slerp(x1, x2, 0.0), x1) and torch.equal(slerp(x1, x2, 1.0), x2)
    batched = slerp(x1, x2, 0.3)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], slerp(x1[i : i + 1], x2[i : i + 1], 0.3))
    torch.testing.assert_close(slerp(x1, 2 * x1, 0.5), lerp(x1, 2 * x1, 0.5))


def test_noise_baseline_is_slerp_of_forward_noised_inputs() -> None:
    g = torch.Generator().manual_seed(2)
    x1, x2, eps = (torch.randn(1, 3, 8, 8, generator=g) for _ in range(3))
    ab = 0.25
    expected = slerp(0.5 * x1 + math.sqrt(0.75) * eps, 0.5 * x2 + math.sqrt(0.75) * eps, 0.4)
    torch.testing.assert_close(noise_interpolation(x1, x2, ab, 0.4, eps), expected)
