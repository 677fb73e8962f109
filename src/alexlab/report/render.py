"""report.md, report.csv and the console table from an Analysis."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from .analysis import REFERENCE, Analysis
from .claims import TRICKS
from .stats import MAX_SEEDS


def num(x, digits: int = 2, sign: bool = True) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def effect_text(unit: str, effect, low, high, n, pairs=None, bound: str = "") -> str:
    if not n:
        return "no seed pair reached the threshold" if unit == "x" and pairs else "no paired seeds"
    if unit == "x":
        value = {"lower": "≥ ", "upper": "≤ "}.get(bound or "", "") + f"{num(effect, 2, False)}×"
        interval = f"[{num(low, 2, False)}, {num(high, 2, False)}]"
    else:
        suffix = " pt" if unit == "pt" else " ep"
        value = num(effect, 2 if unit == "pt" else 1) + suffix
        interval = f"[{num(low, 2 if unit == 'pt' else 1)}, {num(high, 2 if unit == 'pt' else 1)}]"
    if n == 1:
        return f"{value} (1 seed, no interval)"
    if n == 2 and pd.isna(low):
        return f"{value} (2 equal differences, no interval)"
    return f"{value} {interval}"


def needed_text(row) -> str:
    if row.get("verdict") != "inconclusive":
        return ""
    if not row.get("n"):
        return "unknown: no usable seed pair"
    if row["n"] < 2:
        return "unknown: 1 seed gives no variance"
    if row["n"] == 2 and pd.isna(row.get("low")):
        return "≥ 3: 2 equal differences give no spread"
    n = row.get("seeds_needed")
    if n is None or pd.isna(n):
        return "unknown: no difference observed"
    return f"> {MAX_SEEDS}" if n > MAX_SEEDS else f"≈ {int(n)}"


def holm_text(row) -> str:
    p = row.get("p_holm")
    if p is None or pd.isna(p):
        return "not tested (n < 2, or 2 equal differences)" if row.get("verdict") != "not run" else ""
    kept = "survives" if row.get("survives_holm") else "does not survive"
    if row.get("verdict") == "inconclusive":
        kept = "—"
    return f"{p:.3g} ({kept})"


def claims_table(analysis: Analysis) -> str:
    multi = analysis.per_run["group"].nunique() > 1
    head = ["claim (section)", "arm", "metric, read at", "paper", "later work", "ours: final epoch",
            "at best epoch (not judged)", "seeds", "verdict", "Holm-adjusted p", "seeds needed"]
    if multi:
        head.insert(1, "group")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in analysis.claims.to_dict("records"):
        if row["verdict"] == "not run":
            ours, best = f"not run (no completed `ablation={row['ablation']}` runs)", ""
        else:
            ours = effect_text(row["unit"], row.get("effect"), row.get("low"), row.get("high"), row.get("n"),
                               row.get("pairs"), row.get("bound"))
            best = ""
            if row.get("best_effect") is not None and not pd.isna(row.get("best_effect")):
                best = (effect_text(row["unit"], row["best_effect"], row["best_low"], row["best_high"], row["n"])
                        + f"; best epoch paper {num(row['paper_best_epoch'], 1, False)}, "
                          f"{row['ablation']} {num(row['ablation_best_epoch'], 1, False)}")
        cells = [f"{row['statement']} ({row['section']})", f"`{row['ablation']}`",
                 f"{row['label']}, {row['reading']}", row["paper"], row["later"] or "–", ours, best or "–",
                 str(int(row.get("n") or 0)), f"**{row['verdict']}**", holm_text(row), needed_text(row) or "–"]
        if multi:
            cells.insert(1, row.get("group") or "–")
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def trick_table(analysis: Analysis, group: str, ablation: str) -> str:
    fx = analysis.effects
    rows = fx[(fx["group"] == group) & (fx["ablation"] == ablation)]
    threshold = analysis.per_run.loc[analysis.per_run["group"] == group, "error_threshold"].iloc[0]
    lines = [f"| metric (read at) | `paper` mean | `{ablation}` mean | effect {ablation} − paper "
             f"[{analysis.confidence:.0%} CI] | seed pairs | note |", "|---|---|---|---|---|---|"]
    for r in rows.itertuples():
        label = f"{r.label} ({r.reading})"
        if r.metric == "epochs_ratio":
            label = f"epochs to {threshold:.0%} training error (ratio {ablation}/paper)"
        elif r.metric == "best_epoch":
            label = r.label
        unit = " %" if r.metric.startswith("test_error") else " pt" if r.unit == "pt" else " ep"
        digits = 2 if r.unit == "pt" else 1
        arm = lambda v: num(v, digits, sign=r.metric.startswith("gap")) + unit
        lines.append(f"| {label} | {arm(r.paper_mean)} | {arm(r.ablation_mean)} | "
                     f"{effect_text(r.unit, r.effect, r.low, r.high, r.n, r.pairs, r.bound)} | {r.n} | {r.note or ''} |")
    return "\n".join(lines)


def markdown(analysis: Analysis, plots: dict, out: Path) -> str:
    runs = analysis.per_run
    probs = analysis.problems
    ok = int(runs["ok"].sum())
    missing = int(probs["problem"].str.startswith("missing").sum()) if len(probs) else 0
    tested = analysis.claims["p_holm"].notna().sum()
    c = f"{analysis.confidence:.0%}"
    md = [f"# alexlab report: {analysis.sweep.source}", "",
          f"{len(runs)} trial folders: {ok} completed, {len(runs) - ok} failed or unfinished, {missing} missing. "
          f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `alexlab-report`.", "",
          "## How to read this", "",
          "- **Effect** = ablation arm − `ablation=paper` arm, **paired by seed** (same seed, same data order and "
          "initial draw), averaged over the seeds both arms completed.",
          f"- **Interval**: {c} paired t-interval, mean ± t(n−1)·sd/√n over the per-seed differences "
          "(Student's t from `scipy.stats.t`; no bootstrap). One seed gives no interval; nor do two "
          "seeds whose differences are equal (a chance tie of accuracies counted in whole images: no spread).",
          "- Errors and gaps are in percentage points (pt); gap = train_clean accuracy − test accuracy "
          "(train_clean: a fixed training subset in eval mode, no augmentation). The epochs ratio is "
          "ablation/paper, tested on the log scale (geometric mean). A run that never reached the threshold "
          "counts as reaching it one epoch after its last: the ratio is then a bound (≥ when ablation runs "
          "never reached it, ≤ when paper runs did not), and a bound gives a verdict only on its own side "
          "(≥ can show 'slower', never 'faster'). Pairs where neither run reached it are left out.",
          "- **Every verdict reads the final epoch.** The best epoch (highest test accuracy, chosen on the test "
          "set itself, so optimistic) is shown beside it and never used for a verdict.",
          f"- **Verdicts**: *reproduced* = effect in the paper's direction and the {c} interval excludes 0 "
          "(ratio: excludes 1); *contradicted* = opposite direction, interval excludes 0; *inconclusive* = "
          "interval includes 0, or one seed. *Seeds needed* = the smallest n for which an effect of the "
          "observed mean and spread would give an interval excluding 0 (about 50% power; a rough guide).",
          f"- **Multiple comparisons**: {tested} claims were tested here; their p-values (two-sided paired "
          f"t-tests) are corrected with **Holm's method** (family-wise α = {analysis.alpha}). A verdict "
          "*survives* when its Holm-adjusted p is below α.",
          "- The paper's figures come from ImageNet (or CIFAR-10) with 90 epochs; they stand beside ours for "
          "direction and scale, not as a target the small runs must match.", ""]
    md += ["## Verdicts", "", claims_table(analysis), ""]
    if analysis.warnings:
        md += ["## Warnings", ""] + [f"- {w}" for w in analysis.warnings] + [""]
    if analysis.notes:
        md += ["## Choices made", ""] + [f"- {n}" for n in analysis.notes] + [""]
    if len(probs):
        md += ["## Failed and missing trials (left out; the rest is reported)", "",
               "| arm | seed | run folder | problem |", "|---|---|---|---|"]
        md += [f"| `{p.ablation}` | {p.seed if not pd.isna(p.seed) else '–'} | {p.run or '–'} | {p.problem} |"
               for p in probs.itertuples()] + [""]
    md += ["## Per trick", ""]
    multi = runs["group"].nunique() > 1
    for (group, ablation), _ in analysis.effects.groupby(["group", "ablation"], sort=False):
        md += [f"### {TRICKS.get(ablation, ablation)}" + (f" — {group}" if multi else ""), "",
               trick_table(analysis, group, ablation), ""]
        if (group, ablation) in plots:
            md += [f"![{ablation} curves]({plots[(group, ablation)].relative_to(out).as_posix()})", ""]
    if ("", "forest") in plots:
        md += ["## All effects", "", f"![forest plot]({plots[('', 'forest')].relative_to(out).as_posix()})", ""]
    if analysis.effects.empty:
        md += ["No ablation arm could be compared with a completed `ablation=paper` arm.", ""]
    md += ["## Runs", "", "| arm | seed | status | used | epochs | final test error | final gap | run folder |",
           "|---|---|---|---|---|---|---|---|"]
    for r in runs.sort_values(["group", "ablation", "seed"]).itertuples():
        used = "yes" if r.ok and r.used else "no (other lr of the grid)" if r.ok else "no"
        md.append(f"| `{r.ablation}` | {r.seed if not pd.isna(r.seed) else '–'} | {r.status} | {used} | {r.epochs} | "
                  f"{num(r.test_error * 100, 2, False)} % | {num(r.gap * 100, 2)} pt | {r.run} |")
    return "\n".join(md) + "\n"


def csv_frame(analysis: Analysis) -> pd.DataFrame:
    """One row per group x arm x metric; claim columns filled where the row is a claim's metric."""
    fx = analysis.effects.copy()
    claims = analysis.claims
    keep = ["claim", "group", "ablation", "metric", "direction", "paper", "paper_value", "later", "later_value",
            "verdict", "p", "p_holm", "survives_holm", "seeds_needed"]
    judged = claims[claims["verdict"] != "not run"][[k for k in keep if k in claims]]
    merged = fx.merge(judged.drop(columns=[c for c in ("p", "seeds_needed") if c in judged]),
                      on=["group", "ablation", "metric"], how="left")
    not_run = claims[claims["verdict"] == "not run"][[k for k in keep if k in claims]]
    merged = pd.concat([merged, not_run.drop(columns=[c for c in ("p", "seeds_needed", "p_holm")
                                                      if c in not_run])], ignore_index=True)
    merged.insert(0, "reference", REFERENCE)
    return merged


