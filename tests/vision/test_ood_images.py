"""CIFAR-style image folder loader, on a tiny folder of PNGs written here, and its OOD setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from headscope.common import HeadscopeError
from vision.data.images import load_image_folder, select_classes

torch.set_num_threads(1)

CLASSES = ["airplane", "cat", "dog", "ship"]  # written out of order below; sorted by the loader


def _write_folder(root, n_per=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    written = {}
    for split in ("train", "test"):
        for cls in ("ship", "cat", "airplane", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n_per):
                arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i:04d}.png")
                written[(split, cls, i)] = arr
    return written


def test_loads_pixels_labels_and_classes_exactly(tmp_path):
    written = _write_folder(tmp_path)
    data = load_image_folder(tmp_path, split="train")
    assert data.classes == CLASSES
    assert data.images.shape == (4 * 6, 3, 8, 8) and data.images.dtype == torch.float32
    for img, y, path in zip(data.images, data.labels, data.paths):
        cls, i = data.classes[int(y)], int(path[-8:-4])
        assert f"/train/{cls}/" in path
        expect = torch.from_numpy(written[("train", cls, i)]).permute(2, 0, 1).float() / 255.0
        torch.testing.assert_close(img, expect)


def test_resize_grayscale_and_cap(tmp_path):
    _write_folder(tmp_path)
    data = load_image_folder(tmp_path, split="test", image_size=4, grayscale=True, max_per_class=2)
    assert data.images.shape == (8, 1, 4, 4)
    assert torch.bincount(data.labels).tolist() == [2, 2, 2, 2]


def test_select_classes_relabels_in_given_order(tmp_path):
    _write_folder(tmp_path)
    data = load_image_folder(tmp_path, split="train")
    id_part, rest = select_classes(data, ["dog", "airplane"])
    assert id_part.classes == ["dog", "airplane"] and rest.classes == ["cat", "ship"]
    for part in (id_part, rest):
        for y, path in zip(part.labels, part.paths):
            assert f"/{part.classes[int(y)]}/" in path
    assert len(id_part.labels) + len(rest.labels) == len(data.labels)


def test_bad_folders_raise_with_the_layout(tmp_path):
    with pytest.raises(HeadscopeError, match="expected root"):
        load_image_folder(tmp_path / "missing")
    _write_folder(tmp_path)
    with pytest.raises(HeadscopeError, match="found splits: test, train"):
        load_image_folder(tmp_path, split="val")
    Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(tmp_path / "train" / "cat" / "odd.png")
    with pytest.raises(HeadscopeError, match="image_size"):
        load_image_folder(tmp_path, split="train")
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    with pytest.raises(HeadscopeError, match="no images found"):
        load_image_folder(empty)


def test_folder_setting_builds_id_and_ood_sets(tmp_path):
    from vision.ood.benchmark import folder_setting

    _write_folder(tmp_path, n_per=10)
    d = folder_setting(str(tmp_path), seed=0, id_classes=["cat", "ship"])
    assert d.n_classes == 2 and d.x_train.shape[1] == 3 * 8 * 8
    assert len(d.ood["held-out-classes"]) == 20  # airplane + dog from train/
    imgs = d.x_test.view(-1, 3, 8, 8)
    torch.testing.assert_close(d.ood["flipped"].view(-1, 3, 8, 8), imgs.flip(2))
    torch.testing.assert_close(d.ood["inverted"], 1.0 - d.x_test)
    assert d.ood["textures"].shape == d.x_test.shape


def test_every_detector_runs_on_a_folder(tmp_path):
    from vision.ood import benchmark as bm

    _write_folder(tmp_path, n_per=10)
    rows, info = bm.run_once(str(tmp_path), seed=1, epochs=3, id_classes=["cat", "ship"])
    assert {r.detector for r in rows} == set(bm.DETECTORS)
    assert all(np.isfinite([r.auroc, r.aupr, r.fpr95]).all() for r in rows)
