"""Per-run metrics -> effects -> one verdict per claim.

Runs are compared only within a group, and how depends on the group's design (designs.py): in
one-at-a-time, levels and Figure 1 groups each arm against the reference, paired by seed (arm -
paper); in a factorial the main effects and interactions of one linear model (factorial.py).
Verdicts read the final epoch; the best epoch is shown beside them. The headline word follows
Holm's correction over one family per group: its claims' difference and equivalence tests (each
claim counted once, stats.holm), and in a factorial every term reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..curves import TRAIN_ERROR_COLUMN, epochs_to_error
from ..settings import RESULT_NEUTRAL, differences
from .claims import CLAIMS, METRICS, TRICKS
from .designs import ARMS, FACTORIAL, REFERENCE, single_toggle_arms
from .factorial import INTERACTION, MAIN, TERM_COLUMNS, factorial_terms
from .planfile import seed_origins
from .runs import ReportError, Sweep
from .stats import SIGN_FLIP, SIGN_TEST, T_TEST, holm, ordered_pairs, paired_interval, seeds_needed, times_p, tost_p

EFFECT_METRICS = ("test_error", "gap", "test_error_best", "gap_best", "best_epoch", "epochs_ratio")
WITHIN_METRICS = tuple(name for name, spec in METRICS.items() if spec.minus)  # read within the paper runs
EFFECT_COLUMNS = ["group", "design", "ablation", "metric", "label", "unit", "reading", "pairs", "n", "n_paper",
                  "n_ablation", "paper_mean", "ablation_mean", "effect", "low", "high", "sd", "scaled", "se", "df", "p",
                  "method", "observed", "ordered", "seeds_needed", "note", "bound"]

# The verdict words. Only the first two are headline findings (bold, strong colour): they need the
# Holm-adjusted p below alpha.
REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
SUGGESTIVE = "suggestive, not significant after correction"
PAPERS_WAY, AGAINST = "in the paper's direction", "against the paper"   # said after SUGGESTIVE
INCONCLUSIVE = "inconclusive"
EQUIVALENT = "no effect larger than ±"    # + delta: both one-sided tests survive Holm
UNCHANGED = "not tested: the arm changes nothing here"
NOT_RUN = "not run"
FINDINGS = (REPRODUCED, CONTRADICTED)    # findings about the paper's direction; EQUIVALENT is one too


def is_finding(word: str) -> bool:
    return word in FINDINGS or word.startswith(EQUIVALENT)


# keys that may differ between an arm and `paper` without the arm changing anything
SAME_RUN_IGNORES = tuple(RESULT_NEUTRAL) + ("ablation_name",)
COLLAPSE_FACTOR = 1.5     # collapsed: train_clean accuracy never above 1.5 x chance
DEFAULT_CLASSES = 10      # summary.json without num_classes (older runs)


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
    arms: pd.DataFrame = field(default_factory=pd.DataFrame)   # per group x arm: runs, diverged, collapsed, means
    unchanged: list[tuple[str, str]] = field(default_factory=list)  # (group, arm) that change nothing
    terms: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TERM_COLUMNS))  # factorial terms
    deltas: dict = field(default_factory=dict)     # claim id -> smallest effect of interest


def last_value(rows: pd.DataFrame, column: str) -> float:
    values = rows[column].dropna() if column in rows else pd.Series(dtype=float)
    return float(values.iloc[-1]) if len(values) else math.nan


def time_to_error(rows: pd.DataFrame, threshold: float) -> tuple[float, float]:
    """(epochs to the threshold, epochs trained if never reached) from the eval-mode training error;
    one of the two is nan, both when the run logged no train_clean accuracy."""
    if TRAIN_ERROR_COLUMN not in rows:
        return math.nan, math.nan
    curve = rows[["epoch", TRAIN_ERROR_COLUMN]].dropna()
    if curve.empty:
        return math.nan, math.nan
    reached = epochs_to_error(curve.itertuples(index=False, name=None), threshold)
    if reached is None:
        return math.nan, float(curve["epoch"].max()) + 1.0
    return float(reached), math.nan


def metrics_of_run(rows: pd.DataFrame, summary: dict, threshold: float) -> dict:
    scored = rows.dropna(subset=["test/acc"]) if "test/acc" in rows else rows.iloc[0:0]
    classes = summary.get("num_classes") or DEFAULT_CLASSES
    peak = rows[TRAIN_ERROR_COLUMN].max() if TRAIN_ERROR_COLUMN in rows else math.nan
    if not np.isfinite(peak):  # no curve: a run that ended at chance counts as collapsed
        peak = (summary.get("final") or {}).get(TRAIN_ERROR_COLUMN)
    common = {"num_classes": classes, "collapsed": peak is not None and peak <= COLLAPSE_FACTOR / classes,
              "train_clean_error": 1.0 - last_value(rows, TRAIN_ERROR_COLUMN),
              "val_error": 1.0 - last_value(rows, "val/acc")}
    if len(scored):
        gap = scored["gap"] if "gap" in scored else scored.get("train_clean/acc", np.nan) - scored["test/acc"]
        last, best = scored.index[-1], scored["test/acc"].idxmax()
        reached, censored_at = time_to_error(rows, threshold)
        ten_crop = scored.at[last, "test/acc_10crop"] if "test/acc_10crop" in scored else math.nan
        return {"test_error": 1.0 - scored.at[last, "test/acc"], "gap": float(gap.loc[last]),
                "test_error_best": 1.0 - scored.at[best, "test/acc"], "gap_best": float(gap.loc[best]),
                "best_epoch": float(scored.at[best, "epoch"]), "epochs_to_error": reached,
                "censored_at": censored_at, "test_error_10crop": 1.0 - ten_crop,
                "epochs": int(rows["epoch"].max()) + 1, **common}
    # no metrics.csv (or W&B history): final values from summary.json; no curve, so no time to the threshold
    final = summary.get("final") or {}
    best_acc = summary.get("best_test_acc")
    return {"test_error": 1.0 - final["test/acc"] if final.get("test/acc") is not None else math.nan,
            "gap": final.get("gap", math.nan) if final.get("gap") is not None else math.nan,
            "test_error_best": 1.0 - best_acc if best_acc is not None else math.nan, "gap_best": math.nan,
            "best_epoch": summary.get("best_epoch") if summary.get("best_epoch") is not None else math.nan,
            "epochs_to_error": math.nan, "censored_at": math.nan,
            "test_error_10crop": 1.0 - final["test/acc_10crop"] if final.get("test/acc_10crop") is not None
            else math.nan, "epochs": summary.get("epochs") or 0, **common}


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
    never reaches it, or diverged, counts as max_epochs + 1. Ties go to the lower final validation
    error (`val/acc`) when every run has one, else to the lower final eval-mode training error: the
    test set never steers the choice."""
    per_run["used"] = True
    notes = []
    diverged = per_run["status"] == "diverged"
    gridded = per_run[per_run["lr"].notna() & (per_run["ok"] | diverged)]
    for (group, arm), runs in gridded.groupby(["group", "ablation"], sort=False):
        cap = float(runs["max_epochs"].max()) + 1 if runs["max_epochs"].notna().any() else 1e9
        done = runs["ok"]
        tiebreak = "val_error" if runs.loc[done, "val_error"].notna().all() else "train_clean_error"
        scored = runs.assign(e=runs["epochs_to_error"].where(done).fillna(cap),
                             tie=runs[tiebreak].where(done))
        score = scored.groupby("lr")[["e", "tie"]].mean()
        best = score.sort_values(["e", "tie"]).index[0]
        per_run.loc[per_run["lr"].notna() & (per_run["group"] == group) & (per_run["ablation"] == arm)
                    & (per_run["lr"] != best), "used"] = False
        tried = ", ".join(f"{lr:g}: {e:.1f}" for lr, e in score["e"].items())
        tie_name = "validation error" if tiebreak == "val_error" else "final train_clean error"
        notes.append(f"{group}: lr grid, arm `{arm}` uses optim.lr={best:g} (mean epochs to threshold per lr: "
                     f"{tried}; never reached or diverged = {cap:.0f}; ties broken by {tie_name})")
    return notes


