"""One run's folder: its file names, atomic writes, what it says about the run, and whether the
current settings may skip or resume it.

    <run folder>/config.yaml              the resolved config
    <run folder>/metrics.csv              one row per epoch
    <run folder>/summary.json             status, final row, provenance (git SHA, versions)
    <run folder>/checkpoints/last.ckpt    Lightning's checkpoint of the last finished epoch
    <run folder>/COMPLETED                present only when the run finished

Training, sweeps, callbacks, data (its statistics cache) and the report all read or write these
files through this module; it imports nothing of alexlab but errors and settings.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import AlexlabError, CheckpointError
from .settings import RESULT_NEUTRAL, flatten, ignored

CONFIG = "config.yaml"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
COMPLETED = "COMPLETED"  # marker: the run finished and summary.json is final

# facts of a run that summary.json records beside its results (W&B puts them in the run's config)
FACTS = ("num_parameters", "num_classes", "num_train", "num_val", "num_train_clean", "num_test", "git_sha",
         "versions", "run_dir")
PACKAGES = ("alexlab", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "hydra-core", "wandb")


# ------------------------------------------------------------------------------------------ writing
def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # disk full, read-only folder: the old file stays whole, the partial one goes
        tmp.unlink(missing_ok=True)
        raise AlexlabError(f"cannot write {path} ({err.strerror or err}); free disk space or point paths.runs / "
                           "paths.multirun at a writable folder, then rerun the same command") from None


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def mark_completed(run_dir: Path, when: str) -> None:
    atomic_write_text(Path(run_dir) / COMPLETED, when + "\n")


# ------------------------------------------------------------------------------------------ reading
def is_completed(run_dir: Path) -> bool:
    return (Path(run_dir) / COMPLETED).is_file()


def read_summary(run_dir: Path) -> dict | None:
    """summary.json as a dict, or None when it is missing or not whole JSON."""
    path = Path(run_dir) / SUMMARY
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def read_metrics_csv(path: Path) -> list[dict]:
    """metrics.csv's rows as dicts of floats (None where a column is empty that epoch)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def finished_summary(run_dir: Path, cfg=None) -> dict | None:
    """The summary of a run that needs no rerun: completed, or diverged (a result, not a fault),
    with the settings of `cfg` (when given; otherwise None and the run itself names what changed)."""
    if cfg is not None and changed_settings(run_dir, cfg):
        return None
    summary = read_summary(run_dir)
    if summary is not None and (is_completed(run_dir) or summary.get("status") == "diverged"):
        return summary
    return None


# --------------------------------------------------------------------------------------- provenance
def git_sha() -> str | None:
    for where in (Path.cwd(), Path(__file__).resolve().parent):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
            if out.returncode == 0:
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def package_versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


# -------------------------------------------------------------------------------- may it be reused?
_UNKNOWN = object()
# Keys whose absence from a run folder's config.yaml means that run computed something else than
# the same settings compute now, so a rerun must neither skip nor resume it. data.subset_seed came
# with class-stratified samples (before: the first N images), train_clean every epoch and the
# plateau schedule on a validation split (before: on test/acc).
ABSENT_BEFORE = {"data.subset_seed": "absent (first-N subsets, plateau on test/acc)"}


def changed_settings(run_dir: Path, cfg: DictConfig) -> list[str]:
    """'key: before -> now' for every setting that differs between the config a run folder was
    trained with (its config.yaml) and `cfg`. Keys only one side knows (a newer schema) are not
    compared; an unreadable config.yaml compares as unchanged (the checkpoint check speaks then).
    A larger trainer.max_epochs is not a change for an unfinished run: resuming it trains on to
    the new end (a finished run is not extended: that would need trainer.fresh=true).
    Only the compared keys of `cfg` are resolved (its hydra node needs a live Hydra to resolve)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return []
    try:
        before = flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    except Exception:
        return []
    changes = []
    for key in sorted(before):
        if ignored(key, RESULT_NEUTRAL):
            continue
        try:
            now = OmegaConf.select(cfg, key, default=_UNKNOWN)
        except Exception:  # an interpolation that cannot resolve here
            continue
        if now is _UNKNOWN:
            continue
        if isinstance(now, (DictConfig, ListConfig)):
            now = OmegaConf.to_container(now, resolve=True)
        if key == "trainer.max_epochs" and now >= before[key] and not is_completed(run_dir):
            continue
        if now != before[key]:
            changes.append(f"{key}: {before[key]!r} -> {now!r}")
    for key, meaning in ABSENT_BEFORE.items():
        now = OmegaConf.select(cfg, key, default=_UNKNOWN)
        if key not in before and now is not _UNKNOWN:
            changes.append(f"{key}: {meaning} -> {now!r}")
    return changes


def check_checkpoint(path: Path) -> None:
    """Fail loudly on a checkpoint that cannot be resumed, rather than silently starting afresh."""
    import torch  # only when resuming: the CLI's start and the report never pay for it

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if "state_dict" not in ckpt or "loops" not in ckpt:
            raise ValueError("not a Lightning checkpoint")
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}); "
                              f"rerun with trainer.fresh=true to start this run again") from None
