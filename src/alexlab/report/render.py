"""report.md, report.csv and the console table from an Analysis."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from .analysis import (EQUIVALENT, FINDINGS, INCONCLUSIVE, NOT_RUN, REFERENCE, SUGGESTIVE, UNCHANGED, Analysis,
                       arm_order, delta_text, is_finding)
from .claims import METRICS, TRICKS
from .designs import FACTORIAL
from .factorial import OLS_T
from .sections import designs_md, factorial_md, group_designs, levels_md, plans_md
from .stats import MAX_SEEDS, SIGN_FLIP, SIGN_TEST, T_TEST, pairs_needed_for_sign_test

SHORT_METHOD = {T_TEST: "t", SIGN_FLIP: "sign-flip", SIGN_TEST: "sign", OLS_T: "OLS t"}  # the console's test column


def num(x, digits: int = 2, sign: bool = True) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA


def effect_text(row: dict) -> str:
    """'+2.10 pt [+0.50, +3.70]', '≥ 1.59× (bound, no interval)', '+2.00 pt (3 equal differences, no interval)'."""
    unit, effect, low, high, n = row["unit"], row.get("effect"), row.get("low"), row.get("high"), row.get("n")
    if not n or missing(n):
        return "no seed pair with a train_clean curve" if unit == "x" and row.get("pairs") else "no paired seeds"
    bound = row.get("bound") or ""
    if unit == "x":
        value = {"lower": "≥ ", "upper": "≤ ", "none": "~"}.get(bound, "") + f"{num(effect, 2, False)}×"
        interval = f"[{num(low, 2, False)}, {num(high, 2, False)}]"
    else:
        suffix = " pt" if unit == "pt" else " ep"
        value = num(effect, 2 if unit == "pt" else 1) + suffix
        interval = f"[{num(low, 2 if unit == 'pt' else 1)}, {num(high, 2 if unit == 'pt' else 1)}]"
    if n == 1:
        return f"{value} (1 seed, no interval)"
    if row.get("method") == SIGN_FLIP:
        return f"{value} ({int(n)} equal differences, no interval)"
    if row.get("method") == SIGN_TEST:
        what = {"lower": "a lower bound", "upper": "an upper bound"}.get(bound, "censored in both arms, not a bound")
        return f"{value} ({what}; no interval)"
    return f"{value} {interval}"


def needed_text(row: dict, alpha: float) -> str:
    if row.get("verdict") != INCONCLUSIVE:
        return ""
    if row.get("design") == FACTORIAL:
        return "`alexlab-report --plan`"
    if not row.get("n"):
        return "unknown: no usable seed pair"
    if row["n"] < 2:
        return "unknown: 1 seed gives no variance"
    if row.get("method") == SIGN_FLIP:
        return "unknown: equal differences give no spread; run more seeds"
    if row.get("method") == SIGN_TEST:
        return f"≥ {pairs_needed_for_sign_test(alpha)} ordered pairs, all one way (sign test)"
    n = row.get("seeds_needed")
    if missing(n):
        return "unknown: no difference observed"
    return f"> {MAX_SEEDS}" if n > MAX_SEEDS else f"≈ {int(n)}"


def p_text(row: dict) -> str:
    p = row.get("p")
    if missing(p):
        return "–"
    method = row.get("method") or ""
    if method == SIGN_TEST and not missing(row.get("ordered")):
        method += f", {int(row['ordered'])} ordered pairs"
    return f"{p:.3g} ({method})"


def holm_text(row: dict) -> str:
    p = row.get("p_holm")
    if missing(p):
        if row.get("verdict") == UNCHANGED:
            return "left out of the family"
        return "" if row.get("verdict") == NOT_RUN else "not tested (no p-value: n < 2 or no ordered pair)"
    return f"{p:.3g} ({'survives' if row.get('survives_holm') else 'does not survive'})"


def verdict_md(row: dict) -> str:
    """Only a finding that survives Holm's correction is bold; a training-failure caveat goes beside it."""
    word = row["verdict"]
    text = f"**{word}**" if is_finding(word) else word
    return text + (f" — ⚠ {row['caveat']}" if row.get("caveat") else "")