def display_scale(unit: str) -> float:
    return 100.0 if unit == "pt" else 1.0


def sign(x: float) -> int:
    return int(np.sign(x)) if np.isfinite(x) else 0


def spread(iv) -> dict:
    """The estimate on its tested scale (pt, or log ratio), its standard error and degrees of freedom:
    what the equivalence test and a power calculation read. No standard error without a t-test."""
    t_test = iv.method == T_TEST
    return {"scaled": iv.mean, "se": iv.sd / math.sqrt(iv.n) if t_test else math.nan,
            "df": iv.n - 1.0 if t_test else math.nan}


def compare_arms(paper: pd.DataFrame, arm: pd.DataFrame, metric: str, confidence: float) -> dict:
    """The paired effect of one metric: per-seed arm - paper (ratio arm/paper for epochs)."""
    spec = METRICS[metric]
    seeds = sorted(set(paper["seed"]) & set(arm["seed"]))
    if spec.unit == "x":
        return compare_times(paper.set_index("seed").loc[seeds], arm.set_index("seed").loc[seeds], metric, confidence)
    a = paper.set_index("seed")[spec.column].loc[seeds].astype(float)
    b = arm.set_index("seed")[spec.column].loc[seeds].astype(float)
    scale = display_scale(spec.unit)
    iv = paired_interval((b - a) * scale, confidence)
    return {"metric": metric, "label": spec.label, "unit": spec.unit, "reading": spec.reading, "pairs": len(seeds),
            "paper_mean": a.mean() * scale, "ablation_mean": b.mean() * scale, "note": "", "bound": "",
            "effect": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n, "sd": iv.sd, "p": iv.p,
            "method": iv.method, "observed": sign(iv.mean), "ordered": math.nan,
            "seeds_needed": seeds_needed(iv.mean, iv.sd, confidence), **spread(iv)}


