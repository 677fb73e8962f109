"""`alexlab-report <sweep folder> --plan`: how many seeds each comparison needs, fixed before the runs.

Per claim the report can judge, from the runs present: the seeds for 80% power (two-sided t-test,
noncentral t) to detect the claim's delta, and to detect the observed effect, at alpha / m, the
level Holm's correction gives the smallest p of a family of m (the claim's group: its claims; a
factorial: its terms), using the observed spread (paired: the sd of the per-seed differences; a
factorial: the model's residual sd, every cell run with every seed). The target is the largest of
the delta-based numbers within --max-seeds; the plan (plans/plan-<n>.json) is written before any new
run, with the exact command that extends the sweep (its own overrides from multirun.yaml, seeds
replaced), so a later report can say which seeds each plan added. There is no sequential stopping:
the sweep is run to the target and judged once.
"""
from __future__ import annotations

import math
import shlex
import time
from pathlib import Path

import yaml

from ..run_folder import git_sha, write_json
from .analysis import NOT_RUN, UNCHANGED, Analysis
from .designs import FACTORIAL
from .factorial import MAIN
from .planfile import PLAN_DIR, plan_paths
from .runs import ReportError
from .stats import MAX_SEEDS, SIGN_FLIP, SIGN_TEST, T_TEST, seeds_for_power

POWER = 0.8
MULTIRUN = "multirun.yaml"
NO_SPREAD = {"": "1 seed: no spread yet", SIGN_FLIP: "equal differences: no spread",
             SIGN_TEST: "censored: sign test, no power model"}   # why a comparison cannot be planned


def family_sizes(analysis: Analysis) -> dict[str, int]:
    """m per group: the claims it judges (one-at-a-time, levels), or every term of the metrics its
    model estimates (a factorial; epochs are left out while runs are censored)."""
    judged = analysis.claims[~analysis.claims["verdict"].isin([NOT_RUN, UNCHANGED])]
    sizes = judged.groupby("group")["claim"].nunique().to_dict()
    for group, terms in analysis.terms.groupby("group"):
        sizes[group] = int(terms["estimate"].notna().sum()) or len(terms)
    return sizes


def paired_power(row: dict, alpha: float, delta: float, limit: int) -> dict:
    """Seeds for a paired t-test from the per-seed differences' sd (on the tested scale)."""
    if row.get("method") != T_TEST:
        return {"why": NO_SPREAD.get(row.get("method") or "", "no t-test: no spread")}
    sd = row["se"] * math.sqrt(row["n"])

    def need(effect: float) -> int | None:
        return seeds_for_power(effect, lambda n: sd / math.sqrt(n), lambda n: n - 1, alpha, POWER, limit=limit)

    return {"sd": sd, "seeds_for_delta": need(delta), "seeds_for_observed": need(abs(row["scaled"]))}


def factorial_power(term: dict, alpha: float, delta: float, limit: int) -> dict:
    """Seeds (replicates of every cell) for a factorial main effect: se = 2 sigma / sqrt(cells x n),
    residual df = cells x n - terms - (n - 1) seed blocks."""
    if not math.isfinite(term.get("sigma", math.nan)):
        note = term.get("note") or ""
        why = ("censored: no linear model" if "never reached" in note else
               "no residual df yet: 2+ seeds" if "degrees of freedom" in note else note or "no residual spread")
        return {"why": why, "n_now": term["seeds"]}
    scale = 2.0 if term["kind"] == MAIN else 4.0
    cells, params = term["cells"], term["params"]

    def need(effect: float) -> int | None:
        return seeds_for_power(effect, lambda n: scale * term["sigma"] / math.sqrt(cells * n),
                               lambda n: cells * n - params - (n - 1), alpha, POWER, start=1, limit=limit)

    return {"sd": term["sigma"], "seeds_for_delta": need(delta), "seeds_for_observed": need(abs(term["scaled"])),
            "n_now": term["seeds"]}


def comparisons(analysis: Analysis, limit: int) -> list[dict]:
    sizes = family_sizes(analysis)
    terms = {(t["group"], t["term"], t["metric"]): t for t in analysis.terms.to_dict("records")}
    rows = []
    for row in analysis.claims.to_dict("records"):
        if row["verdict"] in (NOT_RUN, UNCHANGED):
            continue
        m = sizes.get(row["group"], 1)
        alpha = analysis.alpha / m
        delta = math.log(row["delta"]) if row["unit"] == "x" else row["delta"]
        if row.get("design") == FACTORIAL:
            found = factorial_power(terms[(row["group"], row["term"], row["metric"])], alpha, delta, limit)
        else:
            found = paired_power(row, alpha, delta, limit)
        rows.append({"group": row["group"], "claim": row["claim"], "design": row.get("design") or "",
                     "metric": row["metric"], "unit": row["unit"], "n_now": int(row.get("n") or 0),
                     "delta": row["delta"], "observed": finite_or_none(row.get("effect")), "family": m, "alpha": alpha,
                     "sd": None, "seeds_for_delta": None, "seeds_for_observed": None, "why": "", **found})
    return rows


def finite_or_none(x) -> float | None:
    """A number the plan file can hold (JSON has no NaN)."""
    return float(x) if x is not None and math.isfinite(x) else None


def multirun_overrides(sweep_dir: Path) -> tuple[list[str], list[str]]:
    """The sweep's command-line overrides (task) and Hydra's own, as Hydra recorded them."""
    data = yaml.safe_load((sweep_dir / MULTIRUN).read_text()) or {}
    overrides = (data.get("hydra") or {}).get("overrides") or {}
    return list(overrides.get("task") or []), [o for o in overrides.get("hydra") or [] if o != "hydra.mode=MULTIRUN"]


