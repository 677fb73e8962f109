"""One run's folder: its file names, atomic writes, what it says about the run, and whether the
current settings may skip or resume it.

    <run folder>/config.yaml              the resolved config
    <run folder>/metrics.csv              one row per epoch
    <run folder>/summary.json             status, final row, provenance (git SHA, versions)
    <run folder>/checkpoints/last.ckpt    Lightning's checkpoint of the last finished epoch
    <run folder>/COMPLETED                present only when the run finished
    <run folder>/.lock                    held (flock) by the process training the run

Training, sweeps, callbacks, data (its statistics cache) and the report all read or write these
files through this module; it imports nothing of alexlab but errors and settings.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
from typing import BinaryIO, Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import AlexlabError, CheckpointError, RunLocked, say_warning
from .settings import RESULT_NEUTRAL, flatten, ignored

CONFIG = "config.yaml"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
COMPLETED = "COMPLETED"  # marker: the run finished and summary.json is final
LOCK = ".lock"  # flock'd by the process that trains the run: a second command skips it

# facts of a run that summary.json records beside its results (W&B puts them in the run's config)
FACTS = ("num_parameters", "num_classes", "num_train", "num_val", "num_train_clean", "num_test", "git_sha",
         "versions", "run_dir")
PACKAGES = ("alexlab", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "hydra-core", "wandb")


# ------------------------------------------------------------------------------------------ writing
TEXT_HINT = "free disk space or point paths.runs / paths.multirun at a writable folder, then rerun the same command"


def temporary(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: beside it (same file system, so the
    rename is atomic; a kill leaves it there, where the next start of the run removes it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: Path, write: Callable[[BinaryIO], None], hint: str = TEXT_HINT, what: str = "") -> None:
    """`write(file)` into a temporary file beside `path`, fsync, rename over `path`, fsync the folder:
    readers never see half a file, and a power cut leaves the old file or the new one. On a write
    error (disk full, read-only folder) the old file stays whole, the partial one goes, and the
    error is one line naming `what` `path` and `hint`."""
    path = Path(path)
    tmp = temporary(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise AlexlabError(f"cannot write {what + ' ' if what else ''}{path} ({err.strerror or err}); {hint}") from None


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the temporary files of writes a kill cut short (`.<name>.tmp<pid>` of every file the
    run keeps); only the process holding the run's lock may call this. Returns what it removed."""
    run_dir = Path(run_dir)
    removed = []
    for name in (CONFIG, METRICS, SUMMARY, COMPLETED, CHECKPOINT):
        target = run_dir / name
        for leftover in target.parent.glob(f".{target.name}.tmp*"):
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


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


def check_checkpoint(path: Path, expected: dict | None = None) -> int:
    """Refuse, in one line naming the file and trainer.fresh=true, a checkpoint that cannot be
    resumed: damaged (torch.save writes a zip whose entries carry CRC-32s that torch.load never
    checks, so a zeroed range or a flipped bit would load as other weights; testzip reads every
    entry), not Lightning's, or holding another network (`expected`: the module's state_dict, whose
    keys and shapes the file must have). Returns the epoch it ends (Lightning's `epoch`)."""
    import zipfile

    import torch  # only when resuming: the CLI's start and the report never pay for it

    fresh = "rerun with trainer.fresh=true to start this run again"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"{bad} fails its CRC-32 check")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if "state_dict" not in ckpt or "loops" not in ckpt or "epoch" not in ckpt:
            raise ValueError("not a Lightning checkpoint")
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: "
                              f"{_first_line(err)}); {fresh}") from None
    mismatch = _state_mismatch(ckpt["state_dict"], expected) if expected is not None else None
    if mismatch:
        raise CheckpointError(f"checkpoint {path} holds another network ({mismatch}); {fresh}")
    return int(ckpt["epoch"])


def _first_line(err: BaseException) -> str:
    lines = [t for t in str(err).splitlines() if t.strip()]
    return lines[0].strip() if lines else ""


