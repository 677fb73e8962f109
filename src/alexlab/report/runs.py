"""The bottom of the report: the two frames every source yields (one row per run, one row per run
and epoch), whatever read them (run folders: load.py; W&B: wandb_source.py)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from ..errors import AlexlabError
from .claims import TRICKS

REFERENCE = "paper"      # the arm every other arm is compared with
RUN_COLUMNS = ["run", "path", "name", "job", "setting", "group", "ablation", "seed", "lr", "status", "ok", "reason",
               "max_epochs", "error_threshold", "summary", "config"]


class ReportError(AlexlabError):
    """Nothing to report on: missing folder, no runs, unreadable W&B group."""


@dataclass
class Sweep:
    source: str             # the folder or wandb:<entity>/<project>/<group> it was read from
    runs: pd.DataFrame      # RUN_COLUMNS
    history: pd.DataFrame   # run, epoch, and the metrics.csv columns


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
