"""Significance tests, effect sizes and confidence intervals for the tables.

Across seeds (one value per run): Welch's t-test for two independent groups, or the paired
t-test when both groups ran the same seeds (the summary of seed s against the full-data
run of seed s). Across users (one value per user, the same users on both sides): the
paired t-test, a sign-flip permutation test that assumes no normality, or a percentile
bootstrap of the mean difference (its confidence interval). Holm's
step-down correction controls the family-wise error over a table's comparisons.

Written with numpy and scipy's distribution functions only; tests compare the p-values with
scipy.stats' own tests on fixtures built independently of this module.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special


# Student's t distribution through the special functions scipy.stats.t itself calls
# (t.sf(x, df) is stdtr(df, -x), t.ppf(q, df) is stdtrit(df, q): the same numbers, bit for bit):
# scipy.stats.t checks and broadcasts its arguments at every call, and a 10,000-run table
# makes thousands of calls; importing scipy.stats is slower still (docs/performance.md,
# "Tables from 10,000 run records").
def _t_sf(x: float, df: float) -> float:
    return special.stdtr(df, -x)


def _t_ppf(q: float, df: float) -> float:
    return special.stdtrit(df, q)


@dataclass
class Comparison:
    """Group a against group b: a − b, with its test and effect size."""

    test: str            # welch | paired | permutation | none
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float          # mean(a) − mean(b) (paired: mean of differences, the same number)
    ci_low: float        # 95% confidence interval of the difference
    ci_high: float
    statistic: float
    p: float
    effect: float        # Cohen's d (paired: d_z, mean difference / sd of differences)

    def as_dict(self) -> dict:
        return asdict(self)


def _nan_comparison(a, b, test="none") -> Comparison:
    return Comparison(test, len(a), len(b), float(np.mean(a)) if len(a) else math.nan,
                      float(np.mean(b)) if len(b) else math.nan, math.nan, math.nan, math.nan,
                      math.nan, math.nan, math.nan)


def welch(a, b, confidence: float = 0.95) -> Comparison:
    """Welch's unequal-variance t-test (two-sided)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return _nan_comparison(a, b, "welch")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = a.mean() - b.mean()
    se = math.sqrt(va + vb)
    if se <= 1e-12 * max(1.0, abs(diff)):  # no spread on either side: the test is undefined (not "p = 0")
        return Comparison("welch", len(a), len(b), float(a.mean()), float(b.mean()), float(diff),
                          math.nan, math.nan, math.nan, math.nan, math.nan)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = diff / se
    p = 2 * _t_sf(abs(t), df)
    half = _t_ppf(0.5 + confidence / 2, df) * se
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return Comparison("welch", len(a), len(b), float(a.mean()), float(b.mean()), float(diff),
                      float(diff - half), float(diff + half), float(t), float(p),
                      float(diff / pooled) if pooled > 0 else math.nan)


def paired(a, b, confidence: float = 0.95) -> Comparison:
    """Paired t-test on a[i] − b[i] (two-sided)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs equal lengths, got {len(a)} and {len(b)}")
    d = a - b
    n = len(d)
    if n < 2:
        return _nan_comparison(a, b, "paired")
    sd = d.std(ddof=1)
    if sd <= 1e-12 * max(1.0, abs(d.mean())):  # every difference the same: undefined (not "p = 0")
        return Comparison("paired", n, n, float(a.mean()), float(b.mean()), float(d.mean()),
                          math.nan, math.nan, math.nan, math.nan, math.nan)
    t = d.mean() / (sd / math.sqrt(n))
    p = 2 * _t_sf(abs(t), n - 1)
    half = _t_ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Comparison("paired", n, n, float(a.mean()), float(b.mean()), float(d.mean()),
                      float(d.mean() - half), float(d.mean() + half), float(t), float(p), float(d.mean() / sd))


def above(d, margin: float = 0.0) -> float:
    """One-sided t-test p-value that the mean of the paired differences ``d`` exceeds
    ``margin`` (H0: mean <= margin): how sure "a beats b by more than the margin" is."""
    d = np.asarray(d, float) - margin
    test = paired(d, np.zeros_like(d))   # its t statistic, NaN where undefined
    return float(_t_sf(test.statistic, test.n_a - 1)) if math.isfinite(test.statistic) else math.nan


def permutation_paired(a, b, n_resamples: int = 9999, seed: int = 0, confidence: float = 0.95) -> Comparison:
    """Sign-flip permutation test of the mean paired difference (two-sided).

    Exact (every sign pattern) when 2^n ≤ n_resamples + 1, otherwise Monte Carlo with the
    observed statistic counted as one resample: p = (1 + #{|T*| ≥ |T|}) / (1 + R).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    n = len(d)
    base = paired(a, b, confidence) if n >= 2 else _nan_comparison(a, b)
    if n < 1:
        return base
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    if 2 ** n <= n_resamples + 1:
        signs = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2 - 1  # every pattern
        p = float(np.mean(np.abs((signs * d).mean(axis=1)) >= observed - tol))
    else:
        rng = np.random.default_rng(seed)
        hits = 0
        for start in range(0, n_resamples, 1000):
            k = min(1000, n_resamples - start)
            signs = rng.choice((-1.0, 1.0), size=(k, n))
            hits += int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - tol))
        p = (hits + 1) / (n_resamples + 1)
    return Comparison("permutation", n, n, base.mean_a, base.mean_b, float(d.mean()), base.ci_low, base.ci_high,
                      float(d.mean()), p, base.effect)


def bootstrap_mean(x, n_resamples: int = 9999, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, np.ndarray]:
    """Percentile bootstrap of a mean: (low, high, the resampled means). For a difference
    measured on the same users on both sides, ``x`` holds each user's difference, so that the
    interval says how far the figure depends on which users the test set happens to hold."""
    x = np.asarray(x, float)
    if len(x) < 2:
        return math.nan, math.nan, np.full(0, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, 1000):  # (1000, n) indices at a time: bounded memory
        k = min(1000, n_resamples - start)
        means[start:start + k] = x[rng.integers(0, len(x), size=(k, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high), means


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and counts for nothing)."""
    p = np.asarray(pvalues, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def stars(p: float) -> str:
    """** for p < 0.01, * for p < 0.05."""
    if p is None or not np.isfinite(p):
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""


def compare_seeds(a: dict, b: dict) -> Comparison:
    """Runs by seed ({seed: value}): paired on the common seeds when both sides ran exactly
    the same seeds, Welch otherwise."""
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        return paired([a[s] for s in seeds], [b[s] for s in seeds])
    return welch(list(a.values()), list(b.values()))
