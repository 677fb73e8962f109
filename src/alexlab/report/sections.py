"""report.md's sections per design: which design each group forms, the levels of a swept toggle
(with the dose-response plot), the factorial model's terms, and the seed plans."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .analysis import Analysis, arm_order, level_summary
from .claims import METRICS
from .designs import LEVELS, REFERENCE, level_text
from .factorial import MAIN


def fmt(x, digits: int = 2, sign: bool = True) -> str:
    if x is None or pd.isna(x) or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def interval_text(mean, low, high, unit: str = "pt", sign: bool = True) -> str:
    """'+3.06 pt [+2.90, +3.21]', '1.98× [1.93, 2.02]'; unit '%' for an error level, unsigned."""
    if unit == "x":
        return f"{fmt(mean, 2, False)}× [{fmt(low, 2, False)}, {fmt(high, 2, False)}]"
    inside = f" [{fmt(low, 2, sign)}, {fmt(high, 2, sign)}]" if not pd.isna(low) else " (no interval)"
    return f"{fmt(mean, 2, sign)} {unit}{inside}"


def link(plots: dict, key: tuple, out: Path, alt: str) -> list[str]:
    return [f"![{alt}]({plots[key].relative_to(out).as_posix()})", ""] if key in plots else []


def group_designs(analysis: Analysis) -> pd.DataFrame:
    """One row per group: its design, what it varies, its reference, arms or cells, seeds and runs."""
    rows = []
    for group, runs in analysis.per_run.groupby("group", sort=True):
        if not runs["design"].iloc[0]:
            continue
        varied = sorted({k for c in runs["changes"] for k in c})
        reference = runs.loc[runs["changes"].map(len) == 0, "toggles"]
        arms = [a for a in arm_order(runs["ablation"]) if a != REFERENCE]
        rows.append({"group": group, "design": runs["design"].iloc[0], "text": runs["design_text"].iloc[0],
                     "varied": varied, "reference": reference.iloc[0] if len(reference) else None,
                     "arms": arms, "seeds": runs.loc[runs["ok"], "seed"].nunique(), "runs": len(runs),
                     "completed": int(runs["ok"].sum())})
    return pd.DataFrame(rows)


def designs_md(analysis: Analysis) -> list[str]:
    found = group_designs(analysis)
    if found.empty:
        return []
    lines = ["## Designs found", "",
             "Read from each run's resolved config: the toggles are the keys conf/ablation/*.yaml set; a run's arm is "
             "the ablation file(s) its toggles match relative to the group's reference (the paper's settings).", "",
             "| group | design | toggles varied | reference (paper's settings) | arms or cells | seeds | "
             "runs completed |", "|---|---|---|---|---|---|---|"]
    for r in found.itertuples():
        varied = ", ".join(f"`{k}`" for k in r.varied) or "–"
        reference = ", ".join(level_text(k, r.reference[k]) for k in r.varied) if r.reference else "not run"
        arms = ", ".join(f"`{a}`" for a in r.arms) if len(r.arms) <= 8 else f"{len(r.arms)} cells besides `paper`"
        lines.append(f"| {r.group} | {r.text} | {varied} | {reference} | {arms or '–'} | {r.seeds} | "
                     f"{r.completed} of {r.runs} |")
    return lines + [""]


def levels_md(analysis: Analysis, plots: dict, out: Path) -> list[str]:
    groups = [g for g, runs in analysis.per_run.groupby("group", sort=True) if runs["design"].iloc[0] == LEVELS]
    if not groups:
        return []
    c = f"{analysis.confidence:.0%}"
    lines = ["## Levels of one toggle", "",
             f"Each level's mean over seeds with its {c} t-interval; the effects against the paper's level are paired "
             "by seed (tables under \"One arm against the reference\"). A level an ablation file sets answers that "
             "arm's claims in the verdict table.", ""]
    fx = analysis.effects
    for group in groups:
        summary = level_summary(analysis, group)
        if summary.empty:
            continue
        lines += [f"### `{summary['toggle'].iloc[0]}` — {group}", "",
                  f"| level | arm | seeds | test error [{c} CI] | gap [{c} CI] | test error − paper's level | "
                  "gap − paper's level |", "|---|---|---|---|---|---|---|"]
        for r in summary.itertuples():
            versus = []
            for metric in ("test_error", "gap"):
                hit = fx[(fx["group"] == group) & (fx["ablation"] == r.arm) & (fx["metric"] == metric)]
                versus.append("(paper's level)" if r.reference else
                              interval_text(*hit[["effect", "low", "high"]].iloc[0]) if len(hit) else "–")
            lines.append(f"| {r.level}{' (paper)' if r.reference else ''} | `{r.arm}` | {r.seeds} | "
                         f"{interval_text(r.test_error, r.test_error_low, r.test_error_high, '%', sign=False)} | "
                         f"{interval_text(r.gap, r.gap_low, r.gap_high)} | {versus[0]} | {versus[1]} |")
        lines += [""] + link(plots, (group, "dose"), out, "dose-response")
    return lines


FACTORIAL_EXPLAINED = (
    "A **main effect** here is the effect of removing a trick *averaged over the settings of the other tricks* in "
    "the design (mean over the runs without it − mean over the runs with it). One-at-a-time's effect is "
    "something else: removing one trick *from the paper net*, every other trick on. The two agree only when the "
    "trick does not interact with the others. An **interaction** A × B is how much larger the effect of removing "
    "A is when B is removed too than when B is kept (a difference of differences; 0 = the effects add up). Both "
    "come from one least-squares model over all completed runs (statsmodels OLS): intercept, every main effect "
    "and every two-factor interaction, toggles coded ±1, seeds as blocks when there are replicates; intervals "
    "and p-values are the model's t (residual degrees of freedom). Epochs to the threshold are modelled on the "
    "log scale (effects are ratios) when every run reached it. In a half fraction (resolution V) each "
    "two-factor interaction is aliased with a three-factor one, assumed small. The family for Holm's "
    "correction is every term of every metric in the table below, with the equivalence tests of the terms "
    "that answer a claim.")


def factorial_md(analysis: Analysis, plots: dict, out: Path) -> list[str]:
    terms = analysis.terms
    if terms.empty:
        return []
    c = f"{analysis.confidence:.0%}"
    answers = {(r.group, r.term, r.metric): r.claim for r in analysis.claims.itertuples() if r.term}
    lines = ["## Factorial designs", "", FACTORIAL_EXPLAINED, ""]
    for group, rows in terms.groupby("group", sort=True):
        first = rows.iloc[0]
        blocks = (f"seeds as a block factor ({first.seeds} seeds)" if first.blocked
                  else "one seed: no block, higher-order interactions pooled into the error")
        lines += [f"### {first.design_text} — {group}", "",
                  f"{first.runs} completed runs in {first.cells} cells; model: intercept + {first.params - 1} terms; "
                  f"{blocks}; residual degrees of freedom {fmt(first.df, 0, False)}.", "",
                  f"| metric | term | kind | effect [{c} CI] | p (OLS t) | Holm-adjusted p | claim | note |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows.itertuples():
            claim = answers.get((group, r.term, r.metric), "")
            holm = "–" if pd.isna(r.p_holm) else f"{r.p_holm:.3g} ({'survives' if r.survives_holm else 'does not'})"
            effect = interval_text(r.estimate, r.low, r.high, r.unit)
            kind = "main effect (removing it)" if r.kind == MAIN else "interaction"
            lines.append(f"| {METRICS[r.metric].label} | `{r.term}` | {kind} | {effect} | "
                         f"{'–' if pd.isna(r.p) else f'{r.p:.3g}'} | {holm} | {claim or '–'} | {r.note or ''} |")
        lines += [""] + link(plots, (group, "factorial"), out, "factorial effects")
    return lines


def plans_md(analysis: Analysis) -> list[str]:
    plans = analysis.sweep.plans
    if not plans:
        return []
    lines = ["## Seeds and plans", "",
             "Each plan was written by `alexlab-report --plan` before the runs it asked for: the seeds present then, "
             "the seeds it targets and why (80% power for each claim's δ). Seeds present at plan 1 are *initial*; "
             "the `from` column of the runs table says which plan added each seed.", "",
             "| plan | written | git | seeds present | target seeds | command |", "|---|---|---|---|---|---|"]
    for plan in plans:
        lines.append(f"| {plan.get('plan', '?')} ({Path(plan['path']).name}) | {plan.get('date', '?')} | "
                     f"{str(plan.get('git_sha') or '?')[:10]} | {seed_list(plan.get('seeds_present', []))} | "
                     f"{seed_list(plan.get('target_seeds', []))} | `{plan.get('command', '')}` |")
    lines.append("")
    counts = analysis.per_run.loc[analysis.per_run["ok"], ["seed", "plan"]].drop_duplicates()
    for origin, seeds in sorted(counts.groupby("plan"), key=lambda kv: kv[1]["seed"].min()):
        if origin:
            lines.append(f"- {origin}: seeds {seed_list(seeds['seed'])}")
    return lines + [""]


def seed_list(seeds) -> str:
    seeds = sorted(int(s) for s in seeds)
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds)) or "–"

