"""Statistics every results table uses: confidence intervals, paired tests, placebo heads, seeds.

One implementation for the three papers and the circuit specs (docs/design.md §6). The
numerics are scipy's where scipy has them (``binomtest`` for exact binomial intervals and
McNemar's exact test, ``bootstrap`` for percentile/BCa intervals, ``permutation_test``
for paired permutation tests, ``t`` for seed intervals); what scipy lacks is written here
and says so: the Wilson interval's closed form (one line), the placebo p-value with the
+1 correction (Phipson & Smyth 2010), and the verdict rule.

Conventions:

- Every estimate is an :class:`Estimate`: the value, its 95% interval, ``n`` (prompts or
  seeds it was computed over) and, for rates, the count ``k``. Tables print
  :func:`fmt_ci` and keep ``to_dict()`` in their raw JSON.
- A bar is passed only when the whole interval clears it (:func:`verdict`): "met" iff
  the lower bound exceeds the bar (or the upper bound lies below it, for "below" bars).
  An interval that straddles the bar is "not met". Counts and bounds are compared
  unrounded; nothing is decided on a printed float.
- Randomness (bootstrap, permutations) is seeded; the same inputs give the same interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from headscope.common.errors import HeadscopeError

__all__ = [
    "Estimate",
    "bootstrap_ci",
    "fmt_ci",
    "mcnemar_p",
    "md_table",
    "over_seeds",
    "paired_diff",
    "paired_permutation_p",
    "placebo",
    "placebo_p",
    "rate",
    "rate_change",
    "verdict",
]

_ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval.

    ``value`` is the estimate, ``[lo, hi]`` its ``level`` interval, ``n`` the number of
    units it was computed over (prompts, items or seeds), ``k`` the count behind a rate
    (None otherwise), ``sd`` the standard deviation over units where that is meaningful
    (seeds), ``method`` how the interval was obtained.
    """

    value: float
    lo: float
    hi: float
    n: int
    k: int | None = None
    sd: float | None = None
    method: str = ""
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return fmt_ci(self)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise HeadscopeError(f"confidence level {level} is outside (0, 1); use e.g. 0.95")


