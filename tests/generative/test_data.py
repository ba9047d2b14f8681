"""Offline image data: photo crops, evaluation images, PNG round trip."""

from __future__ import annotations

import pytest
import torch

from generative.data import (
    PHOTOS,
    center_square,
    evaluation_images,
    image_strip,
    load_photo,
    random_crops,
    read_image,
    save_image,
)
from headscope.common import HeadscopeError


def test_photos_load_offline_and_crops_are_in_range() -> None:
    photos = [load_photo(n, max_side=96) for n in PHOTOS[:3]]
    for p in photos:
        assert p.shape[0] == 3 and max(p.shape[1:]) <= 96 and p.min() >= -1 and p.max() <= 1
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    c1, c2 = random_crops(photos, 5, 16, generator=g1), random_crops(photos, 5, 16, generator=g2)
    assert c1.shape == (5, 3, 16, 16) and torch.equal(c1, c2)
    with pytest.raises(HeadscopeError, match="unknown photo"):
        load_photo("lena")


def test_evaluation_images_are_deterministic() -> None:
    n1, x1 = evaluation_images(16)
    n2, x2 = evaluation_images(16)
    assert n1 == n2 and torch.equal(x1, x2) and x1.shape == (len(n1), 3, 16, 16)
    assert len(set(n1)) == len(n1) >= 20


def test_png_round_trip_and_strip(tmp_path) -> None:
    x = center_square(load_photo("astronaut", 64), 32)
    p = save_image(x, tmp_path / "a.png")
    y = read_image(p)
    assert y.shape == (1, 3, 32, 32)
    assert (y[0] - x).abs().max() <= 1 / 255 + 1e-6  # 8-bit quantisation only
    strip = image_strip(torch.stack([x, x, x]), pad=2, upscale=2)
    assert strip.shape == (3, 64, 3 * 64 + 2 * 2)
    with pytest.raises(HeadscopeError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(HeadscopeError, match="cannot read"):
        read_image(tmp_path / "bad.png")
