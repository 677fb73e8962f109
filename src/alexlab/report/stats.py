"""The tests behind every verdict: paired t over seeds (exact sign-flip when every difference is
equal), an exact sign test for censored epochs-to-threshold pairs, the equivalence test (two one-sided
t-tests), seeds needed and seeds for a given power, Holm's correction (one family for difference and
equivalence tests, each claim counted once).

The p-value functions work along the last axis of arrays, so the report (one comparison, shape
(n,)) and the simulation that checks their error rate (thousands of null data sets, shape
(sets, n)) call the same code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

MAX_SEEDS = 10_000  # beyond this "seeds needed" is reported as "> 10000"

# which test produced a p-value (shown beside it in the report)
T_TEST = "paired t"
SIGN_FLIP = "exact sign-flip (all differences equal)"
SIGN_TEST = "exact sign test (censored runs)"


@dataclass
class Interval:
    n: int
    mean: float
    sd: float           # nan for n < 2
    low: float          # nan for n < 2 and when every difference is equal (no spread: no interval)
    high: float
    p: float            # two-sided; nan for n < 2
    method: str = ""    # T_TEST or SIGN_FLIP; "" when there is no p


def degenerate(d: np.ndarray) -> np.ndarray:
    """Every difference equal (up to float rounding), along the last axis."""
    mean = d.mean(axis=-1)
    return d.std(axis=-1, ddof=1) <= 1e-9 * np.maximum(1.0, np.abs(mean))


def paired_p(d) -> np.ndarray:
    """Two-sided p of mean = 0 for paired differences along the last axis (n >= 2, all finite).

    Student's t with n - 1 degrees of freedom, except when every difference is equal: t is then
    undefined (sd 0), and the exact sign-flip permutation p is used instead: 2^(1-n) for n equal
    non-zero differences (only all-plus and all-minus are as extreme), 1 when they are all zero.
    Never 0."""
    d = np.asarray(d, dtype=float)
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    sd = d.std(axis=-1, ddof=1)
    flat = degenerate(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(mean) / (sd / math.sqrt(n))
    p_t = 2.0 * stats.t.sf(np.where(flat, 0.0, t), n - 1)
    zero = np.abs(mean) <= 1e-12 * np.maximum(1.0, np.abs(d).max(axis=-1))
    p_flip = np.where(zero, 1.0, 2.0 ** (1 - n))
    return np.where(flat, p_flip, p_t)


def paired_interval(diffs, confidence: float = 0.95) -> Interval:
    """Mean of per-seed differences with Student's t-interval (n - 1 degrees of freedom) and the
    p of `paired_p`. One seed, or differences that are all equal, give no interval."""
    d = np.asarray([x for x in diffs if x is not None and np.isfinite(x)], dtype=float)
    n = len(d)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Interval(1, mean, math.nan, math.nan, math.nan, math.nan)
    p = float(paired_p(d))
    if degenerate(d):
        return Interval(n, mean, 0.0, math.nan, math.nan, p, SIGN_FLIP)
    sd = float(d.std(ddof=1))
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return Interval(n, mean, sd, float(low), float(high), p, T_TEST)


def ordered_pairs(t_arm, censored_arm, t_paper, censored_paper) -> tuple[np.ndarray, np.ndarray]:
    """(slower, faster): how many pairs have the arm certainly slower / faster than the paper run.

    Times are epochs to the threshold, or for a censored run the epochs it trained (its time is
    larger). Both observed: the sign of the difference (ties count for neither). One censored at
    or after the other's observed time: the censored run is the slower. Both censored, or
    censored before the other's time: the order is unknown and the pair counts for neither."""
    ta, ca = np.asarray(t_arm, dtype=float), np.asarray(censored_arm, dtype=bool)
    tp, cp = np.asarray(t_paper, dtype=float), np.asarray(censored_paper, dtype=bool)
    slower = (~ca & ~cp & (ta > tp)) | (ca & ~cp & (ta >= tp))
    faster = (~ca & ~cp & (ta < tp)) | (~ca & cp & (tp >= ta))
    return slower.sum(axis=-1), faster.sum(axis=-1)


def sign_test_p(slower, faster) -> np.ndarray:
    """Exact two-sided binomial p (success probability 1/2) of `slower` out of slower + faster;
    the same as scipy.stats.binomtest(k, n).pvalue, vectorised. nan when no pair is ordered."""
    k, m = np.asarray(slower), np.asarray(slower) + np.asarray(faster)
    p = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(k, m - k), m, 0.5))
    return np.where(m > 0, p, np.nan)


