"""Underwater image pairs: a loader for paired folders (UIEB / EUVP / LSUI layouts) and a
synthetic degradation of scikit-image's bundled photos with the underwater image
formation model.

Image formation (Akkaynak & Treibitz, CVPR 2018, simplified to one attenuation
coefficient per channel, as in the LSNet paper's transmission-map prior §3.2)::

    I_c(x) = J_c(x) · t_c(x) + B_c · (1 − t_c(x)),     t_c(x) = exp(−β_c · d(x))

with J the clean image, d a depth map (metres), β_c the attenuation and B_c the
background (veiling) light. Red attenuates fastest, so degraded images turn blue-green.
Every synthetic pair records its ``β``, ``B`` and depth range, and ``restore`` inverts
the model exactly given the true ``t`` and ``B``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from scipy import ndimage
from torch import Tensor

from headscope.common import HeadscopeError

__all__ = [
    "HELD_OUT_PHOTOS",
    "PAIR_LAYOUTS",
    "TRAIN_PHOTOS",
    "PairedFolder",
    "UnderwaterParams",
    "degrade",
    "load_image",
    "random_params",
    "restore",
    "skimage_photo",
    "synthetic_depth",
    "synthetic_pairs",
    "transmission",
]

# (input folder, reference folder) of the public datasets: ours, UIEB, EUVP, LSUI.
PAIR_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("input", "reference"),
    ("raw-890", "reference-890"),
    ("trainA", "trainB"),
    ("input", "GT"),
)
_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# scikit-image photos bundled with the package (no download); the held-out ones are never trained on.
TRAIN_PHOTOS = ("astronaut", "coffee", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry", "colorwheel")
HELD_OUT_PHOTOS = ("chelsea", "rocket")


@dataclass
class UnderwaterParams:
    """Parameters of one synthetic degradation: attenuation β (1/m), background light B, depth range (m)."""

    beta: tuple[float, float, float]
    background: tuple[float, float, float]
    depth_min: float
    depth_max: float

    def as_dict(self) -> dict:
        return asdict(self)


def transmission(depth: Float[Tensor, " H W"], beta: Float[Tensor, " 3"]) -> Float[Tensor, " 3 H W"]:
    """``t_c = exp(−β_c d)``."""
    return torch.exp(-beta.view(3, 1, 1) * depth.unsqueeze(0))


def degrade(
    clean: Float[Tensor, " 3 H W"],
    depth: Float[Tensor, " H W"],
    beta: Float[Tensor, " 3"],
    background: Float[Tensor, " 3"],
) -> Float[Tensor, " 3 H W"]:
    """``I = J·t + B·(1 − t)`` per channel."""
    t = transmission(depth, beta).to(clean.dtype)
    return clean * t + background.view(3, 1, 1).to(clean.dtype) * (1 - t)


def restore(
    degraded: Float[Tensor, " 3 H W"], t: Float[Tensor, " 3 H W"], background: Float[Tensor, " 3"]
) -> Float[Tensor, " 3 H W"]:
    """Invert the formation model: ``J = (I − B·(1 − t)) / t``."""
    return (degraded - background.view(3, 1, 1).to(degraded.dtype) * (1 - t)) / t


def synthetic_depth(
    h: int, w: int, rng: np.random.Generator, d_min: float = 1.0, d_max: float = 8.0
) -> Float[Tensor, " H W"]:
    """A smooth depth map in ``[d_min, d_max]``: a random tilted ramp (far at one side) plus low-frequency noise."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(ang) * xx + np.sin(ang) * yy
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), max(h, w) / 6)
    f = ramp + 0.5 * noise / (noise.std() + 1e-12) * (ramp.std() + 1e-3)
    f = (f - f.min()) / (f.max() - f.min() + 1e-12)
    return torch.from_numpy(d_min + (d_max - d_min) * f)


def random_params(rng: np.random.Generator) -> UnderwaterParams:
    """Ocean-like water: red attenuates most (β_r 0.25–0.6/m), blue-green veiling light."""
    beta = (rng.uniform(0.25, 0.6), rng.uniform(0.05, 0.2), rng.uniform(0.03, 0.15))
    background = (rng.uniform(0.02, 0.2), rng.uniform(0.35, 0.7), rng.uniform(0.45, 0.8))
    d_min = rng.uniform(0.5, 2.0)
    return UnderwaterParams(
        tuple(map(float, beta)), tuple(map(float, background)), float(d_min), float(d_min + rng.uniform(2.0, 6.0))
    )  # type: ignore[arg-type]


