"""Co-Boosting's ensemble re-weighting, the distillation loss, and small DENSE/Co-Boosting/FedDF runs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from federated.coboosting import update_ensemble_weights
from federated.distill import kl_teacher_student
from federated.ensemble import WeightedEnsemble
from federated.protocol import FLConfig
from federated.runner import run

C = 4


def _linear(weight):
    m = nn.Linear(C, C, bias=False)
    with torch.no_grad():
        m.weight.copy_(weight)
    return m


def _case(n=64, seed=0):
    """x is a noisy one-hot of its label; the good client reads it off, the bad one predicts the next class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (n,), generator=g)
    x = F.one_hot(y, C).float() * 3 + 0.1 * torch.randn(n, C, generator=g)
    good = _linear(torch.eye(C) * 2)
    bad = _linear(torch.roll(torch.eye(C), 1, dims=0) * 2)
    return x, y, good, bad


def test_weights_move_toward_the_better_client_and_stay_in_unit_box():
    x, y, good, bad = _case()
    ens = WeightedEnsemble([bad, good])
    w0 = ens.weights.clone()
    for ep in range(1, 6):
        w = update_ensemble_weights(ens, x, y, mu=0.05, decay=0.99, epoch=ep, batch_size=16)
        assert bool(((w >= 0) & (w <= 1)).all())
    assert w[1] > w0[1] and w[0] < w0[0]
    # the re-weighted ensemble fits (x, y) better than the equal-weight one

    def ce(ws):
        return float(F.cross_entropy(WeightedEnsemble([bad, good], ws)(x), y))

    assert ce(w) < ce(w0)


def test_one_step_is_a_signed_gradient_step():
    x, y, good, bad = _case(n=16, seed=1)
    ens = WeightedEnsemble([bad, good])
    w0 = ens.weights.clone()
    mu, decay, ep = 0.03, 0.9, 2

    # independent gradient by central finite differences of the weighted-ensemble CE
    def loss(w):
        logits = (w[0] * bad(x) + w[1] * good(x)) / w.sum()
        return float(F.cross_entropy(logits, y))

    eps = 1e-3
    grad = torch.tensor([(loss(w0 + eps * e) - loss(w0 - eps * e)) / (2 * eps) for e in torch.eye(2)])
    expected = (w0 - mu * decay**ep * grad.sign()).clamp(0, 1)
    w = update_ensemble_weights(ens, x, y, mu=mu, decay=decay, epoch=ep, batch_size=16)
    torch.testing.assert_close(w, expected)


def test_huge_steps_are_clipped_to_the_unit_box():
    x, y, good, bad = _case()
    ens = WeightedEnsemble([bad, good])
    w = update_ensemble_weights(ens, x, y, mu=5.0, decay=1.0, epoch=0, batch_size=8)
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0
    assert float(w[1]) == 1.0


def test_kl_matches_the_formula():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    T = 3.0
    p, q = (t / T).softmax(-1), (s / T).softmax(-1)
    expected = (p * (p.log() - q.log())).sum(-1) * T * T
    torch.testing.assert_close(kl_teacher_student(s, t, T), expected)


@pytest.mark.parametrize("algorithm", ["dense", "coboosting", "feddf"])
def test_server_distillation_runs_and_is_deterministic(algorithm):
    cfg = FLConfig(
        algorithm=algorithm,
        clients=3,
        alpha=0.5,
        seed=2,
        local_epochs=1,
        width=4,
        kd_epochs=2,
        g_steps=2,
        synth_batch=16,
        feddf_steps=5,
    )
    cache: dict = {}
    a = run(cfg, cache=cache)
    b = run(cfg)
    assert a.accuracy == b.accuracy
    assert 0.0 <= a.accuracy <= 1.0
    if algorithm == "coboosting":
        ws = [a.extra[f"w{m}"] for m in range(3)]
        assert all(0.0 <= w <= 1.0 for w in ws)