def ours_text(row: dict) -> str:
    if row["verdict"] == NOT_RUN:
        needs = METRICS[row["metric"]].needs
        if needs:
            return f"not run (no {needs})"
        return f"not run (no completed `ablation={row['ablation']}` runs)"
    if row["verdict"] == UNCHANGED:
        return f"not compared: `{row['ablation']}` has the same resolved settings as `paper` here"
    return effect_text(row)


def equivalence_text(row: dict) -> str:
    """'TOST p 0.003, Holm 0.02 (inside ±1 pt)'; why there is none otherwise."""
    if row.get("verdict") in (NOT_RUN, UNCHANGED):
        return "–"
    delta = delta_text(row["delta"], row["unit"])
    p, q = row.get("p_equiv"), row.get("p_equiv_holm")
    if missing(p):
        return f"±{delta}: not tested (no standard error)"
    said = "inside" if row.get("equivalent") else "not shown inside"
    return f"±{delta}: TOST p {p:.3g}, Holm {q:.3g} ({said})"


def arm_text(row: dict) -> str:
    if row.get("term"):  # a factorial's term: the arm's main effect, or two arms' interaction
        return f"`{row['term']}` ({'interaction' if ' × ' in row['term'] else 'main effect'})"
    return f"`{row['ablation']}`"


def claims_table(analysis: Analysis) -> str:
    multi = analysis.per_run["group"].nunique() > 1
    head = ["claim (section)", "design", "arm", "metric, read at", "paper", "ours: final epoch", "n", "verdict",
            "paper's figure vs ours", "p (test)", "Holm-adjusted p", "no effect beyond ±δ (equivalence)",
            "seeds needed"]
    if multi:
        head.insert(1, "group")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in analysis.claims.to_dict("records"):
        cells = [f"{row['statement']} ({row['section']})", row.get("design") or "–", arm_text(row),
                 f"{row['label']}, {row['reading']}", row["short"] or "–", ours_text(row),
                 str(int(row.get("n") or 0)), verdict_md(row), text_or_dash(row.get("vs_paper")), p_text(row),
                 holm_text(row) or "–", equivalence_text(row), needed_text(row, analysis.alpha) or "–"]
        if multi:
            cells.insert(1, row.get("group") or "–")
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def sources_table(analysis: Analysis) -> str:
    """Each claim as the paper states it, later evidence, and the smallest effect of interest."""
    lines = ["| claim | section | the paper | later work | δ (smallest effect of interest) |", "|---|---|---|---|---|"]
    seen = set()
    for row in analysis.claims.to_dict("records"):
        if row["claim"] in seen:
            continue
        seen.add(row["claim"])
        lines.append(f"| {row['claim']}: {row['statement']} | {row['section']} | {row['paper']} | "
                     f"{row['later'] or '–'} | ±{delta_text(row['delta'], row['unit'])} |")
    return "\n".join(lines)


def text_or_dash(x) -> str:
    return "–" if missing(x) or not x else str(x)


