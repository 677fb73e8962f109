"""PNG plots: per trick, accuracy and gap curves (paper vs ablation); one forest plot of the paired
effects; per levels group a dose-response plot; per factorial group its main effects and interactions.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so nothing here changes the
backend of a notebook or script that imports it.
"""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .analysis import REFERENCE, WITHIN_METRICS, Analysis, level_summary
from .claims import CLAIMS, METRICS, TRICKS
from .designs import LEVELS
from .factorial import MAIN

COLORS = {REFERENCE: "#1f77b4", "ablation": "#d62728"}
METRIC_COLORS = {"test_error": "#1f77b4", "gap": "#ff7f0e", "test_error_best": "#7f7f7f"}


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "group"


def group_slug(group: str) -> str:
    """Short, file-safe and unique: the start of the group's name plus a hash of all of it."""
    return f"{slug(group)[:32]}-{hashlib.sha1(group.encode()).hexdigest()[:6]}"


def seed_curves(analysis: Analysis, group: str, ablation: str, column: str) -> pd.DataFrame:
    """Epoch x seed table of one metric for the completed runs of one arm."""
    runs = analysis.per_run
    picked = runs[(runs["group"] == group) & (runs["ablation"] == ablation) & runs["ok"] & runs["used"]]
    history = analysis.sweep.history
    if column not in history or picked.empty:
        return pd.DataFrame()
    rows = history[history["run"].isin(picked["run"])]
    return rows.pivot_table(index="epoch", columns="run", values=column, aggfunc="last").sort_index()


def band(ax, table: pd.DataFrame, color: str, label: str, style: str = "-") -> None:
    if table.empty:
        return
    mean = table.mean(axis=1)
    ax.plot(table.index, mean, style, color=color, lw=2, label=label)
    if table.shape[1] > 1:
        ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=color, alpha=0.15, lw=0)


def trick_figure(analysis: Analysis, group: str, ablation: str) -> Figure:
    fig = new_figure(11, 4.2)
    acc, gap = fig.subplots(1, 2)
    for arm, color in ((REFERENCE, COLORS[REFERENCE]), (ablation, COLORS["ablation"])):
        clean = seed_curves(analysis, group, arm, "train_clean/acc")
        test = seed_curves(analysis, group, arm, "test/acc")
        n = max(clean.shape[1] if len(clean) else 0, test.shape[1] if len(test) else 0)
        band(acc, clean, color, f"{arm}: train_clean ({n} seed{'s' * (n != 1)})", "-")
        band(acc, test, color, f"{arm}: test", "--")
        g = seed_curves(analysis, group, arm, "gap")
        if g.empty and len(clean) and len(test):
            g = clean - test
        band(gap, g, color, f"{arm} ({n} seed{'s' * (n != 1)})")
    acc.set(title="Accuracy: train_clean (solid) vs test (dashed)", xlabel="epoch", ylabel="accuracy")
    gap.axhline(0, color="black", lw=0.8)
    gap.set(title="Overfitting gap = train_clean acc - test acc", xlabel="epoch", ylabel="gap (accuracy)")
    for ax in (acc, gap):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    heading = TRICKS.get(ablation, ablation)
    fig.suptitle(f"{heading}: paper vs {ablation}" + (f"\n{group}" if analysis.per_run["group"].nunique() > 1
                                                       else "") + "  (line: mean over seeds; band: min-max)",
                 fontsize=11)
    return fig


def point_with_interval(ax, y: float, estimate: float, low: float, high: float, color: str, marker: str = "o") -> None:
    """An estimate with its interval as error bars; an open marker when there is no interval."""
    if math.isfinite(low):
        ax.errorbar(estimate, y, xerr=[[estimate - low], [high - estimate]], fmt=marker, color=color, capsize=3)
    else:
        ax.plot(estimate, y, marker, mfc="white", color=color)


def name_rows(ax, ys, names: list[str], null: float, fontsize: int) -> None:
    ax.axvline(null, color="black", lw=0.8)
    ax.set_yticks(ys, names, fontsize=fontsize)
    ax.grid(axis="x", alpha=0.3)


