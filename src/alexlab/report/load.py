"""Run folders -> the report's frames (runs.py). A run counts only when it finished: COMPLETED
marker present and summary status "completed". Every other trial folder (failed, diverged,
interrupted, still running, killed before writing a summary) is kept with its reason so that
the report can say which trials are missing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .. import run_folder
from ..settings import get
from .planfile import PLAN_DIR, read_plans
from .runs import ReportError, Sweep, history_frame, runs_frame
from .wandb_source import load_wandb

SKIP_DIRS = {"checkpoints", "tensorboard", "wandb", ".hydra", "__pycache__", PLAN_DIR}


def load(source: str | Path) -> Sweep:
    text = str(source)
    if text.startswith("wandb:"):
        return load_wandb(text)
    return load_folder(Path(text))


def is_run_dir(path: Path) -> bool:
    return any((path / f).is_file() for f in ("summary.json", "config.yaml", "metrics.csv", ".hydra/config.yaml"))


def find_run_dirs(root: Path) -> list[Path]:
    """Run folders under `root` at any depth (a run folder's own subfolders are not searched)."""
    if is_run_dir(root):
        return [root]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SKIP_DIRS):
        found += find_run_dirs(child)
    return found


def load_folder(root: Path) -> Sweep:
    if not root.exists():
        raise ReportError(f"{root}: no such folder; give a sweep folder such as multirun/<sweep>/<name>")
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder; give a sweep folder such as multirun/<sweep>/<name>")
    dirs = find_run_dirs(root)
    if not dirs:
        raise ReportError(f"{root}: no run folders found (none holds summary.json, config.yaml or metrics.csv)")
    records, histories = [], []
    for d in dirs:
        record, history = read_run_dir(d, root)
        records.append(record)
        if len(history):
            histories.append(history.assign(run=record["run"]))
    records += ledger_only(root, dirs)
    return Sweep(str(root), runs_frame(records), history_frame(histories), read_plans(root))


def ledger_only(root: Path, dirs: list[Path]) -> list[dict]:
    """Trials a sweep's ledger (sweep_ledger.json, written by the sweep launcher) lists but no folder holds.
    Named by their job only: without a config there is no arm to tell (a job name is never parsed)."""
    have = {d.resolve() for d in dirs}
    records = []
    for ledger in sorted(root.rglob("sweep_ledger.json")):
        try:
            data = json.loads(ledger.read_text())
            names = data.get("current") or list(data.get("trials", {}))
        except (OSError, ValueError, AttributeError):
            continue
        for job in names:
            d = ledger.parent / str(job)
            if d.resolve() in have:
                continue
            records.append({"run": d.relative_to(root).as_posix(), "path": str(d), "name": ledger.parent.name,
                            "job": str(job), "ablation": "–", "seed": None,
                            "status": "missing", "ok": False,
                            "reason": "missing: listed in sweep_ledger.json, no run folder",
                            "max_epochs": None, "error_threshold": None, "summary": {}, "config": {}})
    return records


def read_run_dir(d: Path, root: Path) -> tuple[dict, pd.DataFrame]:
    summary, cfg, problems = {}, {}, []
    if (d / run_folder.SUMMARY).is_file():
        try:
            summary = json.loads((d / run_folder.SUMMARY).read_text())
        except (OSError, ValueError) as err:
            problems.append(f"summary.json unreadable ({type(err).__name__})")
    for name in ("config.yaml", ".hydra/config.yaml"):
        if (d / name).is_file():
            cfg = read_yaml(d / name)
            break
    history = pd.DataFrame()
    if (d / "metrics.csv").is_file():
        try:
            history = pd.read_csv(d / "metrics.csv")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            problems.append("metrics.csv unreadable")
    status = summary.get("status") or ("no summary.json" if not summary else "unknown")
    marker = run_folder.is_completed(d)
    ok = marker and status == "completed" and not problems
    if ok:
        reason = ""
    elif problems:
        reason = "; ".join(problems)
    elif status == "completed":
        reason = "status completed but no COMPLETED marker"
    else:
        reason = status + (f": {summary['error']}" if summary.get("error") else "")
    rel = d.relative_to(root).as_posix() if d != root else d.name
    record = {
        "run": rel, "path": str(d), "name": summary.get("name", cfg.get("name", "default")),
        "job": summary.get("job") or d.name, "ablation": summary.get("ablation") or cfg.get("ablation_name"),
        "seed": summary.get("seed", cfg.get("seed")), "status": status, "ok": ok, "reason": reason,
        "max_epochs": get(cfg, "trainer.max_epochs", None),
        "error_threshold": summary.get("error_threshold", get(cfg, "eval.error_threshold", None)),
        "summary": summary, "config": cfg,
    }
    return record, history


def read_yaml(path: Path) -> dict:
    from omegaconf import OmegaConf
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        return cfg if isinstance(cfg, dict) else {}
    except Exception:  # a half-written or interpolated config: fall back to what summary.json says
        return {}