def compare_within(runs: pd.DataFrame, metric: str, confidence: float) -> dict:
    """A within-run effect (10-patch testing): column - minus of each run, paired by run."""
    spec = METRICS[metric]
    scale = display_scale(spec.unit)
    both = runs[[spec.column, spec.minus]].astype(float).dropna()
    iv = paired_interval((both[spec.column] - both[spec.minus]) * scale, confidence)
    return {"metric": metric, "label": spec.label, "unit": spec.unit, "reading": spec.reading, "pairs": len(both),
            "paper_mean": both[spec.column].mean() * scale, "ablation_mean": both[spec.minus].mean() * scale,
            "note": f"{len(both)} of {len(runs)} runs logged {spec.minus}" if len(both) < len(runs) else "",
            "bound": "", "effect": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n, "sd": iv.sd, "p": iv.p,
            "method": iv.method, "observed": sign(iv.mean), "ordered": math.nan,
            "seeds_needed": seeds_needed(iv.mean, iv.sd, confidence), "n_paper": len(runs), "n_ablation": len(runs),
            **spread(iv)}


def compare_times(paper: pd.DataFrame, arm: pd.DataFrame, metric: str, confidence: float) -> dict:
    """Epochs to the training-error threshold, paired by seed (frames indexed by the common seeds).

    A run that never reached the threshold is censored: its time is more than the epochs it
    trained. Without censoring: paired t-interval of log(arm/paper), back-transformed (geometric
    mean ratio). With any censored run: the exact sign test on the pairs whose order is known
    (`stats.ordered_pairs`), and the geometric mean with censored times at the epochs trained as
    the estimate, which is then a bound (>= when only arm runs were censored, <= when only paper
    runs were), with no interval."""
    spec = METRICS[metric]
    ta, tp = arm["epochs_to_error"].astype(float), paper["epochs_to_error"].astype(float)
    ca, cp = arm["censored_at"].astype(float).notna(), paper["censored_at"].astype(float).notna()
    ta, tp = ta.fillna(arm["censored_at"].astype(float)), tp.fillna(paper["censored_at"].astype(float))
    known = ta.notna() & tp.notna()
    notes = []
    if (~known).any():
        notes.append(f"{int((~known).sum())} seed pair(s) left out: no train_clean curve to read the time from")
    ta, tp, ca, cp = ta[known].to_numpy(), tp[known].to_numpy(), ca[known].to_numpy(), cp[known].to_numpy()
    row = {"metric": metric, "label": spec.label, "unit": spec.unit, "reading": spec.reading, "pairs": len(known),
           "paper_mean": tp.mean() if len(tp) else math.nan, "ablation_mean": ta.mean() if len(ta) else math.nan,
           "bound": "", "ordered": math.nan}
    logs = np.log(ta / tp)
    if not (ca.any() or cp.any()):
        iv = paired_interval(logs, confidence)
        row.update(effect=math.exp(iv.mean) if iv.n else math.nan, low=math.exp(iv.low), high=math.exp(iv.high),
                   n=iv.n, sd=iv.sd, p=iv.p, method=iv.method, observed=sign(iv.mean),
                   seeds_needed=seeds_needed(iv.mean, iv.sd, confidence), **spread(iv))
        return {**row, "note": "; ".join(notes)}
    slower, faster = (int(x) for x in ordered_pairs(ta, ca, tp, cp))
    p, _ = times_p(ta, ca, tp, cp)
    bound = "lower" if not cp.any() else "upper" if not ca.any() else "none"
    notes.append(f"never reached the threshold (censored at the epochs trained): {int(ca.sum())} arm and "
                 f"{int(cp.sum())} paper run(s); exact sign test on the {slower + faster} pair(s) whose order is "
                 f"known ({slower} arm slower, {faster} faster)")
    row.update(effect=math.exp(logs.mean()), low=math.nan, high=math.nan, n=len(ta), sd=math.nan, p=float(p),
               scaled=float(logs.mean()), se=math.nan, df=math.nan, method=SIGN_TEST, observed=sign(slower - faster),
               ordered=slower + faster, seeds_needed=None, bound=bound)
    return {**row, "note": "; ".join(notes)}


