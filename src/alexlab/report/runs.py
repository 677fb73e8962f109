"""The bottom of the report: the two frames every source yields (one row per run, one row per run
and epoch), whatever read them (run folders: load.py; W&B: wandb_source.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..errors import AlexlabError
from .designs import label_runs

RUN_COLUMNS = ["run", "path", "name", "job", "ablation", "seed", "status", "ok", "reason", "max_epochs",
               "error_threshold", "summary", "config"]
NO_CONFIG = "no resolved config (config.yaml) to tell its arm from"


class ReportError(AlexlabError):
    """Nothing to report on: missing folder, no runs, unreadable W&B group; a bad option."""


@dataclass
class Sweep:
    source: str             # the folder or wandb:<entity>/<project>/<group> it was read from
    runs: pd.DataFrame      # RUN_COLUMNS, then what designs.label_runs adds (group, arm, design, ...)
    history: pd.DataFrame   # run, epoch, and the metrics.csv columns
    plans: list[dict] = field(default_factory=list)   # seed plans (planfile.py), oldest first


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run; `ablation` is first the recorded ablation_name, then the arm its resolved
    config makes it (designs.label_runs)."""
    runs = pd.DataFrame(records, columns=RUN_COLUMNS)
    runs["ablation"] = runs["ablation"].fillna("unknown").astype(str)
    runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce").astype("Int64")
    runs["name"] = runs["name"].fillna("default").astype(str)
    runs["config"] = [c if isinstance(c, dict) else {} for c in runs["config"]]
    runs["error_threshold"] = pd.to_numeric(runs["error_threshold"], errors="coerce").fillna(0.25)
    runs["max_epochs"] = pd.to_numeric(runs["max_epochs"], errors="coerce").astype("Int64")
    runs["ok"] = runs["ok"].astype(bool)
    runs = label_runs(runs)
    for lacking, reason in ((runs["seed"].isna(), "no seed recorded"), (runs["design"] == "", NO_CONFIG)):
        flagged = runs["ok"] & lacking
        runs.loc[flagged, "ok"] = False
        runs.loc[flagged, "reason"] = reason
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
