"""Interpolation metrics against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from generative.metrics import (
    artifact_ratio,
    endpoint_fidelity,
    high_freq_share,
    noise_stats,
    path_smoothness,
    psnr,
    ssim,
)


def test_psnr_matches_mse_formula_and_ssim_identity() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 16, 16, generator=g) * 2 - 1
    b = (a + 0.1 * torch.randn(3, 16, 16, generator=g)).clamp(-1, 1)
    mse = float((((a + 1) / 2 - (b + 1) / 2) ** 2).double().mean())
    assert psnr(a, b) == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) < 1.0
    ef = endpoint_fidelity(torch.stack([a, b]), a[None], b[None])
    assert ef.ssim == pytest.approx(1.0) and math.isinf(ef.psnr_a)


def test_noise_stats_accepts_gaussian_rejects_scaled_and_uniform() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 32, 32, generator=g)
    s = noise_stats(z)
    assert s.is_normal
    assert abs(s.mean) < 0.1 and abs(s.std - 1) < 0.05 and abs(s.kurtosis) < 0.3
    assert s.frac_outside_2 == pytest.approx(float((z.abs() > 2).float().mean()))
    assert not noise_stats(0.7 * z).is_normal  # right shape, wrong scale: N(0, 1) is the reference
    u = (torch.rand(3, 32, 32, generator=g) * 2 - 1) * math.sqrt(3)  # mean 0, std 1, not normal
    su = noise_stats(u)
    assert not su.is_normal and su.kurtosis < -1.0


def test_smoothness_of_a_linear_path() -> None:
    a, b = -torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    frames = torch.cat([a + (b - a) * i / 4 for i in range(5)])
    sm = path_smoothness(frames)
    assert sm.mean_step == pytest.approx(0.25) and sm.max_step == pytest.approx(0.25)
    jump = torch.cat([a, a, b, b])
    assert path_smoothness(jump).max_step == pytest.approx(1.0)


def test_high_freq_share_and_artifact_ratio() -> None:
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = torch.cos(2 * math.pi * xx / 32).expand(1, 3, 32, 32) * 0.5  # 1/32 cycles/pixel
    checker = torch.cos(math.pi * (xx + yy)).expand(1, 3, 32, 32) * 0.5  # Nyquist
    assert float(high_freq_share(smooth)) == pytest.approx(0.0, abs=1e-6)
    assert float(high_freq_share(checker)) == pytest.approx(1.0, abs=1e-6)
    natural = (
        torch.tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)), dtype=torch.float32)
        .cumsum(-1)
        .cumsum(-2)
    )
    natural = natural / natural.abs().max()
    other = torch.roll(natural, 7, dims=-1)
    # middle frames equal to the inputs: ratio 1
    assert artifact_ratio(torch.cat([natural, natural, other, other]), natural, other) == pytest.approx(1.0, abs=1e-6)
    noisy = (natural + 0.3 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert artifact_ratio(torch.cat([natural, noisy, natural]), natural, natural) > 1.5
    blurred = torch.nn.functional.avg_pool2d(natural, 3, 1, 1, count_include_pad=False)
    assert artifact_ratio(torch.cat([natural, blurred, natural]), natural, natural) < 1.0
