"""CIFAR-style image folders: ``root/[split/]<class name>/<image>.png`` → tensors.

This is the layout torchvision's ``ImageFolder`` reads and that CIFAR-10/100 exports to
PNG use (``train/airplane/0001.png``, ``test/cat/0042.png``, ...). Class indices follow the
sorted class-folder names, as in ``ImageFolder``. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.common import HeadscopeError

__all__ = ["ImageFolderData", "load_image_folder", "select_classes"]

_LAYOUT = "root/<class name>/<image>.png or root/<split>/<class name>/<image>.png (e.g. train/airplane/0001.png)"


@dataclass
class ImageFolderData:
    """Images of one split: ``images`` [N, C, H, W] float in [0, 1], ``labels`` [N] (index into ``classes``)."""

    images: Float[Tensor, " n c h w"]
    labels: Int[Tensor, " n"]
    classes: list[str]
    paths: list[str]


def load_image_folder(
    root: str | Path,
    split: Optional[str] = None,
    image_size: Optional[int] = None,
    grayscale: bool = False,
    max_per_class: Optional[int] = None,
) -> ImageFolderData:
    """Read every image under ``root[/split]/<class>/`` into one tensor.

    Args:
        split: sub-folder such as ``"train"`` or ``"test"``; ``None`` reads ``root`` itself.
        image_size: resize to ``image_size``×``image_size`` (CIFAR images are 32×32 already);
            ``None`` keeps the files' size, which must then be the same for all images.
        grayscale: one channel instead of RGB.
        max_per_class: keep only the first images of each class (sorted file names).
    """
    from torchvision import datasets, transforms

    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        hint = (
            f" (found splits: {', '.join(sorted(p.name for p in Path(root).iterdir() if p.is_dir()))})"
            if Path(root).is_dir()
            else ""
        )
        raise HeadscopeError(f"image folder {str(base)!r} does not exist{hint}; expected {_LAYOUT}")
    tfs = []
    if grayscale:
        tfs.append(transforms.Grayscale(num_output_channels=1))
    if image_size is not None:
        if image_size < 1:
            raise HeadscopeError(f"image_size must be >= 1, got {image_size}")
        tfs.append(transforms.Resize((image_size, image_size), antialias=True))
    tfs.append(transforms.ToTensor())
    try:
        ds = datasets.ImageFolder(str(base), transform=transforms.Compose(tfs))
    except FileNotFoundError as e:
        raise HeadscopeError(f"no images found under {str(base)!r}: {e}; expected {_LAYOUT}") from e
    samples = ds.samples
    if max_per_class is not None:
        kept: dict[int, int] = {}
        idx = []
        for i, (_, y) in enumerate(samples):
            if kept.get(y, 0) < max_per_class:
                kept[y] = kept.get(y, 0) + 1
                idx.append(i)
    else:
        idx = list(range(len(samples)))
    images = []
    for i in idx:
        img, _ = ds[i]
        images.append(img)
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) > 1:
        raise HeadscopeError(
            f"images under {str(base)!r} have different sizes {sorted(shapes)[:3]}...; "
            "pass image_size (--image-size) to resize them"
        )
    return ImageFolderData(
        images=torch.stack(images),
        labels=torch.tensor([samples[i][1] for i in idx], dtype=torch.long),
        classes=list(ds.classes),
        paths=[samples[i][0] for i in idx],
    )


def select_classes(data: ImageFolderData, names: Sequence[str]) -> tuple[ImageFolderData, ImageFolderData]:
    """Split into (the named classes, relabelled 0..len(names)-1 in the given order; all others)."""
    unknown = [n for n in names if n not in data.classes]
    if unknown:
        raise HeadscopeError(f"classes {unknown} are not in the folder; it has {data.classes}")
    if not names:
        raise HeadscopeError("name at least one in-distribution class")
    index = {data.classes.index(n): j for j, n in enumerate(names)}
    keep = torch.tensor([int(y) in index for y in data.labels], dtype=torch.bool)
    new_labels = torch.tensor([index.get(int(y), -1) for y in data.labels], dtype=torch.long)
    kept_paths = [p for p, k in zip(data.paths, keep.tolist()) if k]
    rest_paths = [p for p, k in zip(data.paths, keep.tolist()) if not k]
    rest_classes = [c for i, c in enumerate(data.classes) if i not in index]
    rest_index = {data.classes.index(c): j for j, c in enumerate(rest_classes)}
    rest_labels = torch.tensor([rest_index[int(y)] for y in data.labels[~keep]], dtype=torch.long)
    return (
        ImageFolderData(data.images[keep], new_labels[keep], list(names), kept_paths),
        ImageFolderData(data.images[~keep], rest_labels, rest_classes, rest_paths),
    )