@functools.lru_cache(maxsize=16)
def skimage_photo(name: str) -> Float[np.ndarray, " H W 3"]:
    """A bundled scikit-image RGB photo as float in [0, 1] (the left view for ``stereo_motorcycle``)."""
    import skimage.data

    if not hasattr(skimage.data, name):
        raise HeadscopeError(
            f"scikit-image has no bundled image {name!r}; use one of {TRAIN_PHOTOS + HELD_OUT_PHOTOS}"
        )
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):
        img = img[0]
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] < 3:
        raise HeadscopeError(f"skimage.data.{name} is not an RGB photo")
    return img[..., :3].astype(np.float64) / 255.0


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Bicubic, antialiased resize of an ``(H, W, C)`` float image to ``size×size``."""
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).unsqueeze(0)
    out = torch.nn.functional.interpolate(t, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return out[0].numpy().transpose(1, 2, 0).clip(0, 1)


def synthetic_pairs(
    photos: tuple[str, ...] = TRAIN_PHOTOS,
    n_per_photo: int = 8,
    size: int = 64,
    seed: int = 0,
) -> tuple[Float[Tensor, " N 3 S S"], Float[Tensor, " N 3 S S"], list[UnderwaterParams]]:
    """Random square crops (¼ to all of the short side) of ``photos``, resized to ``size``.

    Each crop is degraded with its own parameters.

    Returns ``(degraded, clean, params)``; float32 in [0, 1].
    """
    rng = np.random.default_rng(seed)
    deg, clean, params = [], [], []
    for name in photos:
        img = skimage_photo(name)
        h, w = img.shape[:2]
        for _ in range(n_per_photo):
            side = int(rng.uniform(0.25, 1.0) * min(h, w))
            y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = _resize(img[y0 : y0 + side, x0 : x0 + side], size)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            J = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
            p = random_params(rng)
            d = synthetic_depth(size, size, rng, p.depth_min, p.depth_max)
            degraded = degrade(
                J, d, torch.tensor(p.beta, dtype=torch.float64), torch.tensor(p.background, dtype=torch.float64)
            )
            deg.append(degraded.float().clamp(0, 1))
            clean.append(J.float())
            params.append(p)
    return torch.stack(deg), torch.stack(clean), params


def load_image(path: str | os.PathLike, size: int | None = 256) -> Float[Tensor, " 3 H W"]:
    """An image file as an RGB float tensor in [0, 1], bicubically resized to ``size×size`` (None keeps its size)."""
    from PIL import Image

    try:
        im = Image.open(path).convert("RGB")
    except (OSError, ValueError) as e:
        raise HeadscopeError(f"could not read image {path}: {e}") from e
    if size is not None:
        im = im.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0)


class PairedFolder(torch.utils.data.Dataset):
    """Pairs ``(degraded, reference)`` from ``root/<input>/`` and ``root/<reference>/`` matched by file stem.

    The folder names are detected from ``PAIR_LAYOUTS`` (``input/reference``, UIEB's
    ``raw-890/reference-890``, EUVP's ``trainA/trainB``, LSUI's ``input/GT``). Images are
    resized to ``size×size`` (256 in the paper).
    """

    def __init__(self, root: str | os.PathLike, size: int = 256) -> None:
        self.root, self.size = Path(root), size
        if not self.root.is_dir():
            raise HeadscopeError(
                f"{self.root} is not a folder; pass a folder holding input/ and reference/ (or UIEB/EUVP/LSUI's names)"
            )
        for a, b in PAIR_LAYOUTS:
            if (self.root / a).is_dir() and (self.root / b).is_dir():
                self.input_dir, self.ref_dir = self.root / a, self.root / b
                break
        else:
            raise HeadscopeError(
                f"{self.root} has none of the paired layouts {[f'{a}/ + {b}/' for a, b in PAIR_LAYOUTS]}"
            )
        refs = {p.stem: p for p in self.ref_dir.iterdir() if p.suffix.lower() in _EXT}
        self.pairs = [
            (p, refs[p.stem]) for p in sorted(self.input_dir.iterdir()) if p.suffix.lower() in _EXT and p.stem in refs
        ]
        if not self.pairs:
            raise HeadscopeError(f"no image in {self.input_dir} has a same-named reference in {self.ref_dir}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        a, b = self.pairs[i]
        return load_image(a, self.size), load_image(b, self.size)

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All pairs stacked: ``(inputs (N, 3, S, S), references (N, 3, S, S))``."""
        xs, ys = zip(*(self[i] for i in range(len(self))))
        return torch.stack(xs), torch.stack(ys)
