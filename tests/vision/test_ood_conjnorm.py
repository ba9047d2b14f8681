"""ConjNorm: closed forms, scale invariance, the importance-sampling partition estimate, interface."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headscope.common import HeadscopeError
from vision.ood.conjnorm import (
    ConjNorm,
    bregman_divergence,
    conj_similarity,
    conjugate_exponent,
    grad_psi,
    importance_sampling_log_partition,
    lp_normalize,
    psi,
    select_p,
)

torch.set_num_threads(1)


def _blobs(n_per: int = 60, d: int = 16, k: int = 4, seed: int = 0):
    """Non-negative (ReLU-like) class clusters, as penultimate features are."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(k, d, generator=g, dtype=torch.float64) * 3
    x = torch.cat([torch.relu(c + 0.4 * torch.randn(n_per, d, generator=g, dtype=torch.float64)) for c in centers])
    y = torch.arange(k).repeat_interleave(n_per)
    return x, y


def test_p2_reduces_to_squared_euclidean():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    mu = torch.randn(3, 5, generator=g, dtype=torch.float64)
    sq = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    assert conjugate_exponent(2.0) == 2.0
    torch.testing.assert_close(bregman_divergence(x, mu, 2.0), 0.5 * sq, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(
        conj_similarity(x, mu, 2.0), -0.5 * sq + 0.5 * (mu**2).sum(-1)[None, :], atol=1e-9, rtol=1e-9
    )


@pytest.mark.parametrize("q", [1.3, 1.7, 2.5, 3.4])
def test_grad_psi_matches_autograd_and_bregman_properties(q):
    g = torch.Generator().manual_seed(2)
    mu = torch.randn(4, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    (auto,) = torch.autograd.grad(psi(mu, q).sum(), mu)
    torch.testing.assert_close(grad_psi(mu.detach(), q), auto, atol=1e-6, rtol=1e-6)
    mu = mu.detach()
    x = torch.randn(9, 6, generator=g, dtype=torch.float64)
    assert (bregman_divergence(x, mu, q) >= -1e-12).all()
    torch.testing.assert_close(
        torch.diagonal(bregman_divergence(mu, mu, q)), torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0
    )
    # d = -D + ½‖μ‖_q²  (the x-independent terms dropped from the divergence)
    half_mu = 0.5 * torch.linalg.vector_norm(mu, ord=q, dim=-1) ** 2
    torch.testing.assert_close(conj_similarity(x, mu, q), -bregman_divergence(x, mu, q) + half_mu[None, :])


def test_score_matches_independent_numpy_formula():
    x, y = _blobs()
    xt, _ = _blobs(n_per=5, seed=9)
    p, t = 2.5, 0.1
    det = ConjNorm(p=p, temperature=t).fit_features(x, y)
    # independent computation in numpy, written from the paper's formula
    q = p / (p - 1)
    X, Y, XT = x.numpy(), y.numpy(), xt.numpy()

    def norm_p(a):
        return a / (np.sum(np.abs(a) ** p, axis=-1, keepdims=True) ** (1 / p) + 1e-10)

    def nq(a):
        return np.sum(np.abs(a) ** q, axis=-1) ** (1 / q)

    mus = norm_p(np.stack([X[Y == k].mean(0) for k in range(4)]))
    tilde = mus * np.abs(mus) ** (q - 2) / nq(mus)[:, None] ** (q - 2)

    def dist(a):
        return -0.5 * nq(a)[:, None] ** 2 + a @ tilde.T

    z = np.exp(dist(norm_p(X)) / t).sum(0)
    s = np.log((np.exp(dist(norm_p(XT)) / t) / z).sum(1))
    np.testing.assert_allclose(det.score(xt).numpy(), s, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(det.predict_features(xt), -det.score(xt))


def test_scores_invariant_to_feature_scaling_where_the_maths_says_so():
    x, y = _blobs()
    xt, _ = _blobs(n_per=10, seed=5)
    det = ConjNorm(p=2.2, temperature=0.05).fit_features(x, y)
    base = det.score(xt)
    # per-sample positive rescaling of test features: removed by the L_p normalisation
    c = torch.exp(torch.randn(xt.shape[0], 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2)
    torch.testing.assert_close(det.score(c * xt), base, atol=1e-8, rtol=1e-8)
    # one global positive scale of train and test features: prototypes and Ẑ unchanged too
    det2 = ConjNorm(p=2.2, temperature=0.05).fit_features(13.7 * x, y)
    torch.testing.assert_close(det2.score(13.7 * xt), base, atol=1e-8, rtol=1e-8)
    # where the maths says no: a sign flip is not removed by normalisation, and the raw
    # similarity d(x, μ) is not scale invariant
    assert not torch.allclose(det.score(-xt), base)
    mu = lp_normalize(x[:4], 2.2)
    assert not torch.allclose(conj_similarity(3 * xt, mu, 1.8), conj_similarity(xt, mu, 1.8))


def test_is_estimator_mean_matches_exact_partition_sum():
    """On a 15-point support, Ẑ from a non-uniform proposal is unbiased for Σ exp(d/T)."""
    g = torch.Generator().manual_seed(4)
    q, t = conjugate_exponent(2.5), 0.3
    support = lp_normalize(torch.rand(15, 3, generator=g, dtype=torch.float64), 2.5)
    mu = lp_normalize(torch.rand(2, 3, generator=g, dtype=torch.float64), 2.5)
    exact = torch.exp(conj_similarity(support, mu, q) / t).sum(0)  # exact partition sum, [2]
    prop = torch.distributions.Dirichlet(torch.ones(15, dtype=torch.float64) * 2).sample()
    reps, m = 300, 40
    estimates, ses = [], []
    for _ in range(reps):
        idx = torch.multinomial(prop, m, replacement=True, generator=g)
        est = importance_sampling_log_partition(support[idx], mu, q, t, log_proposal=prop[idx].log())
        estimates.append(est.z)
        ses.append(est.se)
    z = torch.stack(estimates)  # [reps, 2]
    mean, se_of_mean = z.mean(0), z.std(0) / math.sqrt(reps)
    assert ((mean - exact).abs() < 4 * se_of_mean).all(), (mean, exact, se_of_mean)
    # the per-run standard error it reports estimates the spread of Ẑ across runs
    ratio = torch.stack(ses).pow(2).mean(0).sqrt() / z.std(0)
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio


def test_default_partition_is_exact_sum_over_training_set_and_bootstrap_is_unbiased_for_it():
    x, y = _blobs(n_per=30)
    det = ConjNorm(p=2.2, temperature=0.05).fit_features(x, y)
    q = conjugate_exponent(2.2)
    sims = conj_similarity(lp_normalize(x.double(), 2.2), det.prototypes, q) / 0.05
    torch.testing.assert_close(det.partition.log_z, torch.logsumexp(sims, 0))
    boots = torch.stack(
        [
            ConjNorm(p=2.2, temperature=0.05, n_is_samples=120, seed=s).fit_features(x, y).partition.z
            for s in range(200)
        ]
    )
    exact = det.partition.z
    assert ((boots.mean(0) - exact).abs() < 4 * boots.std(0) / math.sqrt(200)).all()


def test_class_proposal_is_the_exact_sum_over_each_class():
    x, y = _blobs(n_per=30)
    y = torch.where(torch.arange(len(y)) % 7 == 0, 0, y)  # unbalanced classes
    det = ConjNorm(p=1.8, temperature=0.07, proposal="class").fit_features(x, y)
    q = conjugate_exponent(1.8)
    sims = conj_similarity(lp_normalize(x.double(), 1.8), det.prototypes, q) / 0.07
    for k in range(4):
        torch.testing.assert_close(det.partition.log_z[k], torch.logsumexp(sims[y == k, k], 0))
    with pytest.raises(HeadscopeError, match="proposal"):
        ConjNorm(proposal="other")


@pytest.mark.parametrize("proposal", ["all", "class"])
def test_select_p_uses_held_out_id_only_and_picks_the_best_grid_point(proposal):
    x, y = _blobs(n_per=40, seed=6)
    xv, yv = _blobs(n_per=15, seed=7)
    res = select_p(x, y, xv, yv, p_grid=(1.5, 2.0, 3.0), t_grid=(0.05, 0.5), proposal=proposal)
    assert len(res.table) == 6
    assert max(res.table, key=lambda r: r[2])[:2] == (res.p, res.temperature)
    # recompute one grid point independently: mean log posterior of the true class
    p, t = 3.0, 0.5
    det = ConjNorm(p=p, temperature=t, proposal=proposal).fit_features(x, y)
    crit = torch.log_softmax(det.class_log_density(xv), -1).gather(1, yv[:, None]).mean().item()
    assert math.isclose(dict(((a, b), c) for a, b, c in res.table)[(p, t)], crit, rel_tol=1e-9)
    det_auto = ConjNorm(p=None, p_grid=(1.5, 2.0, 3.0), t_grid=(0.05, 0.5), proposal=proposal).fit_features(
        x, y, xv, yv
    )
    assert (det_auto.p_, det_auto.temperature) == (res.p, res.temperature)


def test_separates_far_points_with_pytorch_ood_sign_and_metrics():
    from pytorch_ood.metrics.functional import auroc

    x, y = _blobs(n_per=50, seed=11)
    xt, _ = _blobs(n_per=20, seed=11)
    g = torch.Generator().manual_seed(12)
    far = torch.relu(torch.randn(80, 16, generator=g, dtype=torch.float64)) * 3  # no cluster structure
    det = ConjNorm(p=2.2, temperature=0.05).fit_features(x, y)
    scores = torch.cat([det.predict_features(xt), det.predict_features(far)])
    labels = torch.cat([torch.zeros(len(xt)), -torch.ones(len(far))]).long()
    assert auroc(scores, labels) > 0.9


def test_bad_input_raises_headscope_error():
    x, y = _blobs(n_per=5)
    with pytest.raises(HeadscopeError, match="p > 1"):
        ConjNorm(p=1.0)
    with pytest.raises(HeadscopeError, match="no training features"):
        ConjNorm().fit_features(x, torch.where(y == 1, 2, y))
    with pytest.raises(HeadscopeError, match=r"\[N, D\]"):
        ConjNorm().fit_features(x[:, :, None], y)
    with pytest.raises(Exception):
        ConjNorm().predict_features(x)


def test_fit_from_loader_through_encoder_matches_fit_features():
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(21)
    enc = torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.ReLU()).double()
    x_in = torch.randn(120, 5, generator=g, dtype=torch.float64)
    y = torch.arange(3).repeat(40)
    x_in = x_in + 2.0 * torch.nn.functional.one_hot(y, 5).double()
    with torch.no_grad():
        z = enc(x_in)
    a = ConjNorm(encoder=enc, p=2.5, temperature=0.1).fit(DataLoader(TensorDataset(x_in, y), batch_size=32))
    b = ConjNorm(p=2.5, temperature=0.1).fit_features(z, y)
    torch.testing.assert_close(a.partition.log_z, b.partition.log_z)
    torch.testing.assert_close(a.predict(x_in[:10]), b.predict_features(z[:10]))
    with pytest.raises(HeadscopeError, match="needs an encoder"):
        ConjNorm().fit(DataLoader(TensorDataset(x_in, y)))
