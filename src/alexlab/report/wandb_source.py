"""`wandb:<entity>/<project>/<group>` -> the same frames as a sweep folder, through wandb.Api().

The W&B logger names a run after its job folder, sets job_type to the ablation and logs each
metrics.csv row with `epoch`; config is the resolved Hydra config (nested or dotted keys).
"""
from __future__ import annotations

import pandas as pd

from ..run_folder import FACTS
from ..settings import get
from .runs import ReportError, Sweep, history_frame, runs_frame

STATES = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "interrupted",
          "running": "running", "pending": "running", "preempted": "interrupted"}


def parse_spec(spec: str) -> tuple[str, str, str]:
    parts = spec[len("wandb:"):].strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise ReportError(f"{spec}: expected wandb:<entity>/<project>/<group> (group = <sweep>-<experiment>, e.g. one_at_a_time-fmnist_quick)")
    return parts[0], parts[1], parts[2]


def load_wandb(spec: str) -> Sweep:
    entity, project, group = parse_spec(spec)
    try:
        import wandb
    except ImportError:
        raise ReportError("reading W&B needs the wandb package: pip install wandb") from None
    try:
        api = wandb.Api(timeout=60)
        found = list(api.runs(f"{entity}/{project}", filters={"group": group}))
    except Exception as err:  # auth, network, unknown project: one line, not a traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ReportError(f"{spec}: could not read runs from W&B ({first})") from None
    if not found:
        raise ReportError(f"{spec}: W&B project {entity}/{project} has no runs in group {group!r}")
    records, histories = [], []
    for run in found:
        record, history = read_wandb_run(run)
        records.append(record)
        if len(history):
            histories.append(history.assign(run=record["run"]))
    return Sweep(spec, runs_frame(records), history_frame(histories))


def read_wandb_run(run) -> tuple[dict, pd.DataFrame]:
    cfg = dict(run.config or {})
    summary = dict(getattr(run, "summary_metrics", None) or getattr(run, "summary", None) or {})
    state = getattr(run, "state", "unknown")
    status = summary.get("status") or STATES.get(state, state)
    ok = status == "completed" and state == "finished"
    reason = "" if ok else f"{status} (W&B state {state})" + (f": {summary['error']}" if summary.get("error") else "")
    rows = [r for r in run.scan_history() if r.get("epoch") is not None]
    history = pd.DataFrame(rows)
    if len(history):
        history = history[[c for c in history.columns if not c.startswith("_")]]
    record = {
        "run": f"{run.name} ({run.id})", "path": getattr(run, "url", ""), "name": get(cfg, "name", None) or "default",
        "job": run.name, "ablation": get(cfg, "ablation_name", None) or getattr(run, "job_type", None),
        "seed": get(cfg, "seed", None), "status": status, "ok": ok, "reason": reason,
        "max_epochs": get(cfg, "trainer.max_epochs", None),
        "error_threshold": get(cfg, "eval.error_threshold", None), "summary": summary,
        # the resolved config as the run folder's config.yaml holds it: without what train.py derives
        # (git SHA, run folder, ...), which differs between runs that compute the same thing
        "config": {k: v for k, v in cfg.items() if k not in FACTS},
    }
    return record, history
