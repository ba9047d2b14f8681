"""Underwater degradation, paired-folder loader, and PSNR/SSIM/UIQM/UCIQE against independent computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headscope.common import HeadscopeError
from vision.data.underwater import (
    PairedFolder,
    degrade,
    random_params,
    restore,
    synthetic_depth,
    synthetic_pairs,
    transmission,
)
from vision.metrics import alpha_trimmed_mean, psnr, ssim, uciqe, uicm, uiconm, uiqm, uism

torch.set_num_threads(1)


def test_degradation_follows_formation_model_and_is_invertible() -> None:
    rng = np.random.default_rng(0)
    J = torch.rand(3, 40, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = random_params(rng)
    d = synthetic_depth(40, 48, rng, p.depth_min, p.depth_max)
    beta, B = torch.tensor(p.beta, dtype=torch.float64), torch.tensor(p.background, dtype=torch.float64)
    degraded = degrade(J, d, beta, B)
    # pixelwise closed form
    for c in range(3):
        t = np.exp(-p.beta[c] * d.numpy())
        np.testing.assert_allclose(degraded[c].numpy(), J[c].numpy() * t + p.background[c] * (1 - t), rtol=1e-12)
    assert float(d.min()) == pytest.approx(p.depth_min) and float(d.max()) == pytest.approx(p.depth_max)
    assert p.beta[0] > p.beta[1] and p.beta[0] > p.beta[2]  # red attenuates fastest
    J_hat = restore(degraded, transmission(d, beta), B)
    assert psnr(J_hat.unsqueeze(0), J.unsqueeze(0)) > 40
    # with the wrong background light the inversion is clearly worse
    assert psnr(restore(degraded, transmission(d, beta), B.flip(0)).clamp(0, 1).unsqueeze(0), J.unsqueeze(0)) < 40


def test_synthetic_pairs_record_parameters_and_degrade() -> None:
    deg, clean, params = synthetic_pairs(("coffee",), n_per_photo=3, size=32, seed=1)
    assert deg.shape == clean.shape == (3, 3, 32, 32) and len(params) == 3
    assert 0 <= float(deg.min()) and float(deg.max()) <= 1
    assert psnr(deg, clean) < 30  # degraded
    again = synthetic_pairs(("coffee",), n_per_photo=3, size=32, seed=1)
    torch.testing.assert_close(again[0], deg)


def _png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path)


@pytest.mark.parametrize(
    "layout", [("input", "reference"), ("raw-890", "reference-890"), ("trainA", "trainB"), ("input", "GT")]
)
def test_paired_folder_layouts(tmp_path: Path, layout: tuple[str, str]) -> None:
    a, b = tmp_path / layout[0], tmp_path / layout[1]
    a.mkdir()
    b.mkdir()
    rng = np.random.default_rng(0)
    imgs = {}
    for name in ("001", "002"):
        x, y = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        _png(a / f"{name}.png", x)
        _png(b / f"{name}.png", y)
        imgs[name] = (x, y)
    _png(a / "orphan.png", np.zeros((4, 4, 3), np.uint8))  # no reference: skipped
    ds = PairedFolder(tmp_path, size=None)  # type: ignore[arg-type]
    assert len(ds) == 2
    x0, y0 = ds[0]
    np.testing.assert_allclose(x0.numpy().transpose(1, 2, 0), imgs["001"][0] / 255.0, atol=1e-6)
    np.testing.assert_allclose(y0.numpy().transpose(1, 2, 0), imgs["001"][1] / 255.0, atol=1e-6)
    xs, ys = PairedFolder(tmp_path, size=16).tensors()
    assert xs.shape == ys.shape == (2, 3, 16, 16)


def test_paired_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(HeadscopeError, match="paired layouts"):
        PairedFolder(tmp_path)


def test_psnr_closed_form_and_ssim_matches_scikit_image() -> None:
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64)
    assert psnr((x + 0.1).clamp(0, 1) * 0 + x, x) > 150  # identical
    y = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    mse = float(((y - x) ** 2).mean())
    assert psnr(y, x) == pytest.approx(10 * math.log10(1 / mse), rel=1e-9)
    want = structural_similarity(
        y[0].numpy(),
        x[0].numpy(),
        channel_axis=0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert ssim(y, x) == pytest.approx(want, abs=1e-6)
    assert ssim(x, x) == pytest.approx(1.0)


def test_alpha_trimmed_mean_direct() -> None:
    v = np.arange(1, 21, dtype=float)  # 20 values: drop ceil(2)=2 low, floor(2)=2 high
    assert alpha_trimmed_mean(v) == pytest.approx(np.mean(np.arange(3, 19)))
    v = np.arange(1, 16, dtype=float)  # 15 values: drop ceil(1.5)=2 low, floor(1.5)=1 high
    assert alpha_trimmed_mean(v) == pytest.approx(np.mean(np.arange(3, 15)))


def test_uiqm_parts_closed_forms() -> None:
    gray = np.full((32, 32, 3), 0.5)
    assert uicm(gray) == pytest.approx(0.0)  # RG = YB = 0
    assert uism(gray) == pytest.approx(0.0)  # no edges
    assert uiconm(gray) == pytest.approx(0.0)  # max = min in every block
    assert uiqm(gray) == pytest.approx(0.0)
    # a uniform colour: RG and YB are constants, so UICM = -0.0268 * sqrt(rg^2 + yb^2)
    col = np.zeros((16, 16, 3))
    col[..., 0], col[..., 1], col[..., 2] = 0.2, 0.6, 0.9
    rg, yb = (0.2 - 0.6) * 255, ((0.2 + 0.6) / 2 - 0.9) * 255
    assert uicm(col) == pytest.approx(-0.0268 * math.hypot(rg, yb))
    # one 8x8 block with two grey levels a < b: UIConM = -r log r with PLIP r
    two = np.zeros((8, 8, 3))
    two[:4] = 60 / 255
    two[4:] = 180 / 255
    a, b, k = 60.0, 180.0, 1026.0
    r = (k * (b - a) / (k - a)) / (b + a - a * b / k)
    assert uiconm(two) == pytest.approx(-r * math.log(r))


def test_uciqe_closed_forms() -> None:
    from skimage.color import rgb2lab

    gray = np.full((20, 20, 3), 0.4)
    assert uciqe(gray) == pytest.approx(0.0, abs=1e-4)  # no chroma (up to rgb2lab rounding), no luminance spread
    two = np.full((20, 20, 3), 0.2)
    two[10:] = 0.8
    L = rgb2lab(np.array([[[0.2] * 3, [0.8] * 3]]))[0, :, 0] / 100
    assert uciqe(two) == pytest.approx(0.2745 * (L[1] - L[0]), abs=1e-4)