def _state_mismatch(saved: dict, expected: dict) -> str | None:
    """'features.0.weight: (96, 3, 5, 5) in the file, (12, 3, 5, 5) here' for the first tensor that
    differs in shape, or the first key only one side has; None when they agree."""
    for key, tensor in expected.items():
        if key not in saved:
            return f"{key} missing from the file"
        if tuple(saved[key].shape) != tuple(tensor.shape):
            return f"{key}: {tuple(saved[key].shape)} in the file, {tuple(tensor.shape)} here"
    extra = [k for k in saved if k not in expected]
    return f"{extra[0]} is not a tensor of this network" if extra else None


def check_metrics_cover(run_dir: Path, epoch: int) -> None:
    """metrics.csv must hold a row for every epoch the checkpoint ends (0..epoch): resuming after
    those rows were lost would leave the run's curves without them. They cannot be rebuilt (the
    weights of past epochs are gone), so the run is refused."""
    path = Path(run_dir) / METRICS
    have = {int(r["epoch"]) for r in read_metrics_csv(path) if r.get("epoch") is not None} if path.is_file() else set()
    missing = [e for e in range(epoch + 1) if e not in have]
    if missing:
        what = "is missing" if not path.is_file() else f"lacks the rows of epoch(s) {_span(missing)}"
        raise AlexlabError(f"{path} {what} but {Path(run_dir) / CHECKPOINT} ends epoch {epoch}; resuming would "
                           "lose those rows: rerun with trainer.fresh=true to train this run again from the start")


def _span(epochs: list[int]) -> str:
    return f"{epochs[0]}-{epochs[-1]}" if len(epochs) > 2 and epochs[-1] - epochs[0] == len(epochs) - 1 else \
        ", ".join(map(str, epochs))


# ---------------------------------------------------------------------------------- who may write
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID")


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 of its job, the one that writes the run folder and
    the ledger: every rank variable that is set says 0 (torchrun's RANK, Lightning's DDP children's
    LOCAL_RANK/NODE_RANK, SLURM's SLURM_PROCID, submitit's local SUBMITIT_LOCAL_GLOBALID)."""
    return all(os.environ.get(name, "0").strip() in ("0", "") for name in RANK_VARIABLES)


try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one command per run folder
    fcntl = None

_HELD: dict[Path, list] = {}  # run folder -> [fd, depth]: this process's locks (reentrant: sweep trial, then run)
_NO_LOCKS: list[Path] = []  # the first lock this file system refused (warned once)


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold `<run_dir>/.lock` for as long as the run trains. An advisory flock: the kernel drops it
    when the process dies, kill -9 included, so a stale lock never blocks. Raises RunLocked (naming
    the holder's pid) when another process holds it; this process may take it again (a sweep's
    trial guard, then the run)."""
    run_dir = Path(run_dir).absolute()
    if run_dir not in _HELD:
        _HELD[run_dir] = [_take_lock(run_dir), 0]
    _HELD[run_dir][1] += 1
    try:
        yield
    finally:
        _HELD[run_dir][1] -= 1
        if _HELD[run_dir][1] == 0:
            fd = _HELD.pop(run_dir)[0]
            if fd is not None:
                os.close(fd)  # releases the flock


def _take_lock(run_dir: Path) -> int | None:
    if fcntl is None:
        return None
    path = run_dir / LOCK
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise AlexlabError(f"cannot write {path} ({err.strerror or err}); {TEXT_HINT}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise RunLocked(f"{run_dir} is being trained by another process (pid {holder or 'unknown'}); skipped") from None
    except OSError as err:  # a file system without flock (Lustre without -o flock): run unlocked, as before
        if not _NO_LOCKS:
            say_warning(f"cannot lock {path} ({err.strerror or err}); two commands on this run folder at once "
                        "would both train it")
            _NO_LOCKS.append(path)
    try:  # the holder's pid, for the other command's message
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # the lock holds all the same
    return fd


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="ignore").strip()
    return int(text) if text.isdigit() else None
