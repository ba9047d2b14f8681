"""ConjNorm: out-of-distribution detection by a Bregman-divergence density with a tractable normaliser.

Peng et al., "ConjNorm: Tractable Density Estimation for Out-of-Distribution Detection",
ICLR 2024 (§3). Penultimate features are L_p-normalised; each class k has a prototype μ_k
(the L_p-normalised class mean). With the conjugate exponent q = p / (p - 1) and the
convex generator ψ(x) = ½‖x‖_q², the class-conditional density is

    p(x | k) = exp(-D_ψ(x, μ_k) / T) / Z_k,

where D_ψ is the Bregman divergence of ψ. Dropping the terms of D_ψ that do not depend on x
(they are absorbed by Z_k) leaves the "similarity"

    d(x, μ) = -½‖x‖_q² + ⟨x, ∇ψ(μ)⟩,   ∇ψ(μ) = μ|μ|^{q-2} / ‖μ‖_q^{q-2},

and the in-distribution score

    S(x) = log Σ_k exp(d(x, μ_k) / T) / Ẑ_k,

higher = more in-distribution. Ẑ_k = ∫ exp(d(x, μ_k)/T) dx is estimated by importance
sampling (§3.3): with draws x_m from a proposal q(x),
Ẑ_k = (1/M) Σ_m exp(d(x_m, μ_k)/T) / q(x_m). The paper (and its code) draws the x_m from the
training features and treats the proposal as uniform over them, so that q(x_m) = 1/N and
Ẑ_k = (N/M) Σ_m exp(d(x_m, μ_k)/T); with all N training features used once this is the exact
partition sum over the training set, which is what `ConjNorm` uses by default
(``proposal="all"``, as in the official CIFAR scripts). The official ImageNet script instead
draws the samples for Ẑ_k from the training features of class k only (``proposal="class"``):
Ẑ_k = Σ_{i: y_i = k} exp(d(x_i, μ_k)/T).

Sign convention. pytorch-ood detectors return *outlier* scores (higher = more OOD).
`ConjNorm.predict_features` / `predict` therefore return ``-S(x)``; `ConjNorm.score` returns
the paper's ``S(x)`` (higher = more in-distribution).

The official code hard-codes (p, T) = (2.2, 0.05) for CIFAR-10, (2.5, 0.08) for CIFAR-100 and
(1.5, 0.0005) for ImageNet ResNet-50. Here p (and optionally T) can instead be chosen on
held-out *in-distribution* data, see `select_p`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from jaxtyping import Float, Int
from pytorch_ood.api import FeaturesDetector, RequiresFittingException
from torch import Tensor

from headscope.common import HeadscopeError

_EPS = 1e-10


def conjugate_exponent(p: float) -> float:
    """The Hölder conjugate q = p / (p - 1) of p > 1 (1/p + 1/q = 1)."""
    if not p > 1.0 or not math.isfinite(p):
        raise HeadscopeError(
            f"ConjNorm needs a finite norm order p > 1, got p={p}; try p=2 (Euclidean) or p in [1.5, 3]"
        )
    return p / (p - 1.0)


def lp_normalize(x: Float[Tensor, " n d"], p: float) -> Float[Tensor, " n d"]:
    """Divide each row by its L_p norm: x / ‖x‖_p (ConjNorm §3, feature normalisation)."""
    return x / (torch.linalg.vector_norm(x, ord=p, dim=-1, keepdim=True) + _EPS)


def psi(x: Float[Tensor, " n d"], q: float) -> Float[Tensor, " n"]:
    """The generator ψ(x) = ½‖x‖_q² of the Bregman divergence."""
    return 0.5 * torch.linalg.vector_norm(x, ord=q, dim=-1) ** 2


def grad_psi(mu: Float[Tensor, " k d"], q: float) -> Float[Tensor, " k d"]:
    """∇ψ(μ) = μ|μ|^{q-2} / ‖μ‖_q^{q-2} for ψ = ½‖·‖_q², row-wise.

    Written as sign(μ)|μ|^{q-1} so that it stays finite at μ_i = 0 when q < 2.
    """
    norm = torch.linalg.vector_norm(mu, ord=q, dim=-1, keepdim=True) + _EPS
    return torch.sign(mu) * mu.abs() ** (q - 1.0) / norm ** (q - 2.0)


def conj_similarity(x: Float[Tensor, " n d"], mu: Float[Tensor, " k d"], q: float) -> Float[Tensor, " n k"]:
    """d(x, μ_k) = -½‖x‖_q² + ⟨x, ∇ψ(μ_k)⟩ for every pair of rows (ConjNorm Eq. for the score).

    Equals -D_ψ(x, μ_k) + ½‖μ_k‖_q², i.e. the negative Bregman divergence up to a term that
    is constant in x. At q = 2: d(x, μ) = -½‖x - μ‖² + ½‖μ‖².
    """
    return -psi(x, q)[:, None] + x @ grad_psi(mu, q).T


def bregman_divergence(x: Float[Tensor, " n d"], mu: Float[Tensor, " k d"], q: float) -> Float[Tensor, " n k"]:
    """D_ψ(x, μ) = ψ(x) - ψ(μ) - ⟨x - μ, ∇ψ(μ)⟩ for ψ = ½‖·‖_q², every pair of rows.

    Non-negative, zero at x = μ, and ½‖x - μ‖² at q = 2.
    """
    g = grad_psi(mu, q)
    inner_mu = (mu * g).sum(-1)  # ⟨μ, ∇ψ(μ)⟩ = ‖μ‖_q² (Euler: ψ is 2-homogeneous)
    return psi(x, q)[:, None] - psi(mu, q)[None, :] - x @ g.T + inner_mu[None, :]


@dataclass
class PartitionEstimate:
    """Importance-sampling estimate of log Z_k for each class, with its standard error.

    ``log_z[k]`` = log Ẑ_k; ``rel_se[k]`` = SE(Ẑ_k) / Ẑ_k (the relative standard error of the
    estimate of Z_k itself, not of its log); ``n_samples`` = M.
    """

    log_z: Float[Tensor, " k"]
    rel_se: Float[Tensor, " k"]
    n_samples: int

    @property
    def z(self) -> Float[Tensor, " k"]:
        return self.log_z.exp()

    @property
    def se(self) -> Float[Tensor, " k"]:
        return self.rel_se * self.z


def importance_sampling_log_partition(
    samples: Float[Tensor, " m d"],
    prototypes: Float[Tensor, " k d"],
    q: float,
    temperature: float,
    log_proposal: Optional[Float[Tensor, " m"]] = None,
) -> PartitionEstimate:
    """Estimate Z_k = Σ_x exp(d(x, μ_k)/T) (or ∫) by importance sampling from ``samples`` ~ proposal.

    Ẑ_k = (1/M) Σ_m w_mk with w_mk = exp(d(x_m, μ_k)/T) / q(x_m) (ConjNorm §3.3). The estimator
    is unbiased for the sum (integral) of exp(d/T) over the proposal's support; its standard
    error is std_m(w_mk) / √M. Computed in log space, so that small T does not overflow.

    ``log_proposal``: log q(x_m) per sample; ``None`` means the proposal is uniform over a
    support of M points (log q = -log M), which makes Ẑ_k = Σ_m exp(d(x_m, μ_k)/T) — the
    estimator of the paper's code when the samples are the training features.
    """
    m = samples.shape[0]
    if m == 0:
        raise HeadscopeError("importance sampling needs at least one sample; pass the training features")
    if temperature <= 0:
        raise HeadscopeError(f"temperature must be > 0, got {temperature}")
    if log_proposal is None:
        log_proposal = torch.full((m,), -math.log(m), dtype=samples.dtype, device=samples.device)
    log_w = conj_similarity(samples, prototypes, q) / temperature - log_proposal[:, None]  # [m, k]
    log_z = torch.logsumexp(log_w, dim=0) - math.log(m)
    # relative SE: std(w) / (mean(w) sqrt(M)), with w scaled by its mean (= exp(log_w - log_z))
    w_rel = (log_w - log_z[None, :]).exp()
    if m > 1:
        rel_se = w_rel.std(dim=0, unbiased=True) / math.sqrt(m)
    else:
        rel_se = torch.full_like(log_z, float("inf"))
    return PartitionEstimate(log_z=log_z, rel_se=rel_se, n_samples=m)


def class_prototypes(
    features: Float[Tensor, " n d"], labels: Int[Tensor, " n"], n_classes: int, p: float
) -> Float[Tensor, " k d"]:
    """μ_k = normalise_p(mean of the raw features of class k) (as the official code does)."""
    protos = []
    for k in range(n_classes):
        mask = labels == k
        if not bool(mask.any()):
            raise HeadscopeError(
                f"class {k} has no training features; labels must be 0..{n_classes - 1} with every class present"
            )
        protos.append(features[mask].mean(0))
    return lp_normalize(torch.stack(protos), p)


@dataclass
class PSearchResult:
    """Outcome of `select_p`: the chosen (p, T) and the criterion for every grid point."""

    p: float
    temperature: float
    table: list[tuple[float, float, float]] = field(default_factory=list)  # (p, T, mean held-out log p(y|x))


class ConjNorm(FeaturesDetector):
    """ConjNorm detector with pytorch-ood's interface (``fit_features``/``predict_features``).

    ``predict_features(x)`` returns the outlier score -S(x) (higher = more OOD, pytorch-ood's
    convention); ``score(x)`` returns S(x) = log Σ_k exp(d(x, μ_k)/T) / Ẑ_k (higher = more ID,
    the paper's convention). See the module docstring for the formulas.

    Args:
        encoder: maps inputs to penultimate features [B, D]; may be ``None`` when only the
            ``*_features`` methods are used.
        p: norm order of the feature normalisation (p > 1); ``None`` = choose it with `select_p`
            on held-out ID data when fitting.
        temperature: T.
        p_grid / t_grid: candidates searched by `select_p` when ``p`` (resp. the temperature) is
            to be chosen; ``t_grid=None`` keeps ``temperature`` fixed.
        n_is_samples: M draws (with replacement, uniform) from the training features for the
            IS estimate of Z_k; ``None`` uses every training feature once (the expectation of
            the bootstrap estimator of the official code).
        proposal: ``"all"`` — Ẑ_k from all training features (official CIFAR scripts);
            ``"class"`` — Ẑ_k from the training features of class k only (official ImageNet script).
        val_fraction: share of the training features held out for the p search when no
            validation features are passed to ``fit_features``.
        seed: seeds the held-out split and the IS draws.
    """

    requires_fit = True
    hyperparameter_space = {"p": [1.5, 2.0, 2.2, 2.5, 3.0, 4.0], "temperature": [0.01, 0.05, 0.1, 0.5]}

    def __init__(
        self,
        encoder: Optional[Callable[[Tensor], Tensor]] = None,
        p: Optional[float] = 2.2,
        temperature: float = 0.05,
        p_grid: Sequence[float] = (1.5, 2.0, 2.2, 2.5, 3.0, 4.0),
        t_grid: Optional[Sequence[float]] = None,
        n_is_samples: Optional[int] = None,
        proposal: str = "all",
        val_fraction: float = 0.2,
        seed: int = 0,
    ):
        super().__init__()
        if proposal not in ("all", "class"):
            raise HeadscopeError(
                "proposal must be 'all' (every training feature) or 'class' (class-k features for Z_k), "
                f"got {proposal!r}"
            )
        self.proposal = proposal
        if p is not None:
            conjugate_exponent(p)
        if temperature <= 0:
            raise HeadscopeError(f"temperature must be > 0, got {temperature}")
        self.encoder = encoder
        self.p = p
        self.temperature = float(temperature)
        self.p_grid = tuple(float(v) for v in p_grid)
        self.t_grid = None if t_grid is None else tuple(float(v) for v in t_grid)
        self.n_is_samples = n_is_samples
        self.val_fraction = val_fraction
        self.seed = seed
        self.prototypes: Optional[Tensor] = None
        self.partition: Optional[PartitionEstimate] = None
        self.search: Optional[PSearchResult] = None

    # -- fitting ---------------------------------------------------------------------
    def fit(self, data_loader) -> "ConjNorm":
        """Extract features with ``encoder`` from a loader of (x, y) and call `fit_features`."""
        if self.encoder is None:
            raise HeadscopeError(
                "ConjNorm.fit(loader) needs an encoder; pass encoder=... or call fit_features(features, labels)"
            )
        from pytorch_ood.utils import extract_features

        z, y = extract_features(data_loader, self.encoder, self.device)
        return self.fit_features(z, y)

    def fit_features(
        self,
        x: Float[Tensor, " n d"],
        y: Int[Tensor, " n"],
        x_val: Optional[Float[Tensor, " v d"]] = None,
        y_val: Optional[Int[Tensor, " v"]] = None,
    ) -> "ConjNorm":
        """Prototypes and IS partition estimates from ID training features ``x`` with labels ``y``.

        When p is to be searched (``p=None``) or ``t_grid`` is set, (p, T) are chosen first by
        `select_p` on ``(x_val, y_val)``, or on a held-out share of ``x`` when those are absent;
        the final model is then fitted on all of ``x``.
        """
        x, y = _check_xy(x, y)
        n_classes = int(y.max()) + 1
        if self.p is None or self.t_grid is not None:
            if x_val is None:
                x_fit, y_fit, x_val, y_val = _split(x, y, self.val_fraction, self.seed)
            else:
                x_val, y_val = _check_xy(x_val, y_val)
                x_fit, y_fit = x, y
            p_grid = self.p_grid if self.p is None else (self.p,)
            t_grid = self.t_grid if self.t_grid is not None else (self.temperature,)
            self.search = select_p(
                x_fit, y_fit, x_val, y_val, p_grid, t_grid, n_classes=n_classes, proposal=self.proposal
            )
            self._p_fitted = self.search.p
            self.temperature = self.search.temperature
        else:
            self._p_fitted = float(self.p)
        self.n_classes = n_classes
        self.prototypes, self.partition = _fit_state(
            x, y, n_classes, self._p_fitted, self.temperature, self.n_is_samples, self.seed, self.proposal
        )
        return self

    @property
    def p_(self) -> float:
        """The norm order in use after fitting (the searched one when p=None)."""
        if self.prototypes is None:
            raise RequiresFittingException()
        return self._p_fitted

    # -- scoring ---------------------------------------------------------------------
    def class_log_density(self, x: Float[Tensor, " b d"]) -> Float[Tensor, " b k"]:
        """log p̂(x | k) + const = d(normalise_p(x), μ_k)/T - log Ẑ_k."""
        if self.prototypes is None or self.partition is None:
            raise RequiresFittingException()
        q = conjugate_exponent(self._p_fitted)
        xn = lp_normalize(x.to(self.prototypes.dtype), self._p_fitted)
        return conj_similarity(xn, self.prototypes, q) / self.temperature - self.partition.log_z[None, :]

    @torch.no_grad()
    def score(self, x: Float[Tensor, " b d"]) -> Float[Tensor, " b"]:
        """S(x) = log Σ_k exp(d(x, μ_k)/T) / Ẑ_k — higher = more in-distribution (paper's sign)."""
        return torch.logsumexp(self.class_log_density(x), dim=-1)

    @torch.no_grad()
    def predict_features(self, x: Float[Tensor, " b d"]) -> Float[Tensor, " b"]:
        """Outlier score -S(x): higher = more out-of-distribution (pytorch-ood's convention)."""
        return -self.score(x)

    def predict(self, x: Tensor) -> Float[Tensor, " b"]:
        """Outlier score of raw inputs, through ``encoder``."""
        if self.encoder is None:
            raise HeadscopeError("ConjNorm.predict(inputs) needs an encoder; call predict_features(features) instead")
        with torch.no_grad():
            return self.predict_features(self.encoder(x))


def select_p(
    x_train: Float[Tensor, " n d"],
    y_train: Int[Tensor, " n"],
    x_val: Float[Tensor, " v d"],
    y_val: Int[Tensor, " v"],
    p_grid: Sequence[float],
    t_grid: Sequence[float],
    n_classes: Optional[int] = None,
    proposal: str = "all",
) -> PSearchResult:
    """Choose (p, T) on held-out in-distribution data, using no OOD samples.

    Criterion: the mean held-out conditional log-likelihood of the true label under the
    fitted class-conditional densities with equal priors,

        C(p, T) = mean_{(x, y) ∈ val} log [ p̂(x | y) / Σ_k p̂(x | k) ],
        p̂(x | k) = exp(d(x, μ_k)/T) / Ẑ_k,

    the largest wins. It asks how well the conjugate-norm geometry and the estimated
    normalisers separate the ID classes on data not used to fit them. The class posterior is
    comparable across p, whereas the densities themselves are not (the normalised features
    live on a different L_p sphere for each p). It is a proxy: nothing guarantees that the p
    with the best held-out ID fit is the one with the best OOD separation.
    """
    x_train, y_train = _check_xy(x_train, y_train)
    x_val, y_val = _check_xy(x_val, y_val)
    if n_classes is None:
        n_classes = int(y_train.max()) + 1
    if not p_grid or not t_grid:
        raise HeadscopeError("select_p needs at least one candidate p and one temperature")
    table: list[tuple[float, float, float]] = []
    best: tuple[float, float, float] | None = None
    for p in p_grid:
        q = conjugate_exponent(p)
        protos = class_prototypes(x_train, y_train, n_classes, p)
        xt = lp_normalize(x_train, p)
        xv = lp_normalize(x_val, p)
        sim_train = conj_similarity(xt, protos, q)
        sim_val = conj_similarity(xv, protos, q)
        for t in t_grid:
            if t <= 0:
                raise HeadscopeError(f"temperatures must be > 0, got {t}")
            if proposal == "all":
                log_z = torch.logsumexp(sim_train / t, dim=0)  # uniform proposal over the training set
            else:
                own = torch.nn.functional.one_hot(y_train, n_classes).bool()
                log_z = torch.logsumexp((sim_train / t).masked_fill(~own, -math.inf), dim=0)
            logits = sim_val / t - log_z[None, :]
            crit = float(torch.log_softmax(logits, dim=-1).gather(1, y_val[:, None]).mean())
            table.append((float(p), float(t), crit))
            if best is None or crit > best[2]:
                best = (float(p), float(t), crit)
    assert best is not None
    return PSearchResult(p=best[0], temperature=best[1], table=table)


def _fit_state(
    x: Tensor, y: Tensor, n_classes: int, p: float, t: float, n_is: Optional[int], seed: int, proposal: str = "all"
) -> tuple[Tensor, PartitionEstimate]:
    q = conjugate_exponent(p)
    protos = class_prototypes(x, y, n_classes, p)
    xn = lp_normalize(x, p)
    if n_is is not None and n_is < 1:
        raise HeadscopeError(f"n_is_samples must be >= 1 or None, got {n_is}")
    if proposal == "class":  # one IS estimate per class, from that class's features only
        ests = []
        for k in range(n_classes):
            xk = xn[y == k]
            nk = xk.shape[0]
            if n_is is None:
                samples, log_prop = xk, torch.full((nk,), -math.log(nk), dtype=xn.dtype)
            else:
                idx = torch.randint(0, nk, (n_is,), generator=torch.Generator().manual_seed(seed + k))
                samples, log_prop = xk[idx], torch.full((n_is,), -math.log(nk), dtype=xn.dtype)
            ests.append(importance_sampling_log_partition(samples, protos[k : k + 1], q, t, log_prop))
        return protos, PartitionEstimate(
            log_z=torch.cat([e.log_z for e in ests]),
            rel_se=torch.cat([e.rel_se for e in ests]),
            n_samples=min(e.n_samples for e in ests),
        )
    n = xn.shape[0]
    if n_is is None:
        samples = xn
        log_prop = torch.full((n,), -math.log(n), dtype=xn.dtype)
    else:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, n, (n_is,), generator=gen)
        samples = xn[idx]
        log_prop = torch.full((n_is,), -math.log(n), dtype=xn.dtype)  # uniform over the N training points
    return protos, importance_sampling_log_partition(samples, protos, q, t, log_prop)


def _check_xy(x: Tensor, y: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    if y is None:
        raise HeadscopeError("labels are required with features; pass the class index of every row")
    x = torch.as_tensor(x)
    y = torch.as_tensor(y).long()
    if x.ndim != 2:
        raise HeadscopeError(f"features must be [N, D], got shape {tuple(x.shape)}; flatten or pool them first")
    if y.shape != (x.shape[0],):
        raise HeadscopeError(f"labels must be [N] = [{x.shape[0]}], got shape {tuple(y.shape)}")
    if bool((y < 0).any()):
        raise HeadscopeError("ConjNorm is fitted on in-distribution data only; drop rows with negative (OOD) labels")
    if not torch.isfinite(x).all():
        raise HeadscopeError("features contain NaN or inf; check the feature extractor")
    return x.double(), y


def _split(x: Tensor, y: Tensor, frac: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stratified hold-out of ``frac`` of each class (at least one row per class stays in the fit part)."""
    if not 0.0 < frac < 1.0:
        raise HeadscopeError(f"val_fraction must be in (0, 1), got {frac}")
    gen = torch.Generator().manual_seed(seed)
    fit_idx, val_idx = [], []
    for k in torch.unique(y).tolist():
        idx = torch.nonzero(y == k).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = min(len(idx) - 1, max(1, int(round(frac * len(idx))))) if len(idx) > 1 else 0
        val_idx.append(idx[:n_val])
        fit_idx.append(idx[n_val:])
    fi, vi = torch.cat(fit_idx), torch.cat(val_idx)
    if len(vi) == 0:
        raise HeadscopeError("too few training features to hold out data for the p search; pass x_val/y_val or fix p")
    return x[fi], y[fi], x[vi], y[vi]
