"""The OOD benchmark: metric conventions against independent computations, data sets, one small run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vision.ood import benchmark as bm

torch.set_num_threads(1)


def _auroc_pairs(s_id: np.ndarray, s_ood: np.ndarray) -> float:
    """P(score_ood > score_id) + ½ P(tie), over all pairs."""
    diff = s_ood[:, None] - s_id[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def _fpr95_id_positive(s_id: np.ndarray, s_ood: np.ndarray) -> float:
    """Share of OOD accepted at the loosest outlier threshold that still accepts ≥ 95% of ID."""
    accept_id = np.sort(s_id)  # accept x when s(x) <= tau
    tau = accept_id[int(np.ceil(0.95 * len(s_id))) - 1]
    return float((s_ood <= tau).mean())


def test_metrics_match_independent_computations():
    from sklearn.metrics import auc, precision_recall_curve

    rng = np.random.default_rng(0)
    s_id, s_ood = rng.normal(0, 1, 300), rng.normal(1.2, 1.5, 200)
    m = bm.ood_metrics(torch.tensor(s_id), torch.tensor(s_ood))
    assert m["auroc"] == pytest.approx(_auroc_pairs(s_id, s_ood), abs=1e-9)
    assert m["fpr95"] == pytest.approx(_fpr95_id_positive(s_id, s_ood), abs=1e-9)
    prec, rec, _ = precision_recall_curve(np.r_[np.zeros(300), np.ones(200)], np.r_[s_id, s_ood])
    assert m["aupr"] == pytest.approx(auc(rec, prec), abs=1e-6)


def test_digits_setting_sets_are_what_they_claim():
    d = bm.digits_setting(seed=3)
    assert d.n_classes == 6 and d.x_train.shape[1] == 64
    for y in (d.y_train, d.y_val, d.y_test):
        assert set(y.tolist()) == set(range(6))
    n_id = len(d.y_train) + len(d.y_val) + len(d.y_test)
    from sklearn.datasets import load_digits

    full = load_digits()
    assert n_id == int((full.target < 6).sum())
    assert len(d.ood["held-out-classes"]) == int((full.target >= 6).sum())
    torch.testing.assert_close(d.ood["inverted"], 1.0 - d.x_test)
    torch.testing.assert_close(d.ood["flipped"].view(-1, 8, 8), d.x_test.view(-1, 8, 8).flip(1))
    for name in ("noise", "textures"):
        x = d.ood[name]
        assert x.shape == d.x_test.shape and float(x.min()) >= 0.0 and float(x.max()) <= 1.0

    # train/val/test are disjoint rows of the data
    def rows(x):
        return {tuple(np.round(r, 4)) for r in x.numpy()}

    assert not rows(d.x_train) & rows(d.x_test)


def test_react_wiring_without_clipping_equals_energy():
    from pytorch_ood.detector import EnergyBased, ReAct

    lin = torch.nn.Linear(8, 3)
    z = torch.relu(torch.randn(20, 8))
    det = ReAct(backbone=None, head=lambda fm: lin(fm.flatten(1)), threshold=1e9)
    with torch.no_grad():
        torch.testing.assert_close(
            det.predict_feature_maps(z[:, :, None, None]), EnergyBased(None).predict_logits(lin(z))
        )


def test_one_small_run_scores_every_detector_on_every_set():
    rows, info = bm.run_once("digits", seed=0, epochs=15)
    assert info["id_test_accuracy"] > 1 / 6  # the classifier learned something
    got = {(r.ood_set, r.detector) for r in rows}
    assert got == {(o, d) for o in bm.OOD_SETS for d in bm.DETECTORS}
    for r in rows:
        assert 0.0 <= r.auroc <= 1.0 and 0.0 <= r.fpr95 <= 1.0 and 0.0 <= r.aupr <= 1.0
    summary = bm.summarize(rows + rows)
    table = bm.markdown_table(summary, "fpr95")
    assert all(d in table for d in bm.DETECTORS)
    assert len(bm.wins(summary)) == 2 * len(bm.OOD_SETS)


def test_unknown_names_raise_headscope_error():
    from headscope.common import HeadscopeError

    with pytest.raises(HeadscopeError, match="unknown in-distribution setting"):
        bm.load_setting("cifar10", 0)