def ratio_axis(ax, drawn: bool, empty: str) -> None:
    """A log-scale ratio axis labelled 0.5×, 2×; a note instead when nothing was drawn on it."""
    if drawn:
        ax.set_xscale("log")
        for set_formatter in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            set_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    else:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="grey")
        ax.set_yticks([])


def forest_figure(analysis: Analysis) -> Figure:
    fx = analysis.effects
    pts = fx[fx["metric"].isin(["test_error", "gap", *WITHIN_METRICS]) & (fx["n"] > 0)].reset_index(drop=True)
    ratios = fx[(fx["metric"] == "epochs_ratio") & (fx["n"] > 0)].reset_index(drop=True)
    multi = fx["group"].nunique() > 1
    fig = new_figure(11, 1.6 + 0.42 * max(len(pts), len(ratios), 3))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    paper_marks = {(c.ablation, c.metric): c for c in CLAIMS}

    short = {"test_error": "test error", "gap": "gap", "epochs_ratio": "epochs ratio"}

    def label(row) -> str:
        name = f"{row.ablation}: {short.get(row.metric, METRICS[row.metric].label)}"
        return (f"{name}\n{row.group}" if multi else name) + ("  (n=1, no interval)" if row.n == 1 else "")

    for ax, rows, null, unit in ((left, pts, 0.0, "pt"), (right, ratios, 1.0, "x")):
        ys = np.arange(len(rows))[::-1]
        for y, row in zip(ys, rows.itertuples()):
            color = METRIC_COLORS.get(row.metric, "#2ca02c")
            if not math.isfinite(row.effect) or row.bound == "none":  # censored in both arms: no estimate to draw
                continue
            point_with_interval(ax, y, row.effect, row.low, row.high, color)
            claim = paper_marks.get((row.ablation, row.metric))
            if claim and claim.paper_value is not None:
                ax.plot(claim.paper_value, y, "x", color="black", ms=8)
            if claim and claim.later_value is not None:
                ax.plot(claim.later_value, y, "D", color="grey", ms=5, mfc="none")
        name_rows(ax, ys, [label(r) for r in rows.itertuples()], null, 8)
    left.set(title="Effect of removing the trick (ablation - paper), final epoch",
             xlabel="difference in percentage points (> 0: worse / more overfitting without the trick)")
    right.set(title="Epochs to the training-error threshold", xlabel="ratio ablation / paper (log scale)")
    ratio_axis(right, len(ratios) > 0, "no epochs ratio\n(no tanh / no_dropout arm, or no train_clean curve)")
    handles = [left.plot([], [], "o", color=METRIC_COLORS["test_error"], label="test error (95% CI)")[0],
               left.plot([], [], "o", color=METRIC_COLORS["gap"], label="gap (95% CI)")[0],
               left.plot([], [], "x", color="black", label="paper's figure")[0],
               left.plot([], [], "D", color="grey", mfc="none", label="later work")[0]]
    left.legend(handles=handles, fontsize=8, loc="best")
    fig.suptitle(f"All effects with {analysis.confidence:.0%} paired t-intervals over seeds "
                 "(open marker: no interval, e.g. a bound from censored runs)", fontsize=11)
    return fig


def dose_response_figure(analysis: Analysis, group: str) -> Figure | None:
    """Test error and gap (pt) against the level of the swept toggle: mean over seeds, t-interval bars."""
    summary = level_summary(analysis, group)
    if summary.empty:
        return None
    fig = new_figure(10, 4.0)
    axes = fig.subplots(1, 2)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in summary["level"])
    xs = summary["level"].astype(float).to_numpy() if numeric else np.arange(len(summary))
    for ax, metric, color, title in ((axes[0], "test_error", METRIC_COLORS["test_error"], "final test error"),
                                     (axes[1], "gap", METRIC_COLORS["gap"], "final gap (train_clean acc - test acc)")):
        mean = summary[metric].to_numpy(dtype=float)
        low, high = summary[f"{metric}_low"].to_numpy(dtype=float), summary[f"{metric}_high"].to_numpy(dtype=float)
        bars = np.where(np.isfinite(low), [mean - low, high - mean], 0.0)
        ax.errorbar(xs, mean, yerr=bars, fmt="-o", color=color, capsize=4)
        paper = summary["reference"].to_numpy(dtype=bool)
        ax.plot(xs[paper], mean[paper], "s", ms=11, mfc="none", color="black", label="paper's level")
        ax.set(title=title, xlabel=summary["toggle"].iloc[0], ylabel="percent" if metric == "test_error" else "points")
        if not numeric:
            ax.set_xticks(xs, [str(v) for v in summary["level"]])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"Dose-response: mean over seeds with {analysis.confidence:.0%} t-intervals per level (unpaired; "
                 "report.md gives the effects against the paper's level paired by seed)"
                 + (f"\n{group}" if analysis.per_run["group"].nunique() > 1 else ""), fontsize=11)
    return fig


