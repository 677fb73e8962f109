"""Paired t-intervals over seeds, the seeds an inconclusive effect would need, Holm's correction."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

MAX_SEEDS = 10_000  # beyond this "seeds needed" is reported as "> 10000"


@dataclass
class Interval:
    n: int
    mean: float
    sd: float           # nan for n < 2
    low: float          # nan for n < 2 (one seed has no interval) and for 2 seeds with equal differences
    high: float
    p: float            # two-sided paired t-test of mean = 0; nan for n < 2


def paired_interval(diffs, confidence: float = 0.95) -> Interval:
    """Mean of per-seed differences with Student's t-interval (n - 1 degrees of freedom)."""
    d = np.asarray([x for x in diffs if x is not None and np.isfinite(x)], dtype=float)
    n = len(d)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Interval(1, mean, math.nan, math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    if sd <= 1e-9 * max(1.0, abs(mean)):  # every seed gave the same difference (up to float rounding)
        if n == 2:  # two seeds tying on a discrete metric (accuracy in steps of 1/images) is chance:
            return Interval(2, mean, 0.0, math.nan, math.nan, math.nan)  # no spread, so no interval
        return Interval(n, mean, 0.0, mean, mean, 1.0 if mean == 0 else 0.0)
    se = sd / math.sqrt(n)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=se)
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return Interval(n, mean, sd, float(low), float(high), p)


def seeds_needed(mean: float, sd: float, confidence: float = 0.95) -> int | None:
    """Smallest n whose t-interval, at this mean and spread, would exclude 0.

    This is the n at which an effect of the observed size would be just significant (about 50%
    power), not a power calculation. None when it cannot be estimated (n < 2, or a zero mean)."""
    if not (np.isfinite(mean) and np.isfinite(sd)) or mean == 0:
        return None
    if sd == 0:
        return 3  # two equal differences give no interval (paired_interval)
    for n in range(2, MAX_SEEDS + 1):
        if stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n) < abs(mean):
            return n
    return MAX_SEEDS + 1


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
