"""Seed plans on disk: `<sweep folder>/plans/plan-<n>.json`, written by `alexlab-report --plan` before
the runs it asks for, and read back by every later report to say which seeds came from which plan.

A plan records the seeds present when it was written and the seeds it targets. Seeds present when
plan 1 was written are "initial"; seeds plan k added (present at plan k + 1, or now, but not at plan
k) are "plan k". Seeds outside every plan's target were run beyond the plan: the report warns, since
the error rates hold for a sample size fixed in advance, not for one extended after looking.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

PLAN_DIR = "plans"
INITIAL = "initial"
PLAN_NAME = re.compile(r"plan-(\d+)\.json$")


def plan_paths(sweep_dir: Path) -> list[Path]:
    """The plan files of one sweep folder, in plan order."""
    found = [p for p in (sweep_dir / PLAN_DIR).glob("plan-*.json") if PLAN_NAME.search(p.name)]
    return sorted(found, key=lambda p: int(PLAN_NAME.search(p.name).group(1)))


def read_plans(root: Path) -> list[dict]:
    """Every readable plan below `root` (a sweep folder, or a folder holding sweeps), in plan order
    per sweep; an unreadable file is skipped (the report then cannot say what it planned)."""
    plans = []
    for folder in sorted({p.parent.parent for p in root.rglob(f"{PLAN_DIR}/plan-*.json")}):
        for path in plan_paths(folder):
            try:
                plan = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(plan, dict):
                plans.append({**plan, "path": str(path)})
    return plans


def plan_label(number: int) -> str:
    return f"plan {number}"


def seed_origins(plans: list[dict], seeds) -> tuple[dict, list[str]]:
    """{seed: 'initial' | 'plan k' | 'beyond the plans'} and warnings, from the plans of one sweep."""
    seeds = sorted({int(s) for s in seeds})
    if not plans:
        return {}, []
    origin, warnings = {}, []
    present = [set(p.get("seeds_present", [])) for p in plans]
    for s in seeds:
        if s in present[0]:
            origin[s] = INITIAL
            continue
        added = next((k for k in range(1, len(plans)) if s in present[k]), None)
        if added is not None:
            origin[s] = plan_label(plans[added - 1].get("plan", added))
        elif s in set(plans[-1].get("target_seeds", [])):
            origin[s] = plan_label(plans[-1].get("plan", len(plans)))
        else:
            origin[s] = "beyond the plans"
    beyond = [s for s in seeds if origin[s] == "beyond the plans"]
    last = plans[-1]
    name = plan_label(last.get("plan", len(plans)))
    target = last.get("target_seeds", [])
    if beyond:
        warnings.append(f"seed(s) {', '.join(map(str, beyond))} lie outside {name}'s target ({len(target)} seeds, "
                        f"{last.get('path', '')}): more seeds than planned were run; the error rates hold for a "
                        "number of seeds fixed in advance")
    waiting = sorted(set(target) - set(seeds))
    if waiting:
        warnings.append(f"{name} targets seed(s) not run yet: {', '.join(map(str, waiting))}; run its command "
                        f"({last.get('command', '')})")
    return origin, warnings