def sweep_folder(root: Path) -> Path:
    """The one folder under `root` (itself included) that holds Hydra's multirun.yaml."""
    found = sorted(p.parent for p in root.rglob(MULTIRUN))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ReportError(f"--plan needs one sweep folder; {root} holds {what} {MULTIRUN} (Hydra writes one into the "
                          "folder of each `alexlab-train -m` sweep): give that folder")
    return found[0]


def seeds_argument(seeds: list[int]) -> str:
    if seeds == list(range(len(seeds))):
        return f"seed=range(0,{len(seeds)})"
    return "seed=" + ",".join(map(str, seeds))


def extend_command(sweep_dir: Path, seeds: list[int]) -> str:
    """The sweep's own command with its seeds replaced: rerunning it skips every finished run."""
    task, hydra = multirun_overrides(sweep_dir)
    is_seed = [o.split("=", 1)[0].lstrip("+~") == "seed" for o in task]
    where = is_seed.index(True) if any(is_seed) else len(task)
    kept = [o for o, s in zip(task, is_seed) if not s]
    args = ["alexlab-train", "-m", *kept[:where], seeds_argument(seeds), *kept[where:], *hydra]
    return " ".join(shlex.quote(a) for a in args)


def make_plan(analysis: Analysis, root: Path, max_seeds: int) -> dict:
    """The plan as plans/plan-<n>.json records it (not yet written)."""
    sweep_dir = sweep_folder(root)
    present = sorted({int(s) for s in analysis.per_run["seed"].dropna()})
    rows = comparisons(analysis, MAX_SEEDS)
    planned = [r for r in rows if r["seeds_for_delta"] is not None]
    wanted = [r["seeds_for_delta"] for r in planned if r["seeds_for_delta"] <= max_seeds]
    target_count = max(wanted + [len(present)])
    extra = [s for s in range(target_count + len(present)) if s not in present][:target_count - len(present)]
    target = sorted(present + extra)
    number = len(plan_paths(sweep_dir)) + 1
    return {"plan": number, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "git_sha": git_sha(),
            "sweep_dir": str(sweep_dir), "seeds_present": present, "target_seeds": target,
            "new_seeds": extra, "command": extend_command(sweep_dir, target) if extra else "",
            "power": POWER, "alpha": analysis.alpha, "max_seeds": max_seeds, "deltas": analysis.deltas,
            "comparisons": rows, "why_none": why_no_new_seeds(planned, wanted, len(present), max_seeds)}


def why_no_new_seeds(planned: list[dict], wanted: list[int], present: int, max_seeds: int) -> str:
    """Why a plan asks for no new seed ('' when it asks for some)."""
    if not planned:
        return "no comparison has a spread to plan from yet (one seed, equal differences or censored times)"
    if not wanted:
        fewest = min(planned, key=lambda r: r["seeds_for_delta"])
        return (f"every comparison needs more than --max-seeds {max_seeds} seeds for {POWER:.0%} power at its δ "
                f"({fewest['claim']} needs the fewest: {fewest['seeds_for_delta']}); raise --max-seeds or δ (--delta)")
    if max(wanted) <= present:
        return f"every comparison that can be planned has {POWER:.0%} power at its δ with the {present} seeds present"
    return ""


def write_plan(plan: dict) -> Path | None:
    """plans/plan-<n>.json in the sweep folder; nothing when the plan asks for no new seed."""
    if not plan["new_seeds"]:
        return None
    path = Path(plan["sweep_dir"]) / PLAN_DIR / f"plan-{plan['plan']}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"{path.parent}: cannot write the plan there ({err.strerror or err})") from None
    write_json(path, plan)
    return path


def print_plan(plan: dict, path: Path | None, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    rows = plan["comparisons"]
    multi = len({r["group"] for r in rows}) > 1
    table = Table(title=f"seed plan: {POWER:.0%} power, two-sided t, at α/m (Holm's level for the smallest p of a "
                        "family of m)", title_justify="left")
    for col in (("group",) if multi else ()) + ("claim", "design", "seeds now", "sd", "δ", "α/m", "seeds for δ",
                                                "observed", "seeds for observed"):
        table.add_column(col, overflow="fold")
    for r in rows:
        unit = "×" if r["unit"] == "x" else " pt"
        sd = "–" if r["sd"] is None else f"{r['sd']:.3g}" + (" (log)" if r["unit"] == "x" else "")
        observed = "–" if r["observed"] is None else f"{r['observed']:.3g}{unit}"
        table.add_row(*([escape(r["group"])] if multi else []), r["claim"], r["design"], str(r["n_now"]), sd,
                      f"{r['delta']:g}{unit}", f"{plan['alpha']:g}/{r['family']}",
                      escape(r["why"]) or seeds_text(r["seeds_for_delta"], plan["max_seeds"]), observed,
                      "–" if r["why"] else seeds_text(r["seeds_for_observed"], plan["max_seeds"]))
    console.print(table)
    if path is None:
        console.print(f"{plan['why_none']}: no new runs, no plan written", highlight=False)
        return
    console.print(f"plan {plan['plan']}: {len(plan['seeds_present'])} seeds present -> {len(plan['target_seeds'])}; "
                  f"written before any new run: {path}", highlight=False, soft_wrap=True)
    console.print("extend the sweep (finished runs are skipped):", highlight=False)
    console.print(plan["command"], highlight=False, soft_wrap=True, markup=False)


def seeds_text(n: int | None, most: int) -> str:
    if n is None:
        return "–"
    return f"> {MAX_SEEDS}" if n > MAX_SEEDS else f"{n} (beyond --max-seeds {most})" if n > most else str(n)
