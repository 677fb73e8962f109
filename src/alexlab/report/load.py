"""Run folders (or W&B runs) -> two pandas frames: one row per run, one row per run and epoch.

A run counts only when it finished: COMPLETED marker present and summary status "completed".
Every other trial folder (failed, diverged, interrupted, still running, killed before writing a
summary) is kept with its reason so that the report can say which trials are missing.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import AlexlabError
from .claims import TRICKS

COMPLETED = "COMPLETED"  # same marker train.py writes
REFERENCE = "paper"      # the arm every other arm is compared with
SKIP_DIRS = {"checkpoints", "tensorboard", "wandb", ".hydra", "__pycache__"}
RUN_COLUMNS = ["run", "path", "name", "job", "setting", "group", "ablation", "seed", "lr", "status", "ok", "reason",
               "max_epochs", "error_threshold", "summary", "config"]


class ReportError(AlexlabError):
    """Nothing to report on: missing folder, no runs, unreadable W&B group."""


@dataclass
class Sweep:
    source: str             # the folder or wandb:<entity>/<project>/<group> it was read from
    runs: pd.DataFrame      # RUN_COLUMNS
    history: pd.DataFrame   # run, epoch, and the metrics.csv columns


def load(source: str | Path) -> Sweep:
    text = str(source)
    if text.startswith("wandb:"):
        from .wandb_source import load_wandb
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
    return Sweep(str(root), runs_frame(records), history_frame(histories))


def ledger_only(root: Path, dirs: list[Path]) -> list[dict]:
    """Trials a sweep's ledger (sweep_ledger.json, written by the sweep launcher) lists but no folder holds."""
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
            fields = dict(re.findall(r"(?:^|,)\+?(ablation|seed)=([^,]*)", str(job)))
            records.append({"run": d.relative_to(root).as_posix(), "path": str(d), "name": ledger.parent.name,
                            "job": str(job), "ablation": fields.get("ablation"), "seed": fields.get("seed"),
                            "status": "missing", "ok": False,
                            "reason": "missing: listed in sweep_ledger.json, no run folder",
                            "max_epochs": None, "error_threshold": None, "summary": {}, "config": {}})
    return records


def read_run_dir(d: Path, root: Path) -> tuple[dict, pd.DataFrame]:
    summary, cfg, problems = {}, {}, []
    if (d / "summary.json").is_file():
        try:
            summary = json.loads((d / "summary.json").read_text())
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
    marker = (d / COMPLETED).is_file()
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
        "max_epochs": nested(cfg, "trainer.max_epochs"),
        "error_threshold": summary.get("error_threshold", nested(cfg, "eval.error_threshold")),
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


def nested(cfg: dict, key: str):
    """cfg['a']['b'] for 'a.b', or a flat 'a.b' key (W&B configs can be either)."""
    if key in cfg:
        return cfg[key]
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def overrides_of(job: str) -> dict[str, str]:
    """'ablation=tanh,optim.lr=0.01,seed=1' -> {'ablation': 'tanh', 'optim.lr': '0.01', 'seed': '1'}."""
    if not job or job == "default":
        return {}
    parts = re.split(r",(?=\+?[\w.~/@-]+=)", job)
    return dict(p.lstrip("+").split("=", 1) for p in parts if "=" in p)


def setting_of(job: str) -> str:
    """A job name without what the report compares over (arm, seed, an activation x lr grid)."""
    over = overrides_of(job)
    drop = {"ablation", "seed", "model.activation"}
    if "model.activation" in over:  # the paper's Figure 1 protocol: lr tuned per activation
        drop.add("optim.lr")
    return ",".join(f"{k}={v}" for k, v in over.items() if k not in drop)


def arm_of(ablation: str, job: str) -> str:
    """A sweep over model.activation (relu_vs_tanh, factorial) has arms relu = paper and tanh."""
    activation = overrides_of(job).get("model.activation")
    if activation and ablation not in set(TRICKS) - {"tanh"}:  # not an arm that removes another trick
        return "tanh" if activation == "tanh" else REFERENCE
    return ablation


def runs_frame(records: list[dict]) -> pd.DataFrame:
    runs = pd.DataFrame(records, columns=RUN_COLUMNS)
    runs["ablation"] = runs["ablation"].fillna("unknown").astype(str)
    runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce").astype("Int64")
    runs["name"] = runs["name"].fillna("default").astype(str)
    runs["setting"] = runs["job"].astype(str).map(setting_of)
    runs["ablation"] = [arm_of(a, j) for a, j in zip(runs["ablation"], runs["job"].astype(str))]
    grid = [overrides_of(j) for j in runs["job"].astype(str)]
    runs["lr"] = [float(o["optim.lr"]) if "model.activation" in o and "optim.lr" in o else None for o in grid]
    runs["group"] = [n if not s else f"{n} [{s}]" for n, s in zip(runs["name"], runs["setting"])]
    runs["error_threshold"] = pd.to_numeric(runs["error_threshold"], errors="coerce").fillna(0.25)
    runs["max_epochs"] = pd.to_numeric(runs["max_epochs"], errors="coerce").astype("Int64")
    runs["ok"] = runs["ok"].astype(bool)
    missing_seed = runs["ok"] & runs["seed"].isna()
    runs.loc[missing_seed, "ok"] = False
    runs.loc[missing_seed, "reason"] = "no seed recorded"
    return runs


def history_frame(histories: list[pd.DataFrame]) -> pd.DataFrame:
    if not histories:
        return pd.DataFrame(columns=["run", "epoch"])
    history = pd.concat(histories, ignore_index=True)
    history["epoch"] = pd.to_numeric(history["epoch"], errors="coerce")
    history = history.dropna(subset=["epoch"])
    history["epoch"] = history["epoch"].astype(int)
    # a replayed epoch (kill between row and checkpoint), or W&B rows split over several log calls:
    # per run and epoch, the last value logged for each metric
    return history.groupby(["run", "epoch"], as_index=False, sort=True).last()
