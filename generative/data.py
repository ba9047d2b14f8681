"""Offline natural images: scikit-image's bundled photos, random crops, PNG in and out.

Images are float tensors in [-1, 1] with shape ``[batch, 3, H, W]`` (the range a pixel
DDPM is trained on); :func:`to_unit` maps them back to [0, 1] for metrics and saving.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from headscope.common import HeadscopeError

# Photos that ship inside scikit-image (no download). Grey ones are repeated to RGB.
PHOTOS_RGB: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)
PHOTOS_GREY: tuple[str, ...] = ("camera", "coins", "moon", "grass", "gravel", "brick")
PHOTOS: tuple[str, ...] = PHOTOS_RGB + PHOTOS_GREY


def load_photo(name: str, max_side: int = 256) -> Float[Tensor, " 3 H W"]:
    """One scikit-image photo as a [-1, 1] RGB tensor, downscaled so its longer side <= ``max_side``."""
    import skimage.data

    if name not in PHOTOS:
        raise HeadscopeError(f"unknown photo {name!r}; choose one of {', '.join(PHOTOS)}")
    if name == "motorcycle_left":
        arr = skimage.data.stereo_motorcycle()[0]
    else:
        arr = getattr(skimage.data, name)()
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    arr = arr[..., :3]
    x = torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1)
    h, w = x.shape[1:]
    scale = max_side / max(h, w)
    if scale < 1:
        x = F.interpolate(
            x[None], size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return x.clamp(0, 1) * 2 - 1


def load_photos(names: Sequence[str] = PHOTOS, max_side: int = 256) -> list[Float[Tensor, " 3 H W"]]:
    """Several photos (see :func:`load_photo`)."""
    return [load_photo(n, max_side) for n in names]


def random_crops(
    photos: Sequence[Float[Tensor, " 3 H W"]],
    n: int,
    size: int = 32,
    min_frac: float = 0.25,
    generator: torch.Generator | None = None,
) -> Float[Tensor, " n 3 size size"]:
    """``n`` random square crops resized to ``size``; side = U(min_frac, 1) * the photo's shorter side.

    Covers scales from textures (small crops) to the whole photo (frac 1), with random
    horizontal flips.
    """
    out = torch.empty(n, 3, size, size)
    idx = torch.randint(len(photos), (n,), generator=generator)
    u = torch.rand(n, 4, generator=generator)
    for i in range(n):
        img = photos[int(idx[i])]
        h, w = img.shape[1:]
        side = max(size // 2, int(min(h, w) * (min_frac + (1 - min_frac) * float(u[i, 0]))))
        top = int((h - side) * float(u[i, 1]))
        left = int((w - side) * float(u[i, 2]))
        crop = img[:, top : top + side, left : left + side][None]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        out[i] = crop.flip(-1) if float(u[i, 3]) < 0.5 else crop
    return out.clamp(-1, 1)


def center_square(
    img: Float[Tensor, " 3 H W"], size: int = 32, frac: float = 1.0, offset: tuple[float, float] = (0.5, 0.5)
) -> Float[Tensor, " 3 size size"]:
    """A deterministic square crop (side = ``frac`` * shorter side, placed at ``offset``) resized to ``size``."""
    h, w = img.shape[1:]
    side = max(1, int(min(h, w) * frac))
    top = int((h - side) * offset[0])
    left = int((w - side) * offset[1])
    crop = img[:, top : top + side, left : left + side][None]
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(-1, 1)


def evaluation_images(size: int = 32) -> tuple[list[str], Float[Tensor, " n 3 size size"]]:
    """A fixed set of natural test images: each RGB photo's centre square plus two fixed crops.

    Deterministic (no randomness), so experiments/interpolation_table.py and the tests see the same inputs every run.
    """
    names: list[str] = []
    imgs: list[Tensor] = []
    for name in PHOTOS_RGB:
        p = load_photo(name)
        for tag, frac, off in (("full", 1.0, (0.5, 0.5)), ("tl", 0.5, (0.2, 0.2)), ("br", 0.5, (0.8, 0.8))):
            names.append(f"{name}:{tag}")
            imgs.append(center_square(p, size, frac, off))
    return names, torch.stack(imgs)


HELDOUT_DIR = Path(__file__).resolve().parents[1] / "data" / "heldout_photos"
# Natural photos the bundled DDPM never saw (data/heldout_photos/CARD.md): two CC BY 2.0 photos
# bundled from scikit-learn, and two scikit-image photos outside PHOTOS.
HELDOUT: tuple[str, ...] = ("china", "flower", "clock", "cell")


def load_heldout_photo(name: str, max_side: int = 256) -> Float[Tensor, " 3 H W"]:
    """One held-out photo as a [-1, 1] RGB tensor, longer side <= ``max_side`` (as :func:`load_photo`)."""
    if name not in HELDOUT:
        raise HeadscopeError(f"unknown held-out photo {name!r}; choose one of {', '.join(HELDOUT)}")
    if name in ("clock", "cell"):
        import skimage.data

        arr = np.asarray(getattr(skimage.data, name)())
        arr = np.repeat(arr[..., None], 3, axis=-1)
    else:
        from PIL import Image

        with Image.open(HELDOUT_DIR / f"{name}.jpg") as im:
            arr = np.asarray(im.convert("RGB"))
    x = torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1)
    h, w = x.shape[1:]
    scale = max_side / max(h, w)
    if scale < 1:
        x = F.interpolate(
            x[None], size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return x.clamp(0, 1) * 2 - 1


def heldout_images(size: int = 32) -> tuple[list[str], Float[Tensor, " n 3 size size"]]:
    """The held-out evaluation images: each held-out photo's centre square plus the same two fixed crops
    as :func:`evaluation_images` (deterministic)."""
    names: list[str] = []
    imgs: list[Tensor] = []
    for name in HELDOUT:
        p = load_heldout_photo(name)
        for tag, frac, off in (("full", 1.0, (0.5, 0.5)), ("tl", 0.5, (0.2, 0.2)), ("br", 0.5, (0.8, 0.8))):
            names.append(f"{name}:{tag}")
            imgs.append(center_square(p, size, frac, off))
    return names, torch.stack(imgs)


def to_unit(x: Float[Tensor, " *b 3 H W"]) -> Float[Tensor, " *b 3 H W"]:
    """[-1, 1] -> [0, 1] (clamped)."""
    return ((x + 1) / 2).clamp(0, 1)


def read_image(path: str | Path, size: int | None = None) -> Float[Tensor, " 1 3 H W"]:
    """Read a PNG/JPEG as a [-1, 1] RGB tensor; centre-square crop and resize when ``size`` is given."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise HeadscopeError(f"image {str(p)!r} does not exist; pass the path of a PNG or JPEG file")
    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise HeadscopeError(f"cannot read {str(p)!r} as an image ({e}); pass a PNG or JPEG file") from e
    x = torch.from_numpy(arr).permute(2, 0, 1) * 2 - 1
    if size is not None:
        x = center_square(x, size)
    return x[None]


def save_image(x: Float[Tensor, " 3 H W"] | Float[Tensor, " 1 3 H W"], path: str | Path) -> Path:
    """Save a [-1, 1] image tensor as PNG (parents created)."""
    from PIL import Image

    if x.ndim == 4:
        x = x[0]
    arr = (to_unit(x.detach().float().cpu()).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(p)
    return p


def image_strip(frames: Float[Tensor, " n 3 H W"], pad: int = 2, upscale: int = 1) -> Float[Tensor, " 3 H W2"]:
    """Frames side by side with ``pad`` white pixels between them, optionally nearest-upscaled."""
    if upscale > 1:
        frames = F.interpolate(frames, scale_factor=upscale, mode="nearest")
    n, c, h, w = frames.shape
    strip = torch.ones(c, h, n * w + (n - 1) * pad)
    for i in range(n):
        strip[:, :, i * (w + pad) : i * (w + pad) + w] = frames[i]
    return strip
