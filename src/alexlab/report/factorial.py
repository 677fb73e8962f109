"""Two-level factorial designs (sweep=factorial, 2^5; sweep=factorial_half, 2^(5-1)): every main effect
and two-factor interaction from one linear model over all completed runs of a group.

Coding: each toggle is +1 at its non-reference level (the trick removed) and -1 at the reference's
(the paper's), so with coefficient b:
- the **main effect** of removing a trick = 2 b = the mean over runs without it minus the mean over
  runs with it, the other tricks averaged over their levels (not "remove one trick from the paper
  net", which is one-at-a-time's estimand; the two differ when tricks interact);
- the **interaction** of two tricks = 4 b = how much larger the effect of removing the first is when
  the second is removed too than when it is kept (a difference of differences).
Seeds are a block factor (one dummy per seed beyond the first) when the group has replicates: a seed
fixes the data order and the initial draw in every cell, like the pairing of one-at-a-time. The model is
statsmodels' OLS; intervals and p-values are its t (residual degrees of freedom), scaled by 2 or 4.
Epochs to the threshold are modelled on the log scale (a ratio), only when every run reached it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import statsmodels.api as sm

from .claims import METRICS
from .designs import coded, level_text, model_matrix, single_toggle_arms

FACTORIAL_METRICS = ("test_error", "gap", "epochs_ratio")
OLS_T = "OLS t (factorial model)"
MAIN, INTERACTION = "main effect", "interaction"
TERM_COLUMNS = ["group", "design_text", "metric", "label", "unit", "term", "kind", "factors", "estimate", "low",
                "high", "scaled", "se", "df", "p", "method", "runs", "seeds", "cells", "sigma", "params", "blocked",
                "note"]


def factor_name(runs: pd.DataFrame, key: str) -> str:
    """The arm a factor's non-reference level is ('no_dropout'), else 'key=value'."""
    value = next(c[key] for c in runs["changes"] if key in c)
    return single_toggle_arms().get((key, value), level_text(key, value))


def response(runs: pd.DataFrame, metric: str) -> tuple[pd.Series | None, str]:
    """The modelled values (pt, or log epochs) and why there are none."""
    spec = METRICS[metric]
    if spec.unit == "x":
        censored = int(runs["censored_at"].notna().sum())
        if censored:
            return None, (f"{censored} run(s) never reached the threshold: censored times have no value for a "
                          "linear model (one-at-a-time reads them with an exact sign test)")
        y = np.log(runs["epochs_to_error"].astype(float))
    else:
        y = runs[spec.column].astype(float) * 100.0
    if y.isna().any():
        return None, f"{int(y.isna().sum())} run(s) without a value"
    return y, ""


def design_matrix(runs: pd.DataFrame, factors: list[str]) -> tuple[np.ndarray, bool]:
    """The model matrix (intercept, mains, two-factor interactions) and seed block dummies when the
    group holds more than one seed."""
    main = model_matrix(coded(runs, factors))
    seeds = sorted(runs["seed"].unique())
    if len(seeds) < 2:
        return main, False
    blocks = np.column_stack([(runs["seed"] == s).to_numpy(dtype=float) for s in seeds[1:]])
    return np.column_stack([main, blocks]), True


def fit_terms(runs: pd.DataFrame, factors: list[str], metric: str, confidence: float) -> list[dict]:
    """One row per main effect and two-factor interaction of one metric (ok runs of one group)."""
    spec = METRICS[metric]
    names = {k: factor_name(runs, k) for k in factors}
    terms = [(MAIN, (k,)) for k in factors] + [(INTERACTION, pair) for pair in itertools.combinations(factors, 2)]
    base = {"group": runs["group"].iloc[0], "design_text": runs["design_text"].iloc[0], "metric": metric,
            "label": spec.label, "unit": spec.unit, "runs": len(runs), "seeds": runs["seed"].nunique(),
            "cells": len({tuple(sorted(c)) for c in runs["changes"]}), "params": 1 + len(terms), "method": OLS_T}
    rows = [{**base, "term": " × ".join(names[k] for k in ks), "kind": kind, "factors": ks} for kind, ks in terms]
    y, why = response(runs, metric)
    x, blocked = design_matrix(runs, factors)
    if y is None or np.linalg.matrix_rank(x) < x.shape[1]:
        note = why or "the completed runs do not separate every main effect and two-factor interaction"
        return [{**r, "note": note, "blocked": blocked} for r in rows]
    fit = sm.OLS(y.to_numpy(), x).fit()
    note = residual_problem(fit, y)
    ci = fit.conf_int(alpha=1 - confidence) if not note else np.full((x.shape[1], 2), math.nan)
    shown = math.exp if spec.unit == "x" else float
    for j, row in enumerate(rows, start=1):
        scale = 2.0 if row["kind"] == MAIN else 4.0
        estimate = scale * fit.params[j]
        row.update(estimate=shown(estimate), low=shown(scale * ci[j][0]), high=shown(scale * ci[j][1]),
                   scaled=estimate, se=scale * fit.bse[j] if not note else math.nan, df=float(fit.df_resid),
                   p=float(fit.pvalues[j]) if not note else math.nan,
                   sigma=math.sqrt(fit.scale) if not note else math.nan, blocked=blocked, note=note)
    return rows


def residual_problem(fit, y: pd.Series) -> str:
    """Why the model gives no interval: no residual degrees of freedom, or no residual spread (every
    run fitted exactly, e.g. runs tied at chance), where t would be undefined and p would read 0."""
    if fit.df_resid < 1:
        return "no residual degrees of freedom (as many model terms as runs): run more seeds"
    if not fit.scale > 1e-12 * max(1.0, float(np.var(y))):
        return "no residual spread (every run fitted exactly, e.g. tied values): no interval, no p"
    return ""


def factorial_terms(done: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Every term of every factorial metric for one group's completed runs."""
    factors = list(done["factors"].iloc[0])
    rows = [r for metric in FACTORIAL_METRICS for r in fit_terms(done, factors, metric, confidence)]
    return pd.DataFrame(rows, columns=TERM_COLUMNS)
