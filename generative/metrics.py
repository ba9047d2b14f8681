"""Metrics for diffusion interpolation: endpoint fidelity, noise validity, smoothness, artifacts.

Images are [-1, 1] tensors ``[n, 3, H, W]``; metrics are computed on [0, 1].

- Endpoint fidelity: PSNR and SSIM (scikit-image) of the frames at lambda = 0 and 1
  against the inputs.
- Noise validity: is an inverted latent a draw from N(0, I)? Mean, std, excess kurtosis
  and a Kolmogorov-Smirnov test of all its entries against N(0, 1) (not a fitted normal:
  the diffusion prior is the standard one). The paper's premise is that inverting a natural
  image does not give such noise.
- Smoothness: RMSE between consecutive frames (mean and max over the path); a jump in
  the middle shows as max >> mean.
- Artifacts: high-frequency energy ratio. The typical failure of interpolating in a bad
  noise region is speckle / residual noise or blotchy saturated colour, both of which put
  energy in the upper half of the spectrum, while natural 32x32 photos have a ~1/f^2
  spectrum with little energy there. We take the share of (mean-removed) spectral energy
  at radial frequency above ``cutoff`` cycles/pixel in each intermediate frame and divide
  it by the same share averaged over the two inputs: ~1 means input-like spectra, >1 extra
  high-frequency content (noise/artifacts), <1 blur.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .data import to_unit


def _hwc(x: Tensor) -> np.ndarray:
    return to_unit(x.detach().float().cpu()).permute(1, 2, 0).numpy().astype(np.float64)


def psnr(a: Float[Tensor, " 3 H W"], b: Float[Tensor, " 3 H W"]) -> float:
    """PSNR in dB on [0, 1] images."""
    from skimage.metrics import peak_signal_noise_ratio

    with np.errstate(divide="ignore"):  # identical images: inf dB
        return float(peak_signal_noise_ratio(_hwc(a), _hwc(b), data_range=1.0))


def ssim(a: Float[Tensor, " 3 H W"], b: Float[Tensor, " 3 H W"]) -> float:
    """SSIM (Wang et al. 2004; 7x7 window, over RGB channels) on [0, 1] images."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(_hwc(a), _hwc(b), data_range=1.0, channel_axis=-1))


@dataclass
class EndpointFidelity:
    psnr_a: float
    ssim_a: float
    psnr_b: float
    ssim_b: float

    @property
    def psnr(self) -> float:
        return (self.psnr_a + self.psnr_b) / 2

    @property
    def ssim(self) -> float:
        return (self.ssim_a + self.ssim_b) / 2


def endpoint_fidelity(
    frames: Float[Tensor, " n 3 H W"], img_a: Float[Tensor, " 1 3 H W"], img_b: Float[Tensor, " 1 3 H W"]
) -> EndpointFidelity:
    """PSNR/SSIM of the first frame against ``img_a`` and the last against ``img_b``."""
    a, b = img_a.reshape(frames.shape[1:]), img_b.reshape(frames.shape[1:])
    return EndpointFidelity(psnr(frames[0], a), ssim(frames[0], a), psnr(frames[-1], b), ssim(frames[-1], b))


@dataclass
class NoiseStats:
    """Moments and a KS test of a latent's entries against N(0, 1)."""

    mean: float
    std: float
    kurtosis: float  # excess (Fisher): 0 for a normal
    ks_stat: float
    ks_pvalue: float
    frac_outside_2: float  # share of entries with |z| > 2 (N(0,1): 0.0455)
    alpha: float = 0.01

    @property
    def is_normal(self) -> bool:
        """KS test does not reject N(0, 1) at level ``alpha``."""
        return self.ks_pvalue >= self.alpha

    def as_dict(self) -> dict[str, float | bool]:
        return {**asdict(self), "is_normal": self.is_normal}


def noise_stats(z: Float[Tensor, " *d"], alpha: float = 0.01) -> NoiseStats:
    """Noise validity of one latent (all its entries pooled)."""
    from scipy import stats

    v = z.detach().double().cpu().flatten().numpy()
    ks = stats.kstest(v, "norm")
    return NoiseStats(
        mean=float(v.mean()),
        std=float(v.std()),
        kurtosis=float(stats.kurtosis(v, fisher=True)),
        ks_stat=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        frac_outside_2=float((np.abs(v) > 2).mean()),
        alpha=alpha,
    )


@dataclass
class Smoothness:
    mean_step: float
    max_step: float


def path_smoothness(frames: Float[Tensor, " n 3 H W"]) -> Smoothness:
    """RMSE (on [0, 1]) between consecutive frames: mean and max over the path."""
    f = to_unit(frames.float())
    d = (f[1:] - f[:-1]).pow(2).flatten(1).mean(1).sqrt()
    return Smoothness(float(d.mean()), float(d.max()))


def high_freq_share(x: Float[Tensor, " n 3 H W"], cutoff: float = 0.25) -> Float[Tensor, " n"]:
    """Share of spectral energy (mean removed, summed over channels) above ``cutoff`` cycles/pixel."""
    f = to_unit(x.float())
    f = f - f.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(f).abs().pow(2).sum(1)  # [n, H, W]
    h, w = power.shape[-2:]
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.fftfreq(w).view(1, -1)
    mask = (fy**2 + fx**2).sqrt() > cutoff
    total = power.flatten(1).sum(1).clamp_min(1e-12)
    return power[:, mask].sum(1) / total


def artifact_ratio(
    frames: Float[Tensor, " n 3 H W"],
    img_a: Float[Tensor, " 1 3 H W"],
    img_b: Float[Tensor, " 1 3 H W"],
    cutoff: float = 0.25,
) -> float:
    """Mean high-frequency share of the intermediate frames over that of the inputs (see module doc)."""
    inner = frames[1:-1] if frames.shape[0] > 2 else frames
    ref = high_freq_share(torch.cat([img_a, img_b]).reshape(2, *frames.shape[1:]), cutoff).mean()
    return float(high_freq_share(inner, cutoff).mean() / ref.clamp_min(1e-12))


def evaluate_path(
    frames: Float[Tensor, " n 3 H W"], img_a: Float[Tensor, " 1 3 H W"], img_b: Float[Tensor, " 1 3 H W"]
) -> dict[str, float]:
    """All path metrics of one interpolation as a flat dict."""
    ef = endpoint_fidelity(frames, img_a, img_b)
    sm = path_smoothness(frames)
    return {
        "endpoint_psnr": ef.psnr,
        "endpoint_ssim": ef.ssim,
        "mean_step": sm.mean_step,
        "max_step": sm.max_step,
        "hf_ratio": artifact_ratio(frames, img_a, img_b),
    }