def factorial_figure(analysis: Analysis, group: str) -> Figure:
    """Main effects and two-factor interactions of the factorial model, with their intervals."""
    terms = analysis.terms[analysis.terms["group"] == group]
    pts = terms[terms["unit"] == "pt"].reset_index(drop=True)
    ratios = terms[(terms["unit"] == "x") & terms["estimate"].notna()].reset_index(drop=True)
    fig = new_figure(12, 1.8 + 0.22 * max(len(pts), 3))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for ax, rows, null in ((left, pts, 0.0), (right, ratios, 1.0)):
        ys = np.arange(len(rows))[::-1]
        for y, row in zip(ys, rows.itertuples()):
            color = METRIC_COLORS.get(row.metric, "#2ca02c")
            if not math.isfinite(row.estimate):
                continue
            point_with_interval(ax, y, row.estimate, row.low, row.high, color, "o" if row.kind == MAIN else "s")
        names = [f"{r.term} ({'test error' if r.metric == 'test_error' else r.metric})" for r in rows.itertuples()]
        name_rows(ax, ys, names, null, 7)
    left.set(title="Test error and gap (pt): main effects (o) and interactions (s)",
             xlabel="effect of removing the trick(s), percentage points")
    right.set(title="Epochs to the training-error threshold", xlabel="ratio (log scale)")
    ratio_axis(right, len(ratios) > 0, "no ratio modelled\n(censored runs, or no curve)")
    fig.suptitle(f"{terms['design_text'].iloc[0]}: effects from one linear model, {analysis.confidence:.0%} intervals"
                 + (f"\n{group}" if analysis.per_run["group"].nunique() > 1 else ""), fontsize=11)
    return fig


def write_plots(analysis: Analysis, out: Path) -> dict[tuple[str, str], Path]:
    """Write report_curves_<ablation>.png per compared arm, report_forest.png, report_dose_<toggle>.png per
    levels group and report_factorial_<group>.png per factorial group; return their paths."""
    out = Path(out)
    paths: dict[tuple[str, str], Path] = {}
    multi = analysis.per_run["group"].nunique() > 1
    for (group, ablation), _ in analysis.effects.groupby(["group", "ablation"], sort=False):
        if ablation == REFERENCE:  # within-run effects (10 patches): no second arm to draw
            continue
        name = f"report_curves_{group_slug(group) + '_' if multi else ''}{slug(ablation)}.png"
        trick_figure(analysis, group, ablation).savefig(out / name)
        paths[(group, ablation)] = out / name
    if len(analysis.effects):
        forest_figure(analysis).savefig(out / "report_forest.png")
        paths[("", "forest")] = out / "report_forest.png"
    for group, runs in analysis.per_run.groupby("group", sort=True):
        prefix = group_slug(group) + "_" if multi else ""
        if runs["design"].iloc[0] == LEVELS:
            fig = dose_response_figure(analysis, group)
            if fig is not None:
                toggle = next((k for c in runs["changes"] for k in c), "level")
                paths[(group, "dose")] = out / f"report_dose_{prefix}{slug(toggle)}.png"
                fig.savefig(paths[(group, "dose")])
        if group in set(analysis.terms["group"]):
            paths[(group, "factorial")] = out / (f"report_factorial_{group_slug(group)}.png" if multi
                                                 else "report_factorial.png")
            factorial_figure(analysis, group).savefig(paths[(group, "factorial")])
    return paths