def changes_nothing(paper: pd.DataFrame, arm: pd.DataFrame) -> bool:
    """True when, for every seed both arms ran, the arm's resolved config equals the paper run's
    apart from ablation_name and the result-neutral keys (e.g. no_dropout on a net without dropout).
    Unknown (no configs) counts as changed."""
    configs_p = paper.set_index("seed")["config"]
    configs_a = arm.set_index("seed")["config"]
    seeds = [s for s in set(configs_p.index) & set(configs_a.index) if configs_p[s] and configs_a[s]]
    return bool(seeds) and all(not differences(configs_p[s], configs_a[s], ignore=SAME_RUN_IGNORES) for s in seeds)


def arm_order(arms) -> list[str]:
    """The paper's arm first, then the tricks in TRICKS order, then any other arm by name."""
    order = [REFERENCE, *TRICKS]
    return sorted(set(arms), key=lambda a: (order.index(a) if a in order else len(order), a))


def completed_runs(runs: pd.DataFrame, where: str, warnings: list[str]) -> pd.DataFrame:
    """The completed runs a comparison uses: one per arm and seed (the last, with a warning)."""
    done = runs[runs["ok"] & runs["used"]]
    for d in done[done.duplicated(["ablation", "seed"], keep="last")].itertuples():
        last = done[(done.ablation == d.ablation) & (done.seed == d.seed)].run.iloc[-1]
        warnings.append(f"{where}{d.ablation} seed {d.seed} has more than one completed run; using the last ({last})")
    return done.drop_duplicates(["ablation", "seed"], keep="last")


