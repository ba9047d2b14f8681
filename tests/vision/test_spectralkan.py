"""SpectralKAN: size, structure, metrics against scikit-learn, and a tiny end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score, f1_score

from headscope.common import HeadscopeError
from vision.data.hsi import synthetic_scene
from vision.spectralkan import (
    CNNBaseline,
    MLPBaseline,
    SpectralKAN,
    change_map,
    change_metrics,
    evaluate,
    predict,
    prepare_scene,
    train_change_model,
)

torch.set_num_threads(1)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_spectralkan_has_about_3_8k_parameters_at_224_bands() -> None:
    G_K = 5 + 3
    spatial = (2 * 25 * 16 + 25 * G_K) + (2 * 16 * 1 + 16 * G_K)
    spectral = 2 * 224 * 2 + 224 * G_K
    n = n_params(SpectralKAN(224))
    assert n == spatial + spectral
    assert 3750 <= n <= 3850  # "≈3.8K parameters at 224 bands"


@pytest.mark.parametrize("bands", [50, 224])
def test_baselines_are_of_similar_size(bands: int) -> None:
    k = n_params(SpectralKAN(bands))
    assert abs(n_params(MLPBaseline(bands)) - k) / k < 0.1
    if bands == 224:
        assert abs(n_params(CNNBaseline(bands)) - k) / k < 0.1


def test_spatial_encoder_is_shared_across_bands() -> None:
    torch.manual_seed(0)
    m = SpectralKAN(6)
    x = torch.rand(3, 6, 25) * 2 - 1
    perm = torch.tensor([5, 2, 0, 1, 4, 3])
    torch.testing.assert_close(m.encode(x[:, perm]), m.encode(x)[:, perm])
    assert m(x).shape == (3, 2)


def test_wrong_band_count_raises() -> None:
    with pytest.raises(HeadscopeError, match="bands"):
        SpectralKAN(10)(torch.zeros(2, 11, 25))


def test_change_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.where(rng.random(500) < 0.8, y, 1 - y)
    m = change_metrics(y, p)
    assert m.oa == pytest.approx(accuracy_score(y, p))
    assert m.aa == pytest.approx(balanced_accuracy_score(y, p))
    assert m.kappa == pytest.approx(cohen_kappa_score(y, p))
    assert m.f1 == pytest.approx(f1_score(y, p))


def test_tiny_training_beats_chance_and_change_map_is_consistent() -> None:
    scene = synthetic_scene(32, 32, 16, n_changes=8, noise=0.01, seed=1)
    prep = prepare_scene(scene, patch=5, train_fraction=0.1, seed=0)
    x = prep.diff_patches(prep.train_pos)
    y = torch.from_numpy(prep.train_y)
    torch.manual_seed(0)
    model = SpectralKAN(16)
    losses = train_change_model(model, x, y, epochs=30, lr=1e-2, batch_size=16, seed=0, show_progress=False)
    assert losses[-1] < losses[0]
    metrics = evaluate(model, prep)
    assert metrics.kappa > 0.0  # a constant ("no change") prediction has kappa 0
    cmap = change_map(model, prep)
    assert cmap.shape == (32, 32)
    np.testing.assert_array_equal(cmap[prep.test_pos[:, 0], prep.test_pos[:, 1]], predict(model, prep, prep.test_pos))


def test_state_dict_layout_matches_the_official_release() -> None:
    """Shapes and knots of the official ``log/SpectralKAN_farmland.pth`` (yanhengwang-heu/SpectralKAN,
    224 bands), read off that file: per layer ``base_weight (out, in)``, ``spline_weight (1, in, 8)``,
    ``spline_scaler (out, in)``, ``grid (in, 12)`` = the fixed knots −2.2, −1.8, …, 2.2; nothing
    else (no biases, no normalisation layers, no grid update during training)."""
    sd = SpectralKAN(224).state_dict()
    want = {}
    for name, (a, b) in {
        "spatial.layers.0": (25, 16),
        "spatial.layers.1": (16, 1),
        "spectral.layers.0": (224, 2),
    }.items():
        want |= {
            f"{name}.base_weight": (b, a),
            f"{name}.spline_weight": (1, a, 8),
            f"{name}.spline_scaler": (b, a),
            f"{name}.grid": (a, 12),
        }
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    knots = torch.arange(-3, 9) * 0.4 - 1.0
    for k, v in sd.items():
        if k.endswith("grid"):
            torch.testing.assert_close(v, knots.expand_as(v).float())
