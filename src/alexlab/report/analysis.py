"""Per-run metrics -> paired effects (ablation - paper, same seed) -> one verdict per claim.

Runs are compared only within a group: same experiment name and same overrides apart from
`ablation` and `seed`. Verdicts read the final epoch; the best epoch is shown beside them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .claims import CLAIMS, METRICS, TRICKS
from .load import REFERENCE, Sweep
from .stats import holm, paired_interval, seeds_needed
EFFECT_METRICS = ("test_error", "gap", "test_error_best", "gap_best", "best_epoch", "epochs_ratio")


@dataclass
class Analysis:
    sweep: Sweep
    per_run: pd.DataFrame          # one row per run: status and the derived metrics
    effects: pd.DataFrame          # one row per group x ablation x metric
    claims: pd.DataFrame           # one row per claim (x group): verdict and correction
    problems: pd.DataFrame         # failed and missing trials
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # choices the report made (lr grid)
    confidence: float = 0.95
    alpha: float = 0.05


def first_below(rows: pd.DataFrame, threshold: float) -> float:
    """Epochs (1-based count) until the as-trained training error first drops below threshold."""
    if "train/acc" not in rows:
        return math.nan
    hit = rows[(1.0 - rows["train/acc"]) < threshold]
    return float(hit["epoch"].iloc[0] + 1) if len(hit) else math.nan


def metrics_of_run(rows: pd.DataFrame, summary: dict, threshold: float) -> dict:
    scored = rows.dropna(subset=["test/acc"]) if "test/acc" in rows else rows.iloc[0:0]
    if len(scored):
        gap = scored["gap"] if "gap" in scored else scored.get("train_clean/acc", np.nan) - scored["test/acc"]
        last, best = scored.index[-1], scored["test/acc"].idxmax()
        return {"test_error": 1.0 - scored.at[last, "test/acc"], "gap": float(gap.loc[last]),
                "test_error_best": 1.0 - scored.at[best, "test/acc"], "gap_best": float(gap.loc[best]),
                "best_epoch": float(scored.at[best, "epoch"]), "epochs_to_error": first_below(rows, threshold),
                "epochs": int(rows["epoch"].max()) + 1}
    final = summary.get("final") or {}  # no metrics.csv (or W&B history): fall back to summary.json
    best_acc = summary.get("best_test_acc")
    return {"test_error": 1.0 - final["test/acc"] if final.get("test/acc") is not None else math.nan,
            "gap": final.get("gap", math.nan) if final.get("gap") is not None else math.nan,
            "test_error_best": 1.0 - best_acc if best_acc is not None else math.nan, "gap_best": math.nan,
            "best_epoch": summary.get("best_epoch") if summary.get("best_epoch") is not None else math.nan,
            "epochs_to_error": summary.get("epochs_to_train_error") or math.nan,
            "epochs": summary.get("epochs") or 0}


def per_run_metrics(sweep: Sweep) -> pd.DataFrame:
    rows = []
    by_run = dict(tuple(sweep.history.groupby("run"))) if len(sweep.history) else {}
    for run in sweep.runs.itertuples(index=False):
        history = by_run.get(run.run, pd.DataFrame(columns=["epoch"]))
        rows.append({**metrics_of_run(history.reset_index(drop=True), run.summary or {}, run.error_threshold)})
    derived = pd.DataFrame(rows, index=sweep.runs.index)
    return pd.concat([sweep.runs.drop(columns=["summary"]), derived], axis=1)


def choose_lr(per_run: pd.DataFrame) -> list[str]:
    """An activation x lr grid (sweep relu_vs_tanh): per group and arm keep the lr that reaches the
    training-error threshold first on average over seeds (the paper tuned lr per net); a run that
    never reaches it counts as max_epochs + 1. Ties go to the lower final test error."""
    per_run["used"] = True
    notes = []
    gridded = per_run[per_run["lr"].notna() & per_run["ok"]]
    for (group, arm), runs in gridded.groupby(["group", "ablation"], sort=False):
        cap = float(runs["max_epochs"].max()) + 1 if runs["max_epochs"].notna().any() else 1e9
        score = runs.assign(e=runs["epochs_to_error"].fillna(cap)).groupby("lr")[["e", "test_error"]].mean()
        best = score.sort_values(["e", "test_error"]).index[0]
        per_run.loc[per_run["lr"].notna() & (per_run["group"] == group) & (per_run["ablation"] == arm)
                    & (per_run["lr"] != best), "used"] = False
        tried = ", ".join(f"{lr:g}: {e:.1f}" for lr, e in score["e"].items())
        notes.append(f"{group}: lr grid, arm `{arm}` uses optim.lr={best:g} (mean epochs to threshold per lr: "
                     f"{tried}; never reached = {cap:.0f})")
    return notes


def display_scale(unit: str) -> float:
    return 100.0 if unit == "pt" else 1.0


def compare_arms(paper: pd.DataFrame, arm: pd.DataFrame, metric: str, confidence: float) -> dict:
    """The paired effect of one metric: per-seed arm - paper (log ratio for ratio metrics)."""
    spec = METRICS[metric]
    a = paper.set_index("seed")[spec.column]
    b = arm.set_index("seed")[spec.column]
    seeds = sorted(set(a.index) & set(b.index))
    a, b = a.loc[seeds].astype(float), b.loc[seeds].astype(float)
    scale = display_scale(spec.unit)
    row = {"metric": metric, "label": spec.label, "unit": spec.unit, "reading": spec.reading, "pairs": len(seeds),
           "paper_mean": a.mean() * scale, "ablation_mean": b.mean() * scale, "note": "", "bound": ""}
    if spec.unit == "x":
        a, b, row["bound"], row["note"] = censored_pairs(paper, arm, seeds, a, b)
        diffs = np.log(b / a).dropna()
        iv = paired_interval(diffs, confidence)
        row.update(effect=math.exp(iv.mean) if iv.n else math.nan, low=math.exp(iv.low), high=math.exp(iv.high))
    else:
        iv = paired_interval((b - a) * scale, confidence)
        row.update(effect=iv.mean, low=iv.low, high=iv.high)
    row.update(n=iv.n, sd=iv.sd, p=iv.p, seeds_needed=seeds_needed(iv.mean, iv.sd, confidence))
    return row


def censored_pairs(paper: pd.DataFrame, arm: pd.DataFrame, seeds: list, a: pd.Series, b: pd.Series):
    """Epochs-to-threshold pairs where a run never reached the threshold. Such a run would have
    reached it at the earliest one epoch after its last, so that value stands in, and the ratio
    arm/paper becomes a bound: at least (the arm never reached it) or at most (the paper run
    never reached it). If both kinds occur, or both runs of a pair never reached it, those pairs
    are left out. Returns (a, b, bound: "lower" | "upper" | "", note)."""
    def cap(runs):  # epochs trained + 1; unknown (0) stays NaN and drops the pair
        epochs = runs.set_index("seed")["epochs"].loc[seeds].astype(float)
        return epochs.where(epochs > 0) + 1

    only_b, only_a = a.notna() & b.isna(), a.isna() & b.notna()
    neither = int((a.isna() & b.isna()).sum())
    bound, note = "", []
    if only_b.any() and not only_a.any():
        b, bound = b.where(~only_b, cap(arm)), "lower"
        note.append(f"{int(only_b.sum())} of {len(seeds)} ablation run(s) never reached the threshold: counted as "
                    "reaching it one epoch after their last, so the ratio is a lower bound")
    elif only_a.any() and not only_b.any():
        a, bound = a.where(~only_a, cap(paper)), "upper"
        note.append(f"{int(only_a.sum())} of {len(seeds)} paper run(s) never reached the threshold: counted as "
                    "reaching it one epoch after their last, so the ratio is an upper bound")
    elif only_a.any():
        a, b = a.where(~only_a), b.where(~only_b)
        note.append(f"{int(only_a.sum() + only_b.sum())} seed pair(s) left out: in some the paper run, in others "
                    "the ablation run never reached the threshold")
    if neither:
        note.append(f"{neither} seed pair(s) left out: neither run reached the threshold")
    return a, b, bound, "; ".join(note)


def analyse(sweep: Sweep, confidence: float = 0.95, alpha: float = 0.05) -> Analysis:
    per_run = per_run_metrics(sweep)
    notes = choose_lr(per_run)
    warnings: list[str] = []
    effects = []
    multi = per_run["group"].nunique() > 1
    for group, runs in per_run.groupby("group", sort=True):
        where = f"{group}: " if multi else ""
        done = runs[runs["ok"] & runs["used"]]
        dupes = done[done.duplicated(["ablation", "seed"], keep="last")]
        for d in dupes.itertuples():
            warnings.append(f"{where}{d.ablation} seed {d.seed} has more than one completed run; using the last "
                            f"({done[(done.ablation == d.ablation) & (done.seed == d.seed)].run.iloc[-1]})")
        done = done.drop_duplicates(["ablation", "seed"], keep="last")
        counts = done.groupby("ablation")["seed"].nunique()
        if counts.nunique() > 1:
            shown = ", ".join(f"{a} {n}" for a, n in counts.items())
            warnings.append(f"{where}arms have unequal numbers of completed seeds ({shown}); each effect uses only "
                            "the seeds both of its arms completed")
        order = list(TRICKS)  # the paper's tricks in section order, then any other arm by name
        arms = sorted((a for a in done["ablation"].unique() if a != REFERENCE),
                      key=lambda a: (order.index(a) if a in order else len(order), a))
        if REFERENCE not in counts.index:
            if arms:
                warnings.append(f"{where}no completed ablation=paper run: {', '.join(arms)} cannot be compared")
            continue
        paper = done[done["ablation"] == REFERENCE]
        for ablation in arms:
            arm = done[done["ablation"] == ablation]
            for only, other, seeds in ((REFERENCE, ablation, set(paper.seed) - set(arm.seed)),
                                       (ablation, REFERENCE, set(arm.seed) - set(paper.seed))):
                if seeds:
                    warnings.append(f"{where}{ablation} vs paper: seed(s) {', '.join(map(str, sorted(seeds)))} "
                                    f"completed by {only} but not by {other}; left out of this comparison")
            for metric in EFFECT_METRICS:
                effects.append({"group": group, "ablation": ablation,
                                **compare_arms(paper, arm, metric, confidence),
                                "n_paper": len(paper), "n_ablation": len(arm)})
    effects = pd.DataFrame(effects, columns=["group", "ablation", "metric", "label", "unit", "reading", "pairs", "n",
                                             "n_paper", "n_ablation", "paper_mean", "ablation_mean", "effect",
                                             "low", "high", "sd", "p", "seeds_needed", "note", "bound"])
    single = effects[(effects["n"] == 1) & (effects["metric"] == "test_error")]
    for s in single.itertuples():
        warnings.append(f"{s.group + ': ' if multi else ''}{s.ablation}: only one seed pair, so no interval and "
                        "no verdict beyond 'inconclusive'; run more seeds (seed=0,1,2)")
    tied = effects[(effects["n"] == 2) & (effects["sd"] == 0) & effects["metric"].isin(["test_error", "gap"])]
    for s in tied.itertuples():
        warnings.append(f"{s.group + ': ' if multi else ''}{s.ablation}, {s.metric}: both seed pairs gave the same "
                        "difference, so there is no spread to build an interval from (a tie on accuracies measured "
                        "in steps of one image); run a third seed")
    claims = judge(effects, confidence, alpha)
    return Analysis(sweep, per_run, effects, claims, problems_of(per_run), warnings, notes, confidence, alpha)


def verdict(direction: int, low: float, high: float, n: int, null: float = 0.0, bound: str = "") -> str:
    """`bound`: the effect is a lower (upper) bound, so only an interval above (below) the null counts."""
    if n < 2 or not (np.isfinite(low) and np.isfinite(high)) or low <= null <= high:
        return "inconclusive"
    if (bound == "lower" and high < null) or (bound == "upper" and low > null):
        return "inconclusive"
    return "reproduced" if (low > null) == (direction > 0) else "contradicted"


def judge(effects: pd.DataFrame, confidence: float, alpha: float) -> pd.DataFrame:
    rows = []
    for claim in CLAIMS:
        spec = METRICS[claim.metric]
        found = effects[(effects["ablation"] == claim.ablation) & (effects["metric"] == claim.metric)]
        base = {"claim": claim.id, "ablation": claim.ablation, "section": claim.section, "statement": claim.claim,
                "metric": claim.metric, "label": spec.label, "unit": spec.unit, "reading": spec.reading,
                "direction": claim.direction, "paper": claim.paper, "paper_value": claim.paper_value,
                "short": claim.short,
                "later": claim.later, "later_value": claim.later_value}
        if found.empty:
            rows.append({**base, "group": "", "verdict": "not run", "n": 0})
            continue
        for e in found.itertuples(index=False):
            null = 1.0 if spec.unit == "x" else 0.0
            v = verdict(claim.direction, e.low, e.high, e.n, null, e.bound)
            beside = {}
            if spec.best_of:
                b = effects[(effects["group"] == e.group) & (effects["ablation"] == claim.ablation)
                            & (effects["metric"] == spec.best_of)].iloc[0]
                beside = {"best_effect": b.effect, "best_low": b.low, "best_high": b.high,
                          "paper_best_epoch": mean_of(effects, e.group, claim.ablation, "paper_mean"),
                          "ablation_best_epoch": mean_of(effects, e.group, claim.ablation, "ablation_mean")}
            rows.append({**base, "group": e.group, "n": e.n, "pairs": e.pairs, "paper_mean": e.paper_mean,
                         "ablation_mean": e.ablation_mean, "effect": e.effect, "low": e.low, "high": e.high,
                         "p": e.p, "bound": e.bound, "verdict": v,
                         "seeds_needed": e.seeds_needed if v == "inconclusive" else None, "note": e.note, **beside})
    claims = pd.DataFrame(rows)
    claims["p_holm"] = holm(claims["p"]) if "p" in claims else np.nan
    tested = claims["p_holm"].notna()
    claims["survives_holm"] = None
    claims.loc[tested, "survives_holm"] = ((claims.loc[tested, "p_holm"] < alpha)
                                           & claims.loc[tested, "verdict"].isin(["reproduced", "contradicted"]))
    return claims


def mean_of(effects: pd.DataFrame, group: str, ablation: str, column: str) -> float:
    hit = effects[(effects["group"] == group) & (effects["ablation"] == ablation) & (effects["metric"] == "best_epoch")]
    return float(hit[column].iloc[0]) if len(hit) else math.nan


def problems_of(per_run: pd.DataFrame) -> pd.DataFrame:
    """Failed or unfinished trial folders, and (ablation, seed) pairs no folder exists for."""
    rows = [{"group": r.group, "ablation": r.ablation, "seed": r.seed, "run": r.run, "problem": r.reason or r.status}
            for r in per_run[~per_run["ok"]].itertuples()]
    for group, runs in per_run.groupby("group"):
        seeds = sorted(s for s in runs["seed"].dropna().unique())
        for ablation in sorted(runs["ablation"].unique()):
            have = set(runs.loc[runs["ablation"] == ablation, "seed"].dropna())
            rows += [{"group": group, "ablation": ablation, "seed": s, "run": "",
                      "problem": "missing: no run folder (other arms have this seed)"} for s in seeds if s not in have]
    return pd.DataFrame(rows, columns=["group", "ablation", "seed", "run", "problem"])
