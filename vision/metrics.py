"""Image-quality metrics for enhancement: PSNR and SSIM against a reference, and the
no-reference underwater metrics UIQM and UCIQE, written here (no library has them).

PSNR and SSIM are the standard formulas, written here rather than imported from
torchmetrics because importing torchmetrics pulls in transformers and torchvision (15–45 s
on a shared 2-core machine); the tests check them against scikit-image's implementations.

- UIQM (Panetta, Gao & Agaian, IEEE J. Oceanic Eng. 41(3), 2016, Eq. 8–22):
  ``UIQM = 0.0282·UICM + 0.2953·UISM + 3.5753·UIConM`` on an RGB image in [0, 255].

  * UICM (colourfulness): ``RG = R − G``, ``YB = (R + G)/2 − B``; asymmetric α-trimmed
    mean μ (drop the ⌈0.1·K⌉ smallest and ⌊0.1·K⌋ largest values) and variance
    ``σ² = mean((x − μ)²)``; ``UICM = −0.0268·√(μ_RG² + μ_YB²) + 0.1586·√(σ²_RG + σ²_YB)``.
  * UISM (sharpness): ``Σ_c λ_c · EME(Sobel(c) ⊙ c)``, λ = (0.299, 0.587, 0.114);
    ``EME = 2/(k1·k2) · Σ_blocks log(max/min)`` over 8×8 blocks (blocks with a zero max
    or min contribute 0).
  * UIConM (contrast): ``logAMEE`` of the image with PLIP arithmetic (γ = k = 1026):
    ``−1/(k1·k2) · Σ_blocks r·log r``, ``r = (max Θ min)/(max ⊕ min)``,
    ``a Θ b = k(a − b)/(k − b)``, ``a ⊕ b = a + b − ab/γ``, over 8×8 blocks of all three
    channels (the block conventions of the widely used reference implementation).

- UCIQE (Yang & Sowmya, IEEE TIP 24(12), 2015, Eq. 1):
  ``UCIQE = 0.4680·σ_c + 0.2745·con_l + 0.2576·μ_s`` in CIELab with ``L`` scaled to
  [0, 1] (L/100) and chroma ``C = √(a² + b²)/100``: σ_c is the standard deviation of
  chroma, con_l the mean of the brightest 1 % of L minus the mean of the darkest 1 %, and μ_s the mean
  saturation ``C / L`` (0 where L = 0).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float
from scipy import ndimage
from torch import Tensor

from headscope.common import HeadscopeError

__all__ = ["alpha_trimmed_mean", "psnr", "ssim", "ssim_map", "uciqe", "uicm", "uiconm", "uiqm", "uism"]


def psnr(pred: Float[Tensor, " N 3 H W"], target: Float[Tensor, " N 3 H W"]) -> float:
    """Peak signal-to-noise ratio ``10·log10(1 / MSE)`` in dB for images in [0, 1].

    Averaged over the batch's per-image values.
    """
    if pred.shape != target.shape:
        raise HeadscopeError(f"psnr needs images of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    mse = (pred.clamp(0, 1).double() - target.double()).square().flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-20))).mean())


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(dtype)


def ssim_map(
    pred: Float[Tensor, " N C H W"],
    target: Float[Tensor, " N C H W"],
    data_range: float = 1.0,
    size: int = 11,
    sigma: float = 1.5,
) -> Float[Tensor, " N C h w"]:
    """Per-pixel SSIM (Wang et al., IEEE TIP 2004, Eq. 13) with a Gaussian window, over the valid (unpadded) interior.

    ``SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))``,
    ``C1 = (0.01·L)², C2 = (0.03·L)²``; the statistics are Gaussian-weighted means
    (population covariance), as torchmetrics' and scikit-image's ``gaussian_weights`` SSIM.
    Differentiable (used in the LSNet loss).
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise HeadscopeError(
            f"ssim needs two (N, C, H, W) images of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if min(pred.shape[-2:]) < size:
        raise HeadscopeError(f"images {tuple(pred.shape[-2:])} are smaller than the {size}×{size} SSIM window")
    c = pred.shape[1]
    w = _gaussian_window(size, sigma, pred.dtype).to(pred.device).expand(c, 1, size, size)

    def f(t: Tensor) -> Tensor:
        return torch.nn.functional.conv2d(t, w, groups=c)

    mx, my = f(pred), f(target)
    sxx = f(pred * pred) - mx * mx
    syy = f(target * target) - my * my
    sxy = f(pred * target) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(pred: Float[Tensor, " N 3 H W"], target: Float[Tensor, " N 3 H W"]) -> float:
    """Mean SSIM (Gaussian window 11, σ 1.5, data range 1) for images in [0, 1]."""
    return float(ssim_map(pred.clamp(0, 1), target).mean())


def _to_hwc255(img: Tensor | np.ndarray) -> np.ndarray:
    a = img.detach().cpu().numpy() if isinstance(img, Tensor) else np.asarray(img)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[2] != 3:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[2] != 3:
        raise HeadscopeError(f"expected one RGB image (3, H, W) or (H, W, 3), got shape {a.shape}")
    a = a.astype(np.float64)
    return a * 255.0 if a.max() <= 1.0 else a


def alpha_trimmed_mean(x: np.ndarray, alpha_l: float = 0.1, alpha_r: float = 0.1) -> float:
    """Mean after dropping the ⌈α_L·K⌉ smallest and ⌊α_R·K⌋ largest of the K values."""
    v = np.sort(np.asarray(x, dtype=np.float64).ravel())
    k = v.size
    lo, hi = math.ceil(alpha_l * k), math.floor(alpha_r * k)
    kept = v[lo : k - hi]
    return float(kept.mean()) if kept.size else float(v.mean())


def uicm(img) -> float:
    """Underwater image colourfulness measure (Panetta et al. 2016, Eq. 8–10)."""
    a = _to_hwc255(img)
    rg = a[..., 0] - a[..., 1]
    yb = (a[..., 0] + a[..., 1]) / 2 - a[..., 2]
    mu_rg, mu_yb = alpha_trimmed_mean(rg), alpha_trimmed_mean(yb)
    var_rg, var_yb = float(((rg - mu_rg) ** 2).mean()), float(((yb - mu_yb) ** 2).mean())
    return -0.0268 * math.sqrt(mu_rg**2 + mu_yb**2) + 0.1586 * math.sqrt(var_rg + var_yb)


def _blocks(x: np.ndarray, w: int) -> np.ndarray:
    """``(H, W[, C])`` → ``(k2, k1, w·w[·C])`` non-overlapping blocks, cropping the remainder."""
    k2, k1 = x.shape[0] // w, x.shape[1] // w
    if k1 == 0 or k2 == 0:
        raise HeadscopeError(f"image {x.shape[:2]} is smaller than the {w}×{w} block of UIQM; use a larger image")
    x = x[: k2 * w, : k1 * w]
    rest = x.shape[2:]
    b = x.reshape(k2, w, k1, w, *rest).swapaxes(1, 2)
    return b.reshape(k2, k1, -1)


def _eme(x: np.ndarray, w: int = 8) -> float:
    b = _blocks(x, w)
    mx, mn = b.max(-1), b.min(-1)
    ok = (mx > 0) & (mn > 0)
    k2, k1 = b.shape[:2]
    return float(2.0 / (k1 * k2) * np.log(mx[ok] / mn[ok]).sum())


def uism(img, window: int = 8) -> float:
    """Underwater image sharpness measure (Panetta et al. 2016, Eq. 11–12)."""
    a = _to_hwc255(img)
    total = 0.0
    for c, lam in enumerate((0.299, 0.587, 0.114)):
        ch = a[..., c]
        mag = np.hypot(ndimage.sobel(ch, axis=0), ndimage.sobel(ch, axis=1))
        total += lam * _eme(mag * ch / 255.0, window)
    return total


def uiconm(img, window: int = 8) -> float:
    """Underwater image contrast measure: PLIP logAMEE (Panetta et al. 2016, Eq. 13–17)."""
    a = _to_hwc255(img)
    gamma = k = 1026.0
    b = _blocks(a, window)
    mx, mn = b.max(-1), b.min(-1)
    top = k * (mx - mn) / (k - mn)
    bot = mx + mn - mx * mn / gamma
    with np.errstate(divide="ignore", invalid="ignore"):
        r = top / bot
        ok = (top != 0) & (bot != 0) & np.isfinite(r) & (r > 0)
    k2, k1 = b.shape[:2]
    return float(-1.0 / (k1 * k2) * (r[ok] * np.log(r[ok])).sum())


def uiqm(img, window: int = 8) -> float:
    """``0.0282·UICM + 0.2953·UISM + 3.5753·UIConM`` for one RGB image (tensor (3, H, W) in [0, 1] or array)."""
    return 0.0282 * uicm(img) + 0.2953 * uism(img, window) + 3.5753 * uiconm(img, window)


def uciqe(img) -> float:
    """``0.4680·σ_c + 0.2745·con_l + 0.2576·μ_s`` in CIELab (Yang & Sowmya 2015) for one RGB image."""
    from skimage.color import rgb2lab

    a = _to_hwc255(img) / 255.0
    lab = rgb2lab(a.clip(0, 1))
    L = lab[..., 0] / 100.0
    C = np.hypot(lab[..., 1], lab[..., 2]) / 100.0
    sigma_c = float(C.std())
    Ls = np.sort(L.ravel())
    n = max(1, int(round(0.01 * Ls.size)))
    con_l = float(Ls[-n:].mean() - Ls[:n].mean())
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = np.where(L > 0, C / np.where(L > 0, L, 1.0), 0.0)
    mu_s = float(sat.mean())
    return 0.4680 * sigma_c + 0.2745 * con_l + 0.2576 * mu_s