def arms_md(analysis: Analysis) -> str:
    multi = analysis.per_run["group"].nunique() > 1
    head = (["group"] if multi else []) + ["arm", "completed", "diverged", "collapsed", "train_clean acc",
                                           "test acc", "gap"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in analysis.arms.itertuples():
        cells = ([a.group] if multi else []) + [
            f"`{a.ablation}`", f"{a.completed} of {a.runs}", f"{a.diverged} of {a.runs}", f"{a.collapsed} of {a.runs}",
            num(a.train_clean_acc, 3, False), num(a.test_acc, 3, False), num(a.gap, 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trick_table(analysis: Analysis, group: str, ablation: str) -> str:
    fx = analysis.effects
    rows = fx[(fx["group"] == group) & (fx["ablation"] == ablation)]
    threshold = analysis.per_run.loc[analysis.per_run["group"] == group, "error_threshold"].iloc[0]
    if ablation == REFERENCE:  # within-run effects: first side minus second side of the same run
        first, second = METRICS[rows["metric"].iloc[0]].sides
        effect, pairs = f"{first} − {second}", "runs"
    else:
        first, second = REFERENCE, ablation
        effect, pairs = f"{ablation} − {REFERENCE}", "seed pairs"
    lines = [f"| metric (read at) | `{first}` mean | `{second}` mean | effect {effect} "
             f"[{analysis.confidence:.0%} CI] | {pairs} | p (test) | note |", "|---|---|---|---|---|---|---|"]
    for r in rows.to_dict("records"):
        label = f"{r['label']} ({r['reading']})"
        if r["metric"] == "epochs_ratio":
            label = f"epochs to {threshold:.0%} eval-mode training error (ratio {ablation}/paper)"
        elif r["metric"] == "best_epoch":
            label = r["label"]
        unit = " pt" if r["metric"].startswith("gap") else " %" if r["unit"] == "pt" else " ep"
        digits = 2 if r["unit"] == "pt" else 1
        arm = lambda v: num(v, digits, sign=r["metric"].startswith("gap")) + unit
        lines.append(f"| {label} | {arm(r['paper_mean'])} | {arm(r['ablation_mean'])} | {effect_text(r)} | "
                     f"{r['n']} | {p_text(r)} | {r['note'] or ''} |")
    return "\n".join(lines)


def how_to_read(analysis: Analysis) -> list[str]:
    c = f"{analysis.confidence:.0%}"
    tested = int(analysis.claims["p"].notna().sum())
    a = analysis.alpha
    return [
        "## How to read this", "",
        "- **Designs** (\"Designs found\"; read from each run's resolved config, never from folder names): "
        "*one-at-a-time* and *levels* compare each arm (each level of the swept toggle) with the reference, the "
        "paper's settings, paired by seed; a *factorial* (full 2^k or a fraction) reads main effects and "
        "interactions from one linear model over all runs (\"Factorial designs\" says what a main effect means "
        "there); *Figure 1* is relu vs tanh with an lr chosen per activation. A claim is answered by whichever "
        "design compares its arm's toggle value with the paper's.",
        "- **Effect** = ablation arm − `ablation=paper` arm, **paired by seed** (same seed, same data order and "
        "initial draw), over the seeds both arms completed. 10-patch testing is read within the same `paper` "
        "runs instead: single-view test error − 10-patch test error, paired by run.",
        f"- **Interval**: {c} paired t-interval, mean ± t(n−1)·sd/√n over the per-seed differences "
        "(`scipy.stats.t`; no bootstrap). One seed gives no interval; nor do seeds whose differences are all "
        "equal (a tie of accuracies counted in whole images: no spread).",
        "- **p-values** (two-sided; the `p (test)` column names the test): *paired t* for test error and gap; "
        "*exact sign-flip* when every difference is equal: 2^(1−n) for n equal non-zero differences, 1 when they "
        "are all zero, never 0.",
        "- **Epochs to the threshold**: fractional epochs until the eval-mode training error (1 − train_clean/acc: "
        "no dropout, no augmentation, a fixed slice of the training images) first falls below the threshold, "
        "interpolated between evaluated epochs (`alexlab.curves.epochs_to_error`; the as-trained `train/acc` is "
        "never judged). A run that never reaches it is *censored*: its time is more than the epochs it trained. "
        "No censored run in a comparison: paired t on log(arm/paper), shown as a geometric-mean ratio with its "
        "interval. Any censored run: the *exact sign test* (two-sided binomial) on the pairs whose order is known "
        "(both reached it; or one censored at or after the other's time, which makes it the slower); the ratio "
        "with censored times counted at the epochs trained is then a bound (≥ when only arm runs were censored, "
        "≤ when only paper runs were), with no interval.",
        "- **Every verdict reads the final epoch.** The best epoch (highest test accuracy, chosen on the test "
        "set itself, so optimistic) is shown beside it and never used for a verdict.",
        f"- **Verdicts** follow the multiple-comparison correction: Holm's method over one family per group "
        f"({tested} claims with a p-value here; in a factorial, every term of every metric), family-wise "
        f"α = {a}. **reproduced** / **contradicted**: Holm-adjusted p < α, with (against) the paper's direction "
        "(the estimate's sign; for the sign test, the way most ordered pairs point). **no effect larger than "
        f"±δ**: the equivalence test survives Holm, i.e. the {1 - 2 * a:.0%} interval lies inside ±δ, δ being "
        "the claim's smallest effect of interest (`--delta <claim>=<value>`). These three are the findings, "
        "the only words in bold. *suggestive, not significant after correction* (with the direction): the raw "
        "p < α but the adjusted p is not. "
        "*inconclusive*: otherwise, or one seed. *not tested: the arm changes nothing here*: the arm's resolved "
        "config equals the paper run's for the same seed apart from `ablation_name` and result-neutral keys "
        "(e.g. `no_dropout` on a net without dropout); it gets no verdict and is left out of the family. "
        "*Seeds needed* (inconclusive t-tests) = the smallest n for which an effect of the observed mean and "
        "spread would give an interval excluding 0 (about 50% power; a rough guide); `alexlab-report DIR --plan` "
        "computes the seeds for 80% power and writes the plan before the runs.",
        "- **Equivalence** (two one-sided tests, TOST): p = the larger p of 'effect ≤ −δ' and 'effect ≥ +δ', "
        "Student's t with the interval's standard error and degrees of freedom; for a ratio on the log scale, "
        "δ a ratio (1.25 = within 0.8× to 1.25×). No standard error (one seed, equal differences, censored "
        "times): not tested. **One family, not two**: a claim's difference test (effect = 0) and its "
        "equivalence test (|effect| ≥ δ) cannot both be true nulls, so Holm's multiplier counts each claim "
        "once, until both its tests are rejected (Shaffer's argument: the first true null rejected still meets "
        "a multiplier at least the number of true nulls). Two separate families would allow up to 2α; one "
        "family of twice the size would be needlessly strict. `tests/test_report_stats.py` simulates the "
        "error rates. A claim can be both reproduced and inside ±δ: a real effect smaller than δ.",
        "- **Paper's figure vs ours**: *inside our interval* (same size), *ours smaller* (the figure lies beyond "
        "the interval, away from the null), *ours larger* (between the null and the interval), *ours points the "
        "other way*; a bound can only say *at least* / *at most*.",
        "- **Runs that do not train**: per arm, *diverged* runs (NaN loss: no final metrics, so left out of the "
        "pairs, and counted) and *collapsed* runs (completed, but train_clean accuracy never above 1.5 × chance: "
        "kept in the comparison, they are results). When an arm diverges or collapses more often than `paper`, "
        "its claims say so beside the verdict (⚠): whether a net trains at all is an effect of the trick.",
        "- The paper's figures come from ImageNet (or CIFAR-10) with 90 epochs; they stand beside ours for "
        "direction and scale, not as a target the small runs must match.", ""]


def heading(group: str, ablation: str, multi: bool, analysis: Analysis) -> str:
    if ablation == REFERENCE:  # within-run effects of the paper arm
        metrics = analysis.effects.loc[(analysis.effects["group"] == group)
                                       & (analysis.effects["ablation"] == REFERENCE), "metric"]
        title = "Within the `paper` runs: " + ", ".join(METRICS[m].label for m in metrics)
    else:
        title = TRICKS.get(ablation, ablation)
    return f"### {title}" + (f" — {group}" if multi else "")


def pairwise_md(analysis: Analysis, plots: dict, out: Path) -> list[str]:
    """Each arm against the reference, paired by seed: one table (and curves) per arm."""
    md = ["## One arm against the reference (paired by seed)", ""]
    multi = analysis.per_run["group"].nunique() > 1
    compared = list(analysis.effects.groupby(["group", "ablation"], sort=False).groups)
    order = {arm: i for i, arm in enumerate(arm_order({a for _, a in compared + analysis.unchanged}))}
    for group, ablation in sorted(compared + analysis.unchanged, key=lambda ga: (ga[0], order[ga[1]])):
        md += [heading(group, ablation, multi, analysis), ""]
        if (group, ablation) in analysis.unchanged:
            md += [f"Not compared: `{ablation}` changes nothing in this group (same resolved settings as `paper`).", ""]
            continue
        md += [trick_table(analysis, group, ablation), ""]
        if (group, ablation) in plots:
            md += [f"![{ablation} curves]({plots[(group, ablation)].relative_to(out).as_posix()})", ""]
    if ("", "forest") in plots:
        md += ["### All paired effects", "", f"![forest plot]({plots[('', 'forest')].relative_to(out).as_posix()})",
               ""]
    return md


def runs_md(analysis: Analysis) -> list[str]:
    runs = analysis.per_run
    planned = (runs["plan"] != "").any()
    head = "| arm | seed | status | used | epochs | epochs to threshold | final test error | final gap | run folder |"
    md = ["## Runs", "", head.replace("| run folder |", "| from | run folder |") if planned else head,
          "|---|---|---|---|---|---|---|---|---|" + ("---|" if planned else "")]
    for r in runs.sort_values(["group", "ablation", "seed"]).itertuples():
        used = "yes" if r.ok and r.used else "no (other lr of the grid)" if r.ok else "no"
        reach = (num(r.epochs_to_error, 1, False) if not pd.isna(r.epochs_to_error)
                 else f"> {num(r.censored_at, 0, False)} (never)" if not pd.isna(r.censored_at) else "–")
        origin = f" {r.plan or '–'} |" if planned else ""
        md.append(f"| `{r.ablation}` | {r.seed if not pd.isna(r.seed) else '–'} | {r.status}"
                  f"{' (collapsed)' if r.ok and r.collapsed else ''} | {used} | {r.epochs} | {reach} | "
                  f"{num(r.test_error * 100, 2, False)} % | {num(r.gap * 100, 2)} pt |{origin} {r.run} |")
    return md


def markdown(analysis: Analysis, plots: dict, out: Path) -> str:
    runs = analysis.per_run
    probs = analysis.problems
    ok = int(runs["ok"].sum())
    missing_trials = int(probs["problem"].str.startswith("missing").sum()) if len(probs) else 0
    md = [f"# alexlab report: {analysis.sweep.source}", "",
          f"{len(runs)} trial folders: {ok} completed, {len(runs) - ok} failed or unfinished, "
          f"{missing_trials} missing. "
          f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `alexlab-report`.", ""]
    md += ["## Verdicts", "", claims_table(analysis), ""]
    md += how_to_read(analysis)
    md += designs_md(analysis)
    md += ["## Arms", "", "Final epoch, mean over the completed seeds; diverged and collapsed runs out of the seeds "
           "run (completed or diverged).", "", arms_md(analysis), ""]
    if analysis.warnings:
        md += ["## Warnings", ""] + [f"- {w}" for w in analysis.warnings] + [""]
    if analysis.notes:
        md += ["## Choices made", ""] + [f"- {n}" for n in analysis.notes] + [""]
    if len(probs):
        md += ["## Failed, diverged and missing trials (left out of the pairs; the rest is reported)", "",
               "| arm | seed | run folder | problem |", "|---|---|---|---|"]
        md += [f"| `{p.ablation}` | {p.seed if not pd.isna(p.seed) else '–'} | {p.run or '–'} | {p.problem} |"
               for p in probs.itertuples()] + [""]
    if len(analysis.effects) or analysis.unchanged:
        md += pairwise_md(analysis, plots, out)
    md += levels_md(analysis, plots, out)
    md += factorial_md(analysis, plots, out)
    if analysis.effects.empty and analysis.terms.empty:
        md += ["No arm could be compared with a completed run at the paper's settings, and no factorial was found.",
               ""]
    md += ["## The claims", "", sources_table(analysis), ""]
    md += plans_md(analysis)
    md += runs_md(analysis)
    return "\n".join(md) + "\n"


def csv_frame(analysis: Analysis) -> pd.DataFrame:
    """One row per group x arm x metric; claim columns filled where the row is a claim's metric."""
    fx = analysis.effects.copy()
    claims = analysis.claims
    keep = ["claim", "group", "ablation", "metric", "direction", "paper", "paper_value", "later", "later_value",
            "verdict", "vs_paper", "caveat", "p", "p_holm", "survives_holm", "seeds_needed", "delta", "p_equiv",
            "p_equiv_holm", "equivalent"]
    pairwise = claims[~claims["verdict"].isin([NOT_RUN, UNCHANGED]) & (claims["term"] == "")]
    judged = pairwise[[k for k in keep if k in claims]]
    merged = fx.merge(judged.drop(columns=[c for c in ("p", "seeds_needed") if c in judged]),
                      on=["group", "ablation", "metric"], how="left")
    factorial = claims[claims["term"] != ""][[k for k in keep + ["design", "term", "effect", "low", "high", "n"]
                                              if k in claims]]
    idle = claims[claims["verdict"].isin([NOT_RUN, UNCHANGED])][[k for k in keep if k in claims]]
    merged = pd.concat([merged, factorial, idle.drop(columns=[c for c in ("p", "seeds_needed", "p_holm", "p_equiv",
                                                                          "p_equiv_holm") if c in idle])],
                       ignore_index=True)
    merged.insert(0, "reference", REFERENCE)
    return merged


def write(analysis: Analysis, out: Path) -> Path:
    from .plots import write_plots
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(analysis, out)
    csv_frame(analysis).to_csv(out / "report.csv", index=False)
    if len(analysis.terms):
        analysis.terms.drop(columns=["factors"]).to_csv(out / "report_factorial.csv", index=False)
    path = out / "report.md"
    path.write_text(markdown(analysis, plots, out))
    return path


def arms_table(analysis: Analysis, multi: bool):
    """Per arm, the final epoch's means over completed seeds and how many runs did not train."""
    from rich.table import Table

    table = Table(title="final epoch, mean over seeds", title_justify="left")
    for col in (("group",) if multi else ()) + ("ablation", "seeds", "diverged", "collapsed", "train_clean acc",
                                               "test acc", "gap"):
        table.add_column(col, justify="left" if col in ("group", "ablation") else "right")
    for a in analysis.arms.itertuples():
        cells = [a.group] if multi else []
        table.add_row(*cells, a.ablation, str(a.completed), f"{a.diverged} of {a.runs}", f"{a.collapsed} of {a.runs}",
                      num(a.train_clean_acc, 3, False), num(a.test_acc, 3, False), num(a.gap, 3))
    return table


def verdict_style(word: str) -> str:
    """Strong colour only for a finding that survives Holm's correction."""
    if word in FINDINGS:
        return "bold green" if word == "reproduced" else "bold red"
    if word.startswith(EQUIVALENT):
        return "bold cyan"
    return "yellow" if word.startswith(SUGGESTIVE) else "dim"


def print_console(analysis: Analysis, path: Path | None = None, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    multi = analysis.per_run["group"].nunique() > 1
    for d in group_designs(analysis).itertuples():
        console.print(f"design: {escape(d.group)}: {escape(d.text)}" + (f" of {', '.join(d.varied)}" if d.varied and
                                                                        d.text != "levels of " + d.varied[0] else ""),
                      highlight=False)
    console.print(arms_table(analysis, multi))
    caption = (f"ours: ablation − paper, paired by seed (factorial: main effect of removing the trick, OLS), "
               f"{analysis.confidence:.0%} t-interval, final epoch. "
               f"reproduced/contradicted only when the Holm-adjusted p < {analysis.alpha} (per group); no effect "
               f"larger than ±δ: the equivalence test (TOST) survives the same correction; "
               f"suggestive: raw p < {analysis.alpha} only. test: t = paired t, sign-flip = exact (all differences "
               "equal), sign = exact sign test (censored epochs). vs paper: the paper's figure inside our interval "
               "(same size), beyond it (ours smaller) or between the null and it (ours larger). ⚠: the arm "
               "diverged or collapsed more often than paper")
    table = Table(title=f"alexlab report: {analysis.sweep.source}", title_justify="left", caption=caption,
                  caption_justify="left")
    designs = analysis.claims["design"].replace("", None).dropna().nunique() > 1  # a column only when they differ
    for col in ("claim",) + (("group",) if multi else ()) + (("design",) if designs else ()) + (
            "ours (final epoch)", "paper", "n", "verdict", "vs paper", "test", "Holm p"):
        table.add_column(col, overflow="fold", no_wrap=col == "claim", min_width=12 if col == "verdict" else None)
    for row in analysis.claims.to_dict("records"):
        v = row["verdict"]
        p = row.get("p_holm")
        shown = f"[{verdict_style(v)}]{escape(v)}[/]" + (f"\n⚠ {escape(row['caveat'])}" if row.get("caveat") else "")
        cells = [row["claim"]] + ([row.get("group") or "–"] if multi else [])
        ours = {NOT_RUN: "not run", UNCHANGED: "not compared (same settings as paper)"}.get(v) or effect_text(row)
        cells += [row.get("design") or "–"] if designs else []
        table.add_row(*cells, escape(ours), row["short"], str(int(row.get("n") or 0)), shown,
                      text_or_dash(row.get("vs_paper_kind")),
                      SHORT_METHOD.get(row.get("method") or "", "–"),
                      "–" if missing(p) else f"{p:.2g}")
    console.print(table)
    ok = int(analysis.per_run["ok"].sum())
    console.print(f"{ok} of {len(analysis.per_run)} trials completed; "
                  f"{len(analysis.problems)} failed or missing; {len(analysis.warnings)} warning(s)")
    for w in analysis.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    if path is not None:
        console.print(f"report: {path}", highlight=False, soft_wrap=True)
