"""HSI loaders (every .mat layout, written here in the real format), the synthetic scene and preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from headscope.common import HeadscopeError
from vision.data.hsi import (
    DATASETS,
    extract_patches,
    load_hsi,
    minmax_normalize_pair,
    mirror_pad,
    sample_train_test,
    synthetic_scene,
)

H, W, C = 7, 6, 4


def _write(root: Path, name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write a tiny dataset in ``name``'s layout; return (t1, t2, raw labels, expected labels)."""
    (f1, k1), (f2, k2), (fl, kl), changed, unchanged = DATASETS[name]
    t1 = rng.random((H, W, C)).astype(np.float64) * 1000
    t2 = rng.random((H, W, C)).astype(np.float64) * 1000
    codes = [changed, unchanged] + ([0] if name in ("bayarea", "barbara") else [])
    raw = rng.choice(codes, size=(H, W)).astype(np.uint8)
    want = np.where(raw == changed, 1, np.where(raw == unchanged, 0, -1))
    files: dict[str, dict[str, np.ndarray]] = {}
    for f, k, v in ((f1, k1, t1), (f2, k2, t2), (fl, kl, raw)):
        files.setdefault(f, {})[k] = v
    for f, d in files.items():
        savemat(str(root / f), d)
    return t1, t2, raw, want


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_mat_layout_loads(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(sorted(DATASETS).index(name))
    t1, t2, raw, want = _write(tmp_path, name, rng)
    scene = load_hsi(name, tmp_path)
    np.testing.assert_allclose(scene.t1, t1.astype(np.float32))
    np.testing.assert_allclose(scene.t2, t2.astype(np.float32))
    np.testing.assert_array_equal(scene.label, want)
    assert scene.t1.dtype == np.float32 and scene.label.dtype == np.int8
    assert set(np.unique(scene.label)) <= {-1, 0, 1}


def test_river_uses_255_for_change(tmp_path: Path) -> None:
    _, _, raw, _ = _write(tmp_path, "river", np.random.default_rng(0))
    scene = load_hsi("river", tmp_path)
    assert ((raw == 255) == (scene.label == 1)).all() and ((raw == 0) == (scene.label == 0)).all()


def test_loader_finds_files_in_subfolders_and_aliases(tmp_path: Path) -> None:
    sub = tmp_path / "USA"
    sub.mkdir()
    _write(sub, "hermiston", np.random.default_rng(1))
    assert load_hsi("USA", tmp_path).name == "hermiston"


def test_loader_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(HeadscopeError, match="not found"):
        load_hsi("farmland", tmp_path)
    with pytest.raises(HeadscopeError, match="unknown HSI dataset"):
        load_hsi("nope", tmp_path)
    savemat(str(tmp_path / "farm06.mat"), {"wrong": np.zeros((2, 2, 2))})
    with pytest.raises(HeadscopeError, match="no variable 'imgh'"):
        load_hsi("farmland", tmp_path)


def test_synthetic_scene_is_reproducible_and_has_known_changes() -> None:
    a = synthetic_scene(24, 20, 12, n_changes=3, seed=3)
    b = synthetic_scene(24, 20, 12, n_changes=3, seed=3)
    np.testing.assert_array_equal(a.t1, b.t1)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.t1.shape == (24, 20, 12) and a.label.shape == (24, 20)
    assert 0 < a.label.mean() < 1
    assert abs(a.label.mean() - a.meta["changed_fraction"]) < 1e-12
    # the mask is exactly the union of the recorded ellipses
    yy, xx = np.mgrid[0:24, 0:20]
    union = np.zeros((24, 20), dtype=bool)
    for r in a.meta["regions"]:
        (cy, cx), (ry, rx), th = r["center"], r["radii"], r["angle"]
        u = ((xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)) / rx
        v = (-(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)) / ry
        union |= u**2 + v**2 <= 1
    np.testing.assert_array_equal(union, a.label == 1)
    # changed pixels differ between dates more than unchanged ones
    d = np.abs(a.t1 - a.t2).mean(-1)
    assert d[a.label == 1].mean() > d[a.label == 0].mean()


def test_minmax_over_both_dates() -> None:
    rng = np.random.default_rng(0)
    t1, t2 = rng.random((5, 4, 3)) * 10, rng.random((5, 4, 3)) * 10 + 5
    n1, n2 = minmax_normalize_pair(t1, t2)
    for c in range(3):
        lo, hi = min(t1[..., c].min(), t2[..., c].min()), max(t1[..., c].max(), t2[..., c].max())
        np.testing.assert_allclose(n1[..., c], (t1[..., c] - lo) / (hi - lo), rtol=1e-5)
        np.testing.assert_allclose(n2[..., c], (t2[..., c] - lo) / (hi - lo), rtol=1e-5)


def test_mirror_pad_and_patches_match_direct_indexing() -> None:
    img = np.arange(6 * 5 * 2, dtype=np.float32).reshape(6, 5, 2)
    pad = mirror_pad(img, 5)
    assert pad.shape == (10, 9, 2)
    # the official mirror: column i (< 2) of the padded image is column (2 - i - 1) of the input
    np.testing.assert_array_equal(pad[2:8, 0], img[:, 1])
    np.testing.assert_array_equal(pad[2:8, 1], img[:, 0])
    np.testing.assert_array_equal(pad[0, 2:7], img[1])
    pos = np.array([[0, 0], [3, 2], [5, 4]])
    got = extract_patches(pad, pos, 5)
    assert got.shape == (3, 2, 25)
    for n, (r, c) in enumerate(pos):
        for dr in range(5):
            for dc in range(5):
                np.testing.assert_array_equal(got[n, :, dr * 5 + dc], pad[r + dr, c + dc])
    # the centre of each patch is the pixel itself
    np.testing.assert_array_equal(got[:, :, 12], img[pos[:, 0], pos[:, 1]])


def test_sampling_takes_one_percent_per_class_and_disjoint() -> None:
    label = np.zeros((50, 40), dtype=np.int8)
    label[:10] = 1
    label[45:, :5] = -1
    tr, ytr, te, yte = sample_train_test(label, 0.01, seed=0)
    n1, n0 = int((label == 1).sum()), int((label == 0).sum())
    assert (ytr == 1).sum() == int(n1 * 0.01) and (ytr == 0).sum() == int(n0 * 0.01)
    assert len(tr) + len(te) == n0 + n1
    assert not set(map(tuple, tr)) & set(map(tuple, te))
    np.testing.assert_array_equal(label[tr[:, 0], tr[:, 1]], ytr)
    np.testing.assert_array_equal(label[te[:, 0], te[:, 1]], yte)


def test_loader_rejects_nan_and_inf_naming_the_file(tmp_path: Path) -> None:
    t1, *_ = _write(tmp_path, "hermiston", np.random.default_rng(0))
    assert load_hsi("hermiston", tmp_path).t1.shape == t1.shape  # finite: loads
    t1[0, 0, 0], t1[1, 2, 3] = np.inf, np.nan
    mat = {"T1": t1, "T2": np.ones_like(t1), "Binary": np.zeros((H, W), np.uint8)}
    savemat(str(tmp_path / "USA_Change_Dataset.mat"), mat)
    with pytest.raises(HeadscopeError, match=r"USA_Change_Dataset.mat\['T1'\] holds 2 NaN/inf values"):
        load_hsi("hermiston", tmp_path)