def _check_alternative(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise HeadscopeError(f"unknown alternative {alternative!r}; use one of {', '.join(_ALTERNATIVES)}")


def _as_1d(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=float).reshape(-1)
    if a.size == 0:
        raise HeadscopeError(f"{what} is empty; an estimate needs at least one value")
    if not np.isfinite(a).all():
        raise HeadscopeError(f"{what} contains NaN or infinite values; drop or fix them before estimating")
    return a


def _as_bool(values: Sequence[bool] | np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(values).reshape(-1)
    if a.size == 0:
        raise HeadscopeError(f"{what} is empty; a rate needs at least one outcome")
    if a.dtype != bool:
        if not np.isin(a, (0, 1)).all():
            raise HeadscopeError(f"{what} must hold booleans (or 0/1) per prompt")
        a = a.astype(bool)
    return a


def rate(k: int, n: int, level: float = 0.95, method: str = "wilson") -> Estimate:
    """The proportion ``k / n`` with a binomial confidence interval.

    ``method="wilson"`` (default): the Wilson score interval,
    ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`` — good coverage at small n
    and never outside [0, 1]. ``method="exact"``: Clopper–Pearson via
    ``scipy.stats.binomtest(k, n).proportion_ci``.
    """
    _check_level(level)
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise HeadscopeError(f"rate needs integer counts, got k={k!r}, n={n!r}; pass counts, not fractions")
    k, n = int(k), int(n)
    if n <= 0 or not 0 <= k <= n:
        raise HeadscopeError(f"rate needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    if method == "wilson":
        # Closed form written here (scipy's binomtest offers it too, but only via a test object).
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + level / 2))
        den = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / den
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
        lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    elif method == "exact":
        from scipy.stats import binomtest

        ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
        lo, hi = float(ci.low), float(ci.high)
    else:
        raise HeadscopeError(f"unknown interval method {method!r}; use 'wilson' or 'exact'")
    return Estimate(p, lo, hi, n, k=k, method=method, level=level)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[..., Any] = np.mean,
    *,
    n_resamples: int = 9999,
    level: float = 0.95,
    method: str = "BCa",
    seed: int = 0,
) -> Estimate:
    """``statistic(values)`` with a bootstrap interval over the units (prompts) of ``values``.

    ``scipy.stats.bootstrap`` with ``method`` "BCa" (default) or "percentile", seeded. A
    constant sample has a degenerate interval [value, value] (BCa is undefined there).
    """
    _check_level(level)
    if method not in ("BCa", "percentile", "basic"):
        raise HeadscopeError(f"unknown bootstrap method {method!r}; use 'BCa' or 'percentile'")
    a = _as_1d(values, "values")
    value = float(statistic(a))
    if a.size < 2 or np.all(a == a[0]):
        return Estimate(value, value, value, int(a.size), method=f"bootstrap-{method} (degenerate)", level=level)
    from scipy.stats import bootstrap

    def stat(x, axis=-1):
        return statistic(x, axis=axis)

    with warnings.catch_warnings():  # a degenerate BCa falls back to percentile below
        warnings.simplefilter("ignore")
        res = bootstrap(
            (a,),
            stat,
            n_resamples=n_resamples,
            confidence_level=level,
            method=method,
            rng=np.random.default_rng(seed),
            vectorized=True,
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # BCa can fail on near-degenerate samples
        res = bootstrap(
            (a,),
            stat,
            n_resamples=n_resamples,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
            vectorized=True,
        )
        lo, hi, method = float(res.confidence_interval.low), float(res.confidence_interval.high), "percentile"
    return Estimate(value, lo, hi, int(a.size), method=f"bootstrap-{method}", level=level)


def _paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.shape != y.shape:
        raise HeadscopeError(f"paired values need one value per item on both sides; got {x.size} and {y.size} items")
    return x - y


def paired_diff(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 9999,
    level: float = 0.95,
    method: str = "BCa",
    seed: int = 0,
) -> Estimate:
    """The mean of ``a − b`` over the same items, with a bootstrap interval over items."""
    return bootstrap_ci(_paired(a, b), n_resamples=n_resamples, level=level, method=method, seed=seed)


def paired_permutation_p(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 9999,
    seed: int = 0,
    alternative: str = "two-sided",
) -> float:
    """p-value of a paired permutation (sign-flip) test of mean(a − b) = 0.

    ``scipy.stats.permutation_test`` with ``permutation_type="samples"``: each item's pair
    is swapped or not; exact (all 2^n arrangements) when that is at most ``n_resamples``.
    ``alternative="greater"`` tests mean(a) > mean(b).
    """
    _check_alternative(alternative)
    d = _paired(a, b)
    if np.all(d == 0):
        return 1.0
    from scipy.stats import permutation_test

    x, y = _as_1d(a, "a"), _as_1d(b, "b")

    def stat(u, v, axis=-1):
        return np.mean(u - v, axis=axis)

    res = permutation_test(
        (x, y),
        stat,
        permutation_type="samples",
        n_resamples=n_resamples,
        alternative=alternative,
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return float(res.pvalue)


def mcnemar_p(
    before: Sequence[bool] | np.ndarray, after: Sequence[bool] | np.ndarray, alternative: str = "two-sided"
) -> float:
    """McNemar's exact test of a paired change in accuracy.

    Only discordant items count: ``b`` = right before and wrong after, ``c`` = wrong
    before and right after; under no change ``c ~ Binomial(b + c, 1/2)``
    (``scipy.stats.binomtest``). ``alternative="greater"``: ``after`` is more often right.
    No discordant item → p = 1.
    """
    _check_alternative(alternative)
    x, y = _as_bool(before, "before"), _as_bool(after, "after")
    if x.shape != y.shape:
        raise HeadscopeError(f"before and after need one outcome per item; got {x.size} and {y.size}")
    b = int((x & ~y).sum())
    c = int((~x & y).sum())
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(c, b + c, 0.5, alternative=alternative).pvalue)


def rate_change(
    before: Sequence[bool] | np.ndarray,
    after: Sequence[bool] | np.ndarray,
    *,
    level: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> tuple[Estimate, float]:
    """The paired change in a rate (after − before) with a bootstrap interval over items,
    and McNemar's two-sided exact p-value."""
    x, y = _as_bool(before, "before"), _as_bool(after, "after")
    est = paired_diff(
        y.astype(float), x.astype(float), n_resamples=n_resamples, level=level, method="percentile", seed=seed
    )
    return est, mcnemar_p(x, y)


def placebo_p(observed: float, placebo_values: Sequence[float] | np.ndarray, alternative: str = "less") -> float:
    """Empirical p-value of ``observed`` against a placebo distribution (random-head draws).

    ``(1 + #{placebo at least as extreme}) / (1 + m)`` (Phipson & Smyth 2010; written here,
    not in scipy): with ``alternative="less"`` a placebo draw is as extreme when it is
    ``<= observed`` (e.g. knocking out the selected heads leaves accuracy lower than
    random heads do); ``"greater"``: ``>= observed``. With m draws the smallest possible
    p is ``1 / (m + 1)``, so 20 draws cannot give p < 0.047.
    """
    if alternative not in ("less", "greater"):
        raise HeadscopeError(f"placebo alternative must be 'less' or 'greater', got {alternative!r}")
    v = _as_1d(placebo_values, "placebo values")
    obs = float(observed)
    hits = int((v <= obs).sum()) if alternative == "less" else int((v >= obs).sum())
    return (1 + hits) / (1 + v.size)


def placebo(observed: float, placebo_values: Sequence[float] | np.ndarray, alternative: str = "less") -> dict:
    """The placebo distribution summarised: m draws, mean, sd, min, max, and :func:`placebo_p`."""
    v = _as_1d(placebo_values, "placebo values")
    return {
        "observed": float(observed),
        "m": int(v.size),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "alternative": alternative,
        "p": placebo_p(observed, v, alternative),
    }


def over_seeds(values: Sequence[float] | np.ndarray, level: float = 0.95) -> Estimate:
    """Mean over seeds with a t interval (``scipy.stats.t``), its sd (ddof 1) and n.

    One seed gives a degenerate interval [value, value] with ``sd=None``: say "1 seed" in
    the table rather than read it as certainty.
    """
    _check_level(level)
    v = _as_1d(values, "per-seed values")
    m = float(v.mean())
    if v.size == 1:
        return Estimate(m, m, m, 1, sd=None, method="1 seed", level=level)
    from scipy.stats import t

    sd = float(v.std(ddof=1))
    half = float(t.ppf(0.5 + level / 2, v.size - 1)) * sd / math.sqrt(v.size)
    return Estimate(m, m - half, m + half, int(v.size), sd=sd, method="t over seeds", level=level)


def verdict(est: Estimate, bar: float, direction: str = "above") -> str:
    """ "met" iff the whole interval clears ``bar``: ``lo > bar`` ("above") or ``hi < bar``
    ("below"); otherwise "not met" (an interval straddling or touching the bar is not met)."""
    if direction == "above":
        return "met" if est.lo > bar else "not met"
    if direction == "below":
        return "met" if est.hi < bar else "not met"
    raise HeadscopeError(f"verdict direction must be 'above' or 'below', got {direction!r}")


def fmt_ci(est: Estimate, pct: bool = False, digits: int = 3) -> str:
    """``0.620 [0.521, 0.711]`` (or ``62.0 [52.1, 71.1]`` with ``pct=True``)."""
    s = 100.0 if pct else 1.0
    d = 1 if pct else digits
    return f"{est.value * s:.{d}f} [{est.lo * s:.{d}f}, {est.hi * s:.{d}f}]"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells are str()-ed, floats printed as given (format them first)."""
    if any(len(r) != len(header) for r in rows):
        raise HeadscopeError("every table row needs one cell per header column")
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