def times_p(t_arm, censored_arm, t_paper, censored_paper) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p for paired epochs-to-threshold (arm vs paper) along the last axis, and whether the
    sign test gave it. No censored run: `paired_p` of log(t_arm / t_paper). Any censored run: the
    exact sign test on the ordered pairs (censored times have no value to average)."""
    ca, cp = np.asarray(censored_arm, dtype=bool), np.asarray(censored_paper, dtype=bool)
    any_censored = (ca | cp).any(axis=-1)
    p_sign = sign_test_p(*ordered_pairs(t_arm, ca, t_paper, cp))
    ta, tp = np.asarray(t_arm, dtype=float), np.asarray(t_paper, dtype=float)
    p_t = paired_p(np.log(ta / tp)) if ta.shape[-1] >= 2 else np.full(any_censored.shape, np.nan)
    return np.where(any_censored, p_sign, p_t), any_censored


def seeds_needed(mean: float, sd: float, confidence: float = 0.95) -> int | None:
    """Smallest n whose t-interval, at this mean and spread, would exclude 0.

    This is the n at which an effect of the observed size would be just significant (about 50%
    power), not a power calculation. None when it cannot be estimated (n < 2, a zero mean, or no
    spread: equal differences say nothing about how the next seed will differ)."""
    if not (np.isfinite(mean) and np.isfinite(sd)) or mean == 0 or sd == 0:
        return None
    n = np.arange(2, MAX_SEEDS + 1)
    enough = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n) < abs(mean)
    return int(n[np.argmax(enough)]) if enough.any() else MAX_SEEDS + 1


def pairs_needed_for_sign_test(alpha: float = 0.05) -> int:
    """Fewest ordered pairs with which the exact sign test can reach p < alpha (all pointing one way)."""
    m = 1
    while sign_test_p(m, 0) >= alpha:
        m += 1
    return m


def holm(pvalues, units=None) -> np.ndarray:
    """Holm-adjusted p-values (family-wise error); nan entries stay nan, outside the family.

    `units` (optional, one label per p-value) groups hypotheses that cannot be true together: a
    claim's difference test (effect = 0) and its equivalence test (|effect| >= delta) exclude each
    other. Holm's step k multiplies by the number of hypotheses not yet rejected; with units it
    multiplies by the number of units that still have one (at most one true hypothesis per unit, so
    the first true one rejected meets a multiplier >= the number of true ones: Bonferroni on those,
    Shaffer's argument). Without units every hypothesis is its own unit: plain Holm."""
    p = np.asarray(pvalues, dtype=float)
    labels = list(range(len(p))) if units is None else list(units)
    out = np.full_like(p, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        multiplier = len({labels[j] for j in order[rank:]})
        running = max(running, min(1.0, multiplier * p[i]))
        out[i] = running
    return out


def tost_p(estimate, se, df, delta) -> np.ndarray:
    """p of the equivalence test (two one-sided t-tests) that the effect lies inside (-delta, delta):
    the larger of the p's of 'effect <= -delta' and 'effect >= delta' (Student's t, df degrees of
    freedom). p < alpha exactly when the (1 - 2 alpha) t-interval lies inside +-delta. nan without a
    standard error (n < 2, equal differences: no spread to judge a bound by) or without delta."""
    est, se, df, delta = (np.asarray(x, dtype=float) for x in (estimate, se, df, delta))
    valid = np.isfinite(est) & np.isfinite(se) & (se > 0) & (df >= 1) & np.isfinite(delta) & (delta > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_se, safe_df = np.where(valid, se, 1.0), np.where(valid, df, 1.0)
        above = stats.t.sf((est + delta) / safe_se, safe_df)    # H0: effect <= -delta
        below = stats.t.cdf((est - delta) / safe_se, safe_df)   # H0: effect >= +delta
    return np.where(valid, np.maximum(above, below), np.nan)


def t_power(effect, se, df, alpha) -> np.ndarray:
    """Power of the two-sided t-test at level alpha when the true effect is `effect` and the estimate's
    standard error is `se` (noncentral t with df degrees of freedom, scipy.stats.nct)."""
    crit = stats.t.ppf(1 - np.asarray(alpha, dtype=float) / 2, df)
    nc = np.abs(np.asarray(effect, dtype=float)) / np.asarray(se, dtype=float)
    return stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)


def seeds_for_power(effect: float, se_of, df_of, alpha: float, power: float = 0.8, start: int = 2,
                    limit: int = MAX_SEEDS) -> int | None:
    """Fewest seeds n >= start with t_power(effect, se_of(n), df_of(n), alpha) >= power; None when the
    effect or spread is unknown or zero, limit + 1 when even `limit` seeds are not enough.

    se_of(n), df_of(n): the standard error and degrees of freedom with n seeds (paired: sd / sqrt(n)
    and n - 1; a factorial: from its model)."""
    if not (np.isfinite(effect) and effect != 0):
        return None
    n = np.arange(start, limit + 1)
    df = np.array([df_of(k) for k in n], dtype=float)
    se = np.array([se_of(k) for k in n], dtype=float)
    if not np.all(np.isfinite(se)) or np.any(se <= 0):
        return None
    ok = df >= 1
    enough = np.zeros(len(n), dtype=bool)
    enough[ok] = t_power(effect, se[ok], df[ok], alpha) >= power
    return int(n[np.argmax(enough)]) if enough.any() else limit + 1
