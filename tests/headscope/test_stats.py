"""headscope.stats and headscope.splits against scipy, closed forms and hand enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as ss

from headscope.common.errors import HeadscopeError
from headscope.splits import check_disjoint, split_by_key, split_of, verbatim_in
from headscope.stats import (
    Estimate,
    bootstrap_ci,
    fmt_ci,
    mcnemar_p,
    md_table,
    over_seeds,
    paired_diff,
    paired_permutation_p,
    placebo,
    placebo_p,
    rate,
    rate_change,
    verdict,
)


@pytest.mark.parametrize("k,n", [(0, 5), (3, 5), (5, 5), (7, 23), (62, 100), (1, 1000)])
def test_wilson_matches_scipy(k, n):
    est = rate(k, n)
    ref = ss.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert est.value == k / n and est.k == k and est.n == n
    assert est.lo == pytest.approx(ref.low, abs=1e-12)
    assert est.hi == pytest.approx(ref.high, abs=1e-12)


@pytest.mark.parametrize("k,n", [(0, 5), (3, 5), (7, 23), (99, 100)])
def test_exact_is_clopper_pearson(k, n):
    est = rate(k, n, method="exact", level=0.9)
    # Clopper–Pearson from the beta quantiles, written out.
    lo = 0.0 if k == 0 else ss.beta.ppf(0.05, k, n - k + 1)
    hi = 1.0 if k == n else ss.beta.ppf(0.95, k + 1, n - k)
    assert est.lo == pytest.approx(lo, abs=1e-9) and est.hi == pytest.approx(hi, abs=1e-9)


def test_rate_rejects_bad_counts():
    for k, n in [(3, 2), (-1, 4), (0, 0), (0.5, 4)]:
        with pytest.raises(HeadscopeError, match="rate needs"):
            rate(k, n)
    with pytest.raises(HeadscopeError, match="unknown interval method"):
        rate(1, 2, method="wald")


def test_bootstrap_ci_close_to_normal_theory_and_seeded():
    x = np.random.default_rng(1).normal(0.3, 1.0, 400)
    half = 1.959964 * x.std(ddof=1) / math.sqrt(x.size)
    for method in ("BCa", "percentile"):
        est = bootstrap_ci(x, method=method, n_resamples=4000, seed=3)
        assert est.value == pytest.approx(x.mean())
        assert est.lo == pytest.approx(x.mean() - half, abs=0.15 * half)
        assert est.hi == pytest.approx(x.mean() + half, abs=0.15 * half)
        assert bootstrap_ci(x, method=method, n_resamples=4000, seed=3) == est
    assert bootstrap_ci(x, seed=4, n_resamples=500) != bootstrap_ci(x, seed=5, n_resamples=500)


def test_bootstrap_degenerate_and_empty():
    est = bootstrap_ci([1.0, 1.0, 1.0])
    assert (est.value, est.lo, est.hi, est.n) == (1.0, 1.0, 1.0, 3)
    with pytest.raises(HeadscopeError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(HeadscopeError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])


def test_paired_permutation_equals_full_enumeration():
    a = np.array([0.9, 0.4, 0.7, 0.2, 0.8, 0.6])
    b = np.array([0.5, 0.5, 0.3, 0.1, 0.2, 0.6])
    d = a - b
    obs = d.mean()
    flips = np.array([np.mean(d * np.array(s)) for s in itertools.product([1, -1], repeat=d.size)])
    eps = 1e-12
    want_greater = np.mean(flips >= obs - eps)
    want_two = min(1.0, 2 * min(want_greater, np.mean(flips <= obs + eps)))
    assert paired_permutation_p(a, b, alternative="greater") == pytest.approx(want_greater)
    assert paired_permutation_p(a, b) == pytest.approx(want_two)
    assert paired_permutation_p(a, a) == 1.0
    with pytest.raises(HeadscopeError, match="one value per item"):
        paired_permutation_p(a, b[:3])


def test_paired_diff_is_mean_difference():
    a, b = np.arange(10.0), np.arange(10.0) - 2.0
    est = paired_diff(a, b)
    assert (est.value, est.lo, est.hi) == (2.0, 2.0, 2.0)


def test_mcnemar_exact_closed_form():
    rng = np.random.default_rng(0)
    before = rng.random(60) < 0.5
    after = before.copy()
    after[:9] = ~after[:9]
    after[9:20] = True
    b = int((before & ~after).sum())
    c = int((~before & after).sum())
    tail = sum(math.comb(b + c, i) for i in range(0, min(b, c) + 1)) / 2 ** (b + c)
    assert mcnemar_p(before, after) == pytest.approx(min(1.0, 2 * tail))
    upper = sum(math.comb(b + c, i) for i in range(c, b + c + 1)) / 2 ** (b + c)
    assert mcnemar_p(before, after, alternative="greater") == pytest.approx(upper)
    assert mcnemar_p(before, before) == 1.0


def test_rate_change_sac_preference_case_is_not_met():
    # The old SAC preference row: 3 → 4 of 5 prompts, called "+20 points" against a ≥ 20-point bar.
    before = np.array([1, 1, 1, 0, 0], bool)
    after = np.array([1, 1, 1, 1, 0], bool)
    est, p = rate_change(before, after)
    assert est.value == pytest.approx(0.2)
    assert est.lo <= 0.0 < 0.2 <= est.hi  # the interval straddles both 0 and the bar
    assert p == 1.0  # one discordant pair
    assert verdict(est, 0.2) == "not met"
    assert verdict(est, 0.0) == "not met"


def test_placebo_p_closed_form():
    draws = [0.5, 0.2, 0.9, 0.2, 0.7]
    assert placebo_p(0.2, draws, "less") == (1 + 2) / 6
    assert placebo_p(0.1, draws, "less") == 1 / 6
    assert placebo_p(0.9, draws, "greater") == 2 / 6
    s = placebo(0.1, draws)
    assert s["m"] == 5 and s["p"] == 1 / 6 and s["mean"] == pytest.approx(np.mean(draws))
    with pytest.raises(HeadscopeError, match="'less' or 'greater'"):
        placebo_p(0.1, draws, "two-sided")


def test_over_seeds_matches_scipy_t_interval():
    v = [0.61, 0.55, 0.72, 0.66, 0.58]
    est = over_seeds(v)
    lo, hi = ss.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=ss.sem(v))
    assert est.lo == pytest.approx(lo) and est.hi == pytest.approx(hi)
    assert est.sd == pytest.approx(np.std(v, ddof=1)) and est.n == 5
    one = over_seeds([0.4])
    assert one.lo == one.hi == 0.4 and one.sd is None and one.method == "1 seed"


def test_verdict_on_bounds_not_on_rounded_floats():
    bar = 0.2
    straddle = Estimate(0.8 - 0.6, 0.05, 0.35, 5)  # 0.20000000000000007 > 0.2 as a float
    assert straddle.value > bar and verdict(straddle, bar) == "not met"
    touching = Estimate(0.3, 0.2, 0.4, 100)
    assert verdict(touching, bar) == "not met"
    assert verdict(Estimate(0.3, 0.21, 0.4, 100), bar) == "met"
    assert verdict(Estimate(0.01, -0.01, 0.03, 100), 0.05, "below") == "met"
    assert verdict(Estimate(0.04, 0.0, 0.06, 100), 0.05, "below") == "not met"
    with pytest.raises(HeadscopeError, match="direction"):
        verdict(touching, bar, "up")


def test_format_and_table():
    est = rate(62, 100)
    assert fmt_ci(est) == f"0.620 [{est.lo:.3f}, {est.hi:.3f}]"
    assert fmt_ci(est, pct=True).startswith("62.0 [")
    t = md_table(["a", "b"], [[1, "x"], [2, "y"]])
    assert t.splitlines()[1] == "|---|---|" and t.splitlines()[3] == "| 2 | y |"
    with pytest.raises(HeadscopeError, match="one cell per header"):
        md_table(["a"], [[1, 2]])


# --- splits -----------------------------------------------------------------------------


def test_split_by_key_is_order_free_and_item_disjoint():
    items = [(op, a, b, t) for op in "+-" for a in range(1, 10) for b in range(1, 10) for t in range(3)]
    fr = {"identify": 0.4, "fit": 0.2, "evaluate": 0.4}
    s1 = split_by_key(items, key=lambda it: it[:3], fractions=fr, salt="arith")
    s2 = split_by_key(list(reversed(items)), key=lambda it: it[:3], fractions=fr, salt="arith")
    assert {k: sorted(v) for k, v in s1.items()} == {k: sorted(v) for k, v in s2.items()}
    keys = {name: [it[:3] for it in v] for name, v in s1.items()}
    check_disjoint(keys)  # every template of an item lands in one split
    n_items = len({it[:3] for it in items})
    for name, f in fr.items():
        share = len(set(keys[name])) / n_items
        assert abs(share - f) < 0.12, (name, share)
    assert all(split_of(it[:3], fr, "arith") == name for name, v in s1.items() for it in v)
    other = split_by_key(items, key=lambda it: it[:3], fractions=fr, salt="other")
    assert other != s1


def test_split_by_key_rejects_bad_fractions():
    with pytest.raises(HeadscopeError, match="sum to"):
        split_by_key([1], key=lambda x: x, fractions={"a": 0.5, "b": 0.4})
    with pytest.raises(HeadscopeError, match="positive"):
        split_by_key([1], key=lambda x: x, fractions={"a": 1.0, "b": 0.0})


def test_check_disjoint_names_the_overlap():
    check_disjoint({"identify": [1, 2], "evaluate": [3]})
    with pytest.raises(HeadscopeError, match=r"1 items occur in more than one split: 2 in identify and evaluate"):
        check_disjoint({"identify": [1, 2], "evaluate": [2, 3]})


def test_verbatim_in():
    corpus = ["User : what is 3 + 5 ? Assistant : 8", "the capital of Avia is Bel ."]
    texts = ["what is 3 + 5 ?", "what is 5 + 3 ?", "Avia is Bel", "Bel . User"]
    assert verbatim_in(texts, corpus) == [0, 2]  # documents do not run into each other
    assert verbatim_in(["a", "what"], corpus, min_chars=2) == [1]