def arm_health(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per group and arm: seeds run (completed or diverged), how many diverged (no final metrics)
    and how many collapsed (completed, train_clean accuracy never above 1.5 x chance), and the
    final-epoch means of the completed runs."""
    rows = []
    used = per_run[per_run["used"]]
    for group, runs in used.groupby("group", sort=True):
        done = runs[runs["ok"]].drop_duplicates(["ablation", "seed"], keep="last")
        for arm in arm_order(runs["ablation"]):
            ok = done[done["ablation"] == arm]
            div = set(runs.loc[(runs["ablation"] == arm) & (runs["status"] == "diverged"), "seed"].dropna())
            div -= set(ok["seed"])
            if ok.empty and not div:
                continue
            rows.append({"group": group, "ablation": arm, "runs": len(ok) + len(div), "completed": len(ok),
                         "diverged": len(div), "collapsed": int(ok["collapsed"].sum()),
                         "train_clean_acc": (1.0 - ok["test_error"] + ok["gap"]).mean(),
                         "test_acc": (1.0 - ok["test_error"]).mean(), "gap": ok["gap"].mean()})
    return pd.DataFrame(rows, columns=["group", "ablation", "runs", "completed", "diverged", "collapsed",
                                       "train_clean_acc", "test_acc", "gap"])


def resolve_deltas(deltas: dict | None) -> dict[str, float]:
    """Every claim's smallest effect of interest: the claims table's, replaced where `deltas` says."""
    known = {c.id: c for c in CLAIMS}
    out = {c.id: float(c.delta) for c in CLAIMS}
    for cid, value in (deltas or {}).items():
        if cid not in known:
            raise ReportError(f"--delta {cid}={value}: no claim {cid!r}; claims: {', '.join(known)}")
        ratio = METRICS[known[cid].metric].unit == "x"
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > (1.0 if ratio else 0.0)):
            what = "a ratio > 1 (e.g. 1.25)" if ratio else "a positive number of percentage points (e.g. 0.5)"
            raise ReportError(f"--delta {cid}={value} is not valid; give {what}")
        out[cid] = float(value)
    return out


def analyse(sweep: Sweep, confidence: float = 0.95, alpha: float = 0.05, deltas: dict | None = None) -> Analysis:
    deltas = resolve_deltas(deltas)
    per_run = per_run_metrics(sweep)
    notes = choose_lr(per_run)
    warnings = seed_plans(per_run, sweep.plans)
    effects, terms, unchanged = [], [], []
    multi = per_run["group"].nunique() > 1
    for group, runs in per_run.groupby("group", sort=True):
        where = f"{group}: " if multi else ""
        done = completed_runs(runs, where, warnings)
        custom = sorted(set(done.loc[done["custom"], "ablation"]))
        if custom:
            warnings.append(f"{where}runs changing several toggles outside the group's design are not compared "
                            f"(custom): {', '.join(custom)}")
            done = done[~done["custom"]]
        if len(done) and done["design"].iloc[0] == FACTORIAL:
            terms.append(factorial_group(runs, done, where, confidence, warnings))
            continue
        effects += pairwise_effects(group, done, where, confidence, warnings, unchanged)
    effects = pd.DataFrame(effects, columns=EFFECT_COLUMNS)
    terms = pd.concat(terms, ignore_index=True) if terms else pd.DataFrame(columns=TERM_COLUMNS)
    single = effects[(effects["n"] == 1) & effects["metric"].isin(["test_error", *WITHIN_METRICS])]
    for s in single.itertuples():
        warnings.append(f"{s.group + ': ' if multi else ''}{s.ablation}: only one seed pair, so no interval and "
                        "no verdict beyond 'inconclusive'; run more seeds (seed=0,1,2)")
    tied = effects[(effects["method"] == SIGN_FLIP) & effects["metric"].isin(["test_error", "gap", *WITHIN_METRICS])]
    for s in tied.itertuples():
        warnings.append(f"{s.group + ': ' if multi else ''}{s.ablation}, {s.metric}: all {s.n} seed pairs gave the "
                        f"same difference (a tie of accuracies counted in whole images), so there is no interval; "
                        f"its p = {s.p:.3g} is the exact sign-flip p (2^(1-n), or 1 when all are zero); "
                        "run more seeds")
    arms = arm_health(per_run)
    claims, terms = judge(effects, terms, unchanged, arms, confidence, alpha, deltas)
    return Analysis(sweep, per_run, effects, claims, problems_of(per_run), warnings, notes, confidence, alpha,
                    arms, unchanged, terms, deltas)


def seed_plans(per_run: pd.DataFrame, plans: list[dict]) -> list[str]:
    """Fill per_run['plan'] (which plan each run's seed came from, planfile.seed_origins) per sweep
    folder holding plans; return the warnings (seeds beyond the plan, planned seeds not run)."""
    per_run["plan"] = ""
    warnings = []
    for folder, of_folder in plans_by_folder(plans).items():
        inside = per_run["path"].astype(str).str.startswith(folder + "/") & per_run["seed"].notna()
        origin, said = seed_origins(of_folder, per_run.loc[inside, "seed"])
        per_run.loc[inside, "plan"] = [origin.get(int(s), "") for s in per_run.loc[inside, "seed"]]
        warnings += said
    return warnings


def factorial_group(runs: pd.DataFrame, done: pd.DataFrame, where: str, confidence: float,
                    warnings: list[str]) -> pd.DataFrame:
    """The factorial model's terms for one group, with what the model leaves out said."""
    counts = done.groupby("ablation")["seed"].nunique()
    if counts.nunique() > 1:
        warnings.append(f"{where}cells have unequal numbers of completed seeds (min {counts.min()}, max "
                        f"{counts.max()}); the linear model uses every completed run")
    diverged = runs[runs["status"] == "diverged"]
    if len(diverged):
        warnings.append(f"{where}{len(diverged)} run(s) diverged and are not in the factorial model (no final "
                        f"metrics): {', '.join(sorted(set(diverged['ablation'])))}; the effects describe the runs "
                        "that trained")
    return factorial_terms(done, confidence)


def plans_by_folder(plans: list[dict]) -> dict[str, list[dict]]:
    """The plans of each sweep folder (the folder holding plans/), in plan order."""
    out: dict[str, list[dict]] = {}
    for plan in plans:
        out.setdefault(str(Path(plan["path"]).parent.parent), []).append(plan)
    return out


def pairwise_effects(group: str, done: pd.DataFrame, where: str, confidence: float, warnings: list[str],
                     unchanged: list[tuple[str, str]]) -> list[dict]:
    """Each arm of a one-at-a-time, levels or Figure 1 group against its reference, paired by seed."""
    counts = done.groupby("ablation")["seed"].nunique()
    design = done["design"].iloc[0] if len(done) else ""
    if counts.nunique() > 1:
        shown = ", ".join(f"{a} {n}" for a, n in counts.items())
        warnings.append(f"{where}arms have unequal numbers of completed seeds ({shown}); each effect uses only "
                        "the seeds both of its arms completed")
    arms = [a for a in arm_order(done["ablation"]) if a != REFERENCE]
    if REFERENCE not in counts.index:
        if arms:
            warnings.append(f"{where}no completed run at the reference (the paper's settings): "
                            f"{', '.join(arms)} cannot be compared")
        return []
    effects = []
    paper = done[done["ablation"] == REFERENCE]
    for ablation in arms:
        arm = done[done["ablation"] == ablation]
        if changes_nothing(paper, arm):
            unchanged.append((group, ablation))
            warnings.append(f"{where}{ablation} changes nothing in this group (same resolved settings as paper): "
                            "not compared, no verdict, left out of the Holm family")
            continue
        for only, other, seeds in ((REFERENCE, ablation, set(paper.seed) - set(arm.seed)),
                                   (ablation, REFERENCE, set(arm.seed) - set(paper.seed))):
            if seeds:
                warnings.append(f"{where}{ablation} vs paper: seed(s) {', '.join(map(str, sorted(seeds)))} "
                                f"completed by {only} but not by {other}; left out of this comparison")
        for metric in EFFECT_METRICS:
            effects.append({"group": group, "design": design, "ablation": ablation,
                            **compare_arms(paper, arm, metric, confidence),
                            "n_paper": len(paper), "n_ablation": len(arm)})
    for metric in WITHIN_METRICS:
        if paper[METRICS[metric].minus].notna().any():
            effects.append({"group": group, "design": design, "ablation": REFERENCE,
                            **compare_within(paper, metric, confidence)})
    return effects


def verdict(direction: int, observed: int, p: float, p_holm: float, alpha: float, p_equiv_holm: float = math.nan,
            delta: str = "δ") -> str:
    """The headline word: a finding only when it survives Holm's correction: reproduced/contradicted
    (the estimate's sign against the paper's) when the difference test does, else 'no effect larger
    than +-delta' when the equivalence test does; 'suggestive' when only the raw p is below alpha."""
    if np.isfinite(p_holm) and p_holm < alpha:
        return REPRODUCED if observed == direction else CONTRADICTED
    if np.isfinite(p_equiv_holm) and p_equiv_holm < alpha:
        return f"{EQUIVALENT}{delta}"
    if np.isfinite(p) and p < alpha:
        return f"{SUGGESTIVE} ({PAPERS_WAY if observed == direction else AGAINST})"
    return INCONCLUSIVE


def delta_text(delta: float, unit: str) -> str:
    return f"{delta:g}×" if unit == "x" else f"{delta:g} pt"


def size_vs_paper(claim, e: dict, null: float) -> tuple[str, str]:
    """(kind, text): where the paper's figure lies against our interval, measured as a size in the
    direction the paper predicts. ("", "") when the paper gives no figure."""
    if claim.paper_value is None:
        return "", ""

    def size(x: float) -> float:  # distance from the null towards the paper's direction
        return claim.direction * (math.log(x) if null == 1.0 else x - null)

    paper = size(claim.paper_value)
    fig = f"{claim.paper_value:g}"
    if np.isfinite(e["low"]) and np.isfinite(e["high"]):
        low, high = sorted((size(e["low"]), size(e["high"])))
        if high < 0:
            return "opposite", f"ours points the other way (the paper's {fig} is beyond our interval)"
        if low <= paper <= high:
            return "same size", f"paper's figure ({fig}) inside our interval (same size)"
        if high < paper:
            return "smaller", f"ours smaller than the paper's {fig} (it lies beyond our interval)"
        return "larger", f"ours larger than the paper's {fig} (it lies between the null and our interval)"
    if not np.isfinite(e.get("effect", math.nan)):
        return "", ""
    ours = size(e["effect"])
    if e.get("bound") == "none":
        return "cannot say", f"cannot say: runs of both arms censored, so no bound to set beside the paper's {fig}"
    if e.get("bound") in ("lower", "upper"):
        at_least = (e["bound"] == "lower") == (claim.direction > 0)  # the bound holds our size from below
        if at_least and ours >= paper:
            return "≥ paper", f"ours at least as large as the paper's {fig} (a bound, no interval)"
        if not at_least and ours <= paper:
            return "≤ paper", f"ours no larger than the paper's {fig} (a bound, no interval)"
        return "cannot say", f"cannot say: ours is a bound on the near side of the paper's {fig}"
    return "no interval", (f"no interval to compare with the paper's {fig} "
                           f"(the estimate is {'above' if ours > paper else 'below'} it)")


def failure_caveat(arms: pd.DataFrame, group: str, arm: str) -> str:
    """'tanh diverged 2 of 5 (paper 0 of 5)' when the arm fails to train more often than paper."""
    if arm == REFERENCE:
        return ""
    rows = arms[arms["group"] == group].set_index("ablation")
    if arm not in rows.index or REFERENCE not in rows.index:
        return ""
    a, p = rows.loc[arm], rows.loc[REFERENCE]
    said = [f"{arm} {what} {a[what]} of {a['runs']} (paper {p[what]} of {p['runs']})"
            for what in ("diverged", "collapsed") if a[what] / a["runs"] > p[what] / p["runs"]]
    return "; ".join(said)


def claim_terms(terms: pd.DataFrame, claim) -> pd.DataFrame:
    """The factorial terms that answer a claim: its main effect (the claim's arm is one toggle value, a
    factor of the group at exactly that level) or, for a claim with an `interaction` arm, the two arms'
    interaction; only where the claim's metric was modelled."""
    arms = [a for a in (claim.ablation, claim.interaction) if a]
    settings = [ARMS.get(a, {}) for a in arms]
    if any(len(s) != 1 for s in settings) or terms.empty:
        return terms.iloc[0:0]
    keys = {next(iter(s)) for s in settings}
    names = {single_toggle_arms().get(next(iter(s.items()))) for s in settings}
    kind = INTERACTION if claim.interaction else MAIN
    return terms[(terms["kind"] == kind) & (terms["metric"] == claim.metric)
                 & terms["term"].map(lambda t: set(t.split(" × ")) == names)
                 & terms["factors"].map(lambda f: set(f) == keys and len(f) == len(keys))]


def equivalence_p(row: dict, delta: float) -> float:
    """TOST p of |effect| < delta on the tested scale (pt; log ratio for 'x', delta as a ratio)."""
    scaled_delta = math.log(delta) if row["unit"] == "x" else delta
    return float(tost_p(row.get("scaled", math.nan), row.get("se", math.nan), row.get("df", math.nan), scaled_delta))


CLAIM_FIELDS = ("group", "design", "n", "pairs", "paper_mean", "ablation_mean", "effect", "low", "high", "p", "method",
                "observed", "ordered", "bound", "note", "seeds_needed", "scaled", "se", "df")


def claim_rows(claim, effects: pd.DataFrame, terms: pd.DataFrame, unchanged, arms: pd.DataFrame,
               delta: float) -> list[dict]:
    spec = METRICS[claim.metric]
    null = 1.0 if spec.unit == "x" else 0.0
    base = {"claim": claim.id, "ablation": claim.ablation, "section": claim.section, "statement": claim.claim,
            "metric": claim.metric, "label": spec.label, "unit": spec.unit, "reading": spec.reading,
            "direction": claim.direction, "paper": claim.paper, "paper_value": claim.paper_value,
            "short": claim.short, "later": claim.later, "later_value": claim.later_value, "delta": delta}
    # an interaction is a factorial's term, never one arm's effect
    found = (effects.iloc[0:0] if claim.interaction
             else effects[(effects["ablation"] == claim.ablation) & (effects["metric"] == claim.metric)])
    answered = claim_terms(terms, claim)
    idle = [g for g, a in unchanged if a == claim.ablation]
    rows = [{**base, "group": g, "verdict": UNCHANGED, "n": 0} for g in idle]
    if found.empty and answered.empty and not idle:
        rows.append({**base, "group": "", "verdict": NOT_RUN, "n": 0})
    for e in found.to_dict("records"):
        beside = {}
        if spec.best_of:
            b = effects[(effects["group"] == e["group"]) & (effects["ablation"] == claim.ablation)
                        & (effects["metric"] == spec.best_of)].iloc[0]
            beside = {"best_effect": b.effect, "best_low": b.low, "best_high": b.high,
                      "paper_best_epoch": mean_of(effects, e["group"], claim.ablation, "paper_mean"),
                      "ablation_best_epoch": mean_of(effects, e["group"], claim.ablation, "ablation_mean")}
        rows.append({**base, **{k: e[k] for k in CLAIM_FIELDS}, "term": "",
                     **dict(zip(("vs_paper_kind", "vs_paper"), size_vs_paper(claim, e, null))),
                     "caveat": failure_caveat(arms, e["group"], claim.ablation), **beside,
                     "p_equiv": equivalence_p(e, delta)})
    for t in answered.to_dict("records"):
        e = {**t, "effect": t["estimate"], "n": t["runs"], "pairs": t["runs"], "bound": "", "ordered": math.nan,
             "observed": sign(t["scaled"]), "seeds_needed": None, "paper_mean": math.nan, "ablation_mean": math.nan,
             "design": FACTORIAL}
        rows.append({**base, **{k: e.get(k) for k in CLAIM_FIELDS}, "term": t["term"],
                     **dict(zip(("vs_paper_kind", "vs_paper"), size_vs_paper(claim, e, null))), "caveat": "",
                     "p_equiv": equivalence_p(e, delta)})
    return rows


def judge(effects: pd.DataFrame, terms: pd.DataFrame, unchanged: list[tuple[str, str]], arms: pd.DataFrame,
          confidence: float, alpha: float, deltas: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [r for claim in CLAIMS for r in claim_rows(claim, effects, terms, unchanged, arms, deltas[claim.id])]
    claims = pd.DataFrame(rows)
    for column in ("p", "observed", "seeds_needed", "p_equiv", "se", "df", "scaled"):
        if column not in claims:
            claims[column] = np.nan
    for column in ("method", "bound", "note", "vs_paper", "vs_paper_kind", "caveat", "term", "design"):
        claims[column] = claims[column].fillna("") if column in claims else ""
    claims["p_holm"], claims["p_equiv_holm"] = np.nan, np.nan
    terms = terms.copy()
    terms["p_holm"] = np.nan
    factorial_groups = set(terms["group"])
    for group, rows_of_group in claims.groupby("group"):
        if group in factorial_groups:
            continue
        adjusted = holm(np.concatenate([rows_of_group["p"].to_numpy(dtype=float),
                                        rows_of_group["p_equiv"].to_numpy(dtype=float)]),
                        units=list(rows_of_group["claim"]) * 2)
        claims.loc[rows_of_group.index, "p_holm"] = adjusted[:len(rows_of_group)]
        claims.loc[rows_of_group.index, "p_equiv_holm"] = adjusted[len(rows_of_group):]
    for group in factorial_groups:
        adjust_factorial_family(claims, terms, group)
    judged = ~claims["verdict"].isin([UNCHANGED, NOT_RUN])
    claims.loc[judged, "verdict"] = [
        verdict(int(r.direction), int(r.observed) if np.isfinite(r.observed) else 0, r.p, r.p_holm, alpha,
                r.p_equiv_holm, delta_text(r.delta, r.unit)) for r in claims[judged].itertuples()]
    claims["survives_holm"] = None
    tested = claims["p_holm"].notna()
    claims.loc[tested, "survives_holm"] = claims.loc[tested, "p_holm"] < alpha
    claims["equivalent"] = claims["p_equiv_holm"] < alpha
    claims.loc[claims["verdict"] != INCONCLUSIVE, "seeds_needed"] = None
    terms["survives_holm"] = terms["p_holm"] < alpha
    return claims, terms


def adjust_factorial_family(claims: pd.DataFrame, terms: pd.DataFrame, group: str) -> None:
    """One family per factorial group: every term of every metric (difference tests), plus the
    equivalence tests of the terms that answer a claim, each term counted once."""
    in_terms = terms.index[terms["group"] == group]
    in_claims = claims.index[(claims["group"] == group) & (claims["term"] != "")]
    units = [(terms.at[i, "term"], terms.at[i, "metric"]) for i in in_terms]
    units += [(claims.at[i, "term"], claims.at[i, "metric"]) for i in in_claims]
    p = np.concatenate([terms.loc[in_terms, "p"].to_numpy(dtype=float),
                        claims.loc[in_claims, "p_equiv"].to_numpy(dtype=float)])
    adjusted = holm(p, units=units)
    terms.loc[in_terms, "p_holm"] = adjusted[:len(in_terms)]
    by_unit = dict(zip(units[:len(in_terms)], adjusted[:len(in_terms)]))
    for i, q in zip(in_claims, adjusted[len(in_terms):]):
        claims.at[i, "p_holm"] = by_unit[(claims.at[i, "term"], claims.at[i, "metric"])]
        claims.at[i, "p_equiv_holm"] = q


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


def level_order(values: list, reference) -> list:
    """Levels of one toggle for tables and plots: numbers (and booleans) ascending; otherwise the
    levels an ablation file sets in the order of the arms, then any other, the reference last."""
    if all(isinstance(v, (int, float)) for v in values):
        return sorted(values)
    arms = list(ARMS)
    named = {v: arms.index(a) for (k, v), a in single_toggle_arms().items()}
    return sorted(values, key=lambda v: (v == reference, named.get(v, len(arms)), str(v)))


def level_summary(analysis, group: str) -> pd.DataFrame:
    """Per level of a levels group's toggle: seeds, the mean test error and gap (pt) with t-intervals
    over seeds, and the arm it is (the dose-response plot and table read this)."""
    runs = analysis.per_run
    done = runs[(runs["group"] == group) & runs["ok"] & runs["used"] & ~runs["custom"]]
    key = next((k for c in done["changes"] for k in c), None)
    if key is None:
        return pd.DataFrame()
    levels = {repr(t[key]): t[key] for t in done["toggles"]}
    at_reference = [t[key] for t, c in zip(done["toggles"], done["changes"]) if not c]
    reference = at_reference[0] if at_reference else None
    rows = []
    for value in level_order(list(levels.values()), reference):
        at = done[done["toggles"].map(lambda t, v=value: repr(t[key]) == repr(v))]
        row = {"toggle": key, "level": value, "arm": at["ablation"].iloc[0], "seeds": at["seed"].nunique(),
               "reference": bool(at_reference) and repr(value) == repr(reference)}
        for metric in ("test_error", "gap"):
            iv = paired_interval(at[metric].astype(float) * 100, analysis.confidence)
            row.update({metric: iv.mean, f"{metric}_low": iv.low, f"{metric}_high": iv.high})
        rows.append(row)
    return pd.DataFrame(rows)