def write(analysis: Analysis, out: Path) -> Path:
    from .plots import write_plots
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(analysis, out)
    csv_frame(analysis).to_csv(out / "report.csv", index=False)
    path = out / "report.md"
    path.write_text(markdown(analysis, plots, out))
    return path


def arms_table(analysis: Analysis, multi: bool):
    """Per arm, the final epoch's means over completed seeds: how much each arm overfits."""
    from rich.table import Table

    done = analysis.per_run[analysis.per_run["ok"] & analysis.per_run["used"]].copy()
    done["train_clean_acc"] = 1.0 - done["test_error"] + done["gap"]
    done["test_acc"] = 1.0 - done["test_error"]
    table = Table(title="final epoch, mean over seeds", title_justify="left")
    for col in (("group",) if multi else ()) + ("ablation", "seeds", "train_clean acc", "test acc", "gap"):
        table.add_column(col, justify="left" if col in ("group", "ablation") else "right")
    order = {name: i for i, name in enumerate(["paper", "tanh", "no_lrn", "no_overlap", "no_dropout", "no_augment"])}
    arms = done.groupby(["group", "ablation"], sort=False)
    for (group, ablation), rows in sorted(arms, key=lambda kv: (kv[0][0], order.get(kv[0][1], 99), kv[0][1])):
        cells = [group] if multi else []
        table.add_row(*cells, ablation, str(len(rows)), f"{rows['train_clean_acc'].mean():.3f}",
                      f"{rows['test_acc'].mean():.3f}", f"{rows['gap'].mean():+.3f}")
    return table


