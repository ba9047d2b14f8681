"""Weak and strong views for the offline datasets (digits 8×8 images, MNIST-1D signals).

Semi-supervised FL methods (Twin-sight, FixMatch, FreeMatch) train on two views of
every sample: a *weak* view (a small, label-preserving perturbation) and a *strong*
view (a heavier one). The papers use flip-and-crop / RandAugment on 32×32 photos
(FixMatch §2.3); neither suits 8×8 digits (a flipped 2 is not a 2) or 1-D signals, so
the views here are chosen for these inputs:

- images ``[C, H, W]``: weak = translation by up to ±1 pixel; strong = random affine
  (rotation ±20°, scale 0.85–1.15, translation ±1.5 px) + a 3×3 cutout + Gaussian noise
  (σ 0.2). Resampling uses ``grid_sample`` with border padding (the background of a
  standardised digit is its border value).
- signals ``[D]`` (or ``[1, D]``): weak = shift by up to ±2 positions + noise σ 0.05;
  strong = time-stretch 0.85–1.15, shift ±4, amplitude ×(0.8–1.2), a masked segment of
  D/8 positions and noise σ 0.2. Resampling is linear interpolation with edge clamping.

Every view is a pure function of the batch and a ``torch.Generator``, so a client's
training is reproducible bit for bit from its seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from headscope.common import HeadscopeError


def _u(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _affine_images(
    x: Tensor, g: torch.Generator, rot_deg: float, scale: tuple[float, float], shift_px: float
) -> Tensor:
    """Per-sample random affine warp of ``x[B, C, H, W]`` (border padding, bilinear)."""
    b, _, h, w = x.shape
    ang = _u(b, -rot_deg, rot_deg, g) * math.pi / 180.0
    s = _u(b, *scale, g)
    tx = _u(b, -shift_px, shift_px, g) * 2.0 / w
    ty = _u(b, -shift_px, shift_px, g) * 2.0 / h
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _shift_images(x: Tensor, g: torch.Generator, max_px: int) -> Tensor:
    """Integer translation of every image by up to ±``max_px`` pixels (border-replicate padding)."""
    b, _, h, w = x.shape
    pad = F.pad(x, (max_px, max_px, max_px, max_px), mode="replicate")
    dx = torch.randint(0, 2 * max_px + 1, (b,), generator=g)
    dy = torch.randint(0, 2 * max_px + 1, (b,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None]).view(b, 1, h, 1).expand(b, x.shape[1], h, pad.shape[-1])
    out = pad.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None]).view(b, 1, 1, w).expand(b, x.shape[1], h, w)
    return out.gather(3, cols)


def _cutout_images(x: Tensor, g: torch.Generator, size: int) -> Tensor:
    """Set one random ``size``×``size`` square per image to that image's minimum value."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=g)
    cx = torch.randint(0, w, (b,), generator=g)
    ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
    my = ((ys - cy[:, None]).abs() <= size // 2).view(b, 1, h, 1)
    mx = ((xs - cx[:, None]).abs() <= size // 2).view(b, 1, 1, w)
    low = x.flatten(1).min(1).values.view(b, 1, 1, 1)
    return torch.where(my & mx, low, x)


def _resample_signal(x: Tensor, pos: Tensor) -> Tensor:
    """Linear interpolation of ``x[B, D]`` at fractional positions ``pos[B, D]`` (clamped to the ends)."""
    d = x.shape[-1]
    pos = pos.clamp(0, d - 1)
    lo = pos.floor().long().clamp(0, d - 1)
    hi = (lo + 1).clamp(max=d - 1)
    frac = (pos - lo.to(pos.dtype)).to(x.dtype)
    return x.gather(1, lo) * (1 - frac) + x.gather(1, hi) * frac


def _signal_view(x: Tensor, g: torch.Generator, strong: bool) -> Tensor:
    shape = x.shape
    x = x.reshape(shape[0], -1)
    b, d = x.shape
    t = torch.arange(d, dtype=x.dtype)[None].expand(b, d)
    if strong:
        stretch = _u(b, 0.85, 1.15, g).to(x.dtype)[:, None]
        shift = _u(b, -4.0, 4.0, g).to(x.dtype)[:, None]
        c = (d - 1) / 2
        out = _resample_signal(x, (t - c) * stretch + c + shift)
        out = out * _u(b, 0.8, 1.2, g).to(x.dtype)[:, None]
        seg = max(1, d // 8)
        start = torch.randint(0, d - seg + 1, (b,), generator=g)
        mask = (t >= start[:, None]) & (t < start[:, None] + seg)
        out = torch.where(mask, torch.zeros_like(out), out)
        out = out + 0.2 * torch.randn(out.shape, generator=g, dtype=x.dtype)
    else:
        shift = torch.randint(-2, 3, (b, 1), generator=g).to(x.dtype)
        out = _resample_signal(x, t + shift)
        out = out + 0.05 * torch.randn(out.shape, generator=g, dtype=x.dtype)
    return out.reshape(shape)


def weak(x: Tensor, g: torch.Generator) -> Tensor:
    """The weak view of a batch (images ``[B, C, H, W]`` or signals ``[B, D]``); see the module docstring."""
    _check(x)
    if x.dim() == 4:
        return _shift_images(x, g, 1)
    return _signal_view(x, g, strong=False)


def strong(x: Tensor, g: torch.Generator) -> Tensor:
    """The strong view of a batch (images ``[B, C, H, W]`` or signals ``[B, D]``); see the module docstring."""
    _check(x)
    if x.dim() == 4:
        out = _affine_images(x, g, 20.0, (0.85, 1.15), 1.5)
        out = _cutout_images(out, g, 3)
        return out + 0.2 * torch.randn(out.shape, generator=g, dtype=x.dtype)
    return _signal_view(x, g, strong=True)


def _check(x: Tensor) -> None:
    if x.dim() not in (2, 3, 4) or not torch.is_floating_point(x):
        raise HeadscopeError(
            "augmentations take a float batch of images [B, C, H, W] or signals [B, D] / [B, 1, D], "
            f"got {tuple(x.shape)} {x.dtype}"
        )
