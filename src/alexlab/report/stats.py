"""The tests behind every verdict: paired t over seeds (exact sign-flip when every difference is
equal), an exact sign test for censored epochs-to-threshold pairs, seeds needed, Holm's correction.

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


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error); nan entries stay nan, outside the family."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    running = 0.0
    for rank, i in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