def print_console(analysis: Analysis, path: Path | None = None, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    multi = analysis.per_run["group"].nunique() > 1
    console.print(arms_table(analysis, multi))
    table = Table(title=f"alexlab report: {analysis.sweep.source}", title_justify="left",
                  caption=f"ours: ablation − paper, paired by seed, {analysis.confidence:.0%} t-interval, final epoch; "
                          "✓: survives Holm's correction", caption_justify="left")
    for col in ("claim",) + (("group",) if multi else ()) + ("ours (final epoch)", "paper", "n", "verdict", "Holm p"):
        table.add_column(col, overflow="fold")
    styles = {"reproduced": "green", "contradicted": "red", "inconclusive": "yellow"}
    for row in analysis.claims.to_dict("records"):
        ours = ("not run" if row["verdict"] == "not run" else
                effect_text(row["unit"], row.get("effect"), row.get("low"), row.get("high"), row.get("n"),
                            row.get("pairs"), row.get("bound")))
        v = row["verdict"]
        p = row.get("p_holm")
        cells = [row["claim"]] + ([row.get("group") or "–"] if multi else [])
        table.add_row(*cells, ours, row["short"], str(int(row.get("n") or 0)), f"[{styles.get(v, 'dim')}]{v}[/]",
                      "–" if p is None or pd.isna(p) else f"{p:.2g}" + (" ✓" if row.get("survives_holm") else ""))
    console.print(table)
    ok = int(analysis.per_run["ok"].sum())
    console.print(f"{ok} of {len(analysis.per_run)} trials completed; "
                  f"{len(analysis.problems)} failed or missing; {len(analysis.warnings)} warning(s)")
    for w in analysis.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    if path is not None:
        console.print(f"report: {path}", highlight=False, soft_wrap=True)
