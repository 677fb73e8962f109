"""A sweep's bookkeeping: the ledger of trial states, one trial's guarded run, the GPU pool's
assignment rule, and the end-of-sweep summary.

Each trial writes its own state into <sweep dir>/sweep_ledger.json (locked, written atomically),
so the summary never depends on the launching process having seen the trial: launchers that run
trials in other processes (gpu_pool, submitit) and a launcher that crashed are all covered. The
run folders stay the truth about results: COMPLETED + summary.json.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Hashable, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from . import run_folder
from .errors import AlexlabError, ConfigError, DivergedError, RunLocked, say_error, say_warning
from .run_folder import atomic_write_text

LEDGER = "sweep_ledger.json"
SUMMARY = "sweep_summary"       # .json and .md beside the ledger
STATES = ("waiting", "running", "completed", "failed", "diverged")
BAD = ("failed", "unfinished", "not run")  # outcomes that make the sweep's exit status non-zero
SWEEP_FAILURES: list[str] = []  # one line per sweep of this process with a BAD trial; main() exits 2
ACTIVE: dict = {}  # the sweep this process is launching (its folder, names), for a summary when a signal stops it


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def first_line(text) -> str:
    lines = [t.strip() for t in str(text).splitlines() if t.strip()]
    return lines[0] if lines else ""


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_launch(cfg) -> None:
    """DDP spawns its own processes and breaks inside a Hydra multirun on one node."""
    t = cfg.trainer
    multi_device = str(t.strategy).startswith("ddp") or t.num_nodes > 1 or (
        isinstance(t.devices, int) and not isinstance(t.devices, bool) and t.devices > 1)
    if multi_device and cfg.launcher.name != "slurm":
        raise ConfigError(f"trainer.strategy={t.strategy} (devices={t.devices}) cannot run inside a multirun on one "
                          "node; sweep with launcher=gpu_pool (one GPU per trial) or launcher=slurm (one job per "
                          "trial), or drop -m for a single DDP run")


# --------------------------------------------------------------------------------------------- ledger
class Ledger:
    """{"current": [trial, ...], "trials": {trial: {"state": ..., ...}}} in one JSON file; every
    change is a locked read-modify-write followed by an atomic rename."""

    def __init__(self, sweep_dir: Path | str):
        self.path = Path(sweep_dir) / LEDGER

    def read(self) -> dict:
        if not self.path.is_file():
            return {"current": [], "trials": {}}
        text = self.path.read_text(errors="replace")
        if not text.strip():  # never written so by alexlab (whole files only): a copy cut short
            say_warning(f"sweep ledger {self.path} is empty; starting a new one (the run folders keep every result)")
            return {"current": [], "trials": {}}
        remedy = "delete it (the run folders keep every result) and rerun the sweep"
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise AlexlabError(f"sweep ledger {self.path} is not valid JSON; {remedy}") from None
        if not (isinstance(data, dict) and isinstance(data.get("current"), list)
                and isinstance(data.get("trials"), dict)):
            raise AlexlabError(f"sweep ledger {self.path} is JSON but not a ledger (no current list and trials "
                               f"object); {remedy}")
        return data

    @contextlib.contextmanager
    def edit(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{LEDGER}.lock"), "a") as lock:
            _lock(lock)
            try:
                data = self.read()
                yield data
                data["updated"] = now()
                atomic_write_text(self.path, json.dumps(data, indent=1, default=str) + "\n")
            finally:
                _unlock(lock)

    def update(self, key: str, **fields) -> None:
        with self.edit() as data:
            data["trials"].setdefault(key, {}).update(fields)
            if key not in data["current"]:
                data["current"].append(key)

    def begin(self) -> None:
        """A new invocation of the sweep: its summary covers only the trials it launches."""
        with self.edit() as data:
            data["current"] = []

    def register(self, trials: dict[str, dict]) -> None:
        """Trials about to be launched: unfinished ones (new, failed, left running by a crash) wait."""
        with self.edit() as data:
            for key, info in trials.items():
                entry = data["trials"].setdefault(key, {})
                entry.update(info, locked=None)
                if entry.get("state") not in ("completed", "diverged"):
                    entry["state"] = "waiting"
                if key not in data["current"]:
                    data["current"].append(key)


def _lock(f) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: one launcher per sweep folder, no concurrent writers
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)


def _unlock(f) -> None:
    try:
        import fcntl
    except ImportError:
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------- one trial
def is_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def run_trial(cfg, run: Callable) -> dict:
    """One trial of a sweep: skip it if finished or if another process is training it (its run
    folder's lock), retry it on CUDA out-of-memory, and turn every other exception into a "failed"
    ledger entry, so that the next trial always runs. A signal (Interrupted, a BaseException)
    passes through: the trial stays "running" in the ledger and the sweep stops."""
    hc = HydraConfig.get()
    run_dir, sweep_dir = Path(hc.runtime.output_dir), Path(os.path.abspath(hc.sweep.dir))
    key = str(hc.sweep.subdir)
    if not run_folder.is_rank_zero():  # a SLURM job's other tasks (tasks_per_node > 1): rank 0 keeps the books
        return run(cfg)
    ledger = Ledger(sweep_dir)
    where = {"run_dir": str(run_dir), "host": socket.gethostname(), "pid": os.getpid(),
             "device": os.environ.get("CUDA_VISIBLE_DEVICES")}

    done = None if cfg.trainer.fresh else run_folder.finished_summary(run_dir, cfg)
    if done is not None:
        print(f"alexlab: {key}: {done['status']} earlier; skipped (trainer.fresh=true reruns it)")
        ledger.update(key, state=done["status"], skipped=True, error=done.get("error"), **where)
        return done
    try:
        with run_folder.locked(run_dir):
            return _attempts(cfg, run, key, ledger, where)
    except RunLocked as locked:  # its state stays the other process's; the summary says "locked"
        print(f"alexlab: {key}: {locked}")
        ledger.update(key, locked=str(locked))
        return {"status": "locked", "error": str(locked)}


def _attempts(cfg, run: Callable, key: str, ledger: Ledger, where: dict) -> dict:
    attempt, retry = 0, False
    while True:
        attempt += 1
        if retry:
            _free_cuda()
        ledger.update(key, state="running", skipped=False, attempts=attempt, started=now(), ended=None, error=None,
                      locked=None, **where)
        retry = False
        try:
            summary = run(cfg)
        except DivergedError as err:
            state, error, summary = "diverged", first_line(err), {"status": "diverged"}
        except AlexlabError as err:
            state, error, summary = "failed", first_line(err), {"status": "failed"}
        except Exception as err:
            retry = is_oom(err) and attempt <= cfg.launcher.max_retries
            if retry:
                print(f"alexlab: {key}: out of memory on attempt {attempt}; retry {attempt} of "
                      f"{cfg.launcher.max_retries}, from its last checkpoint", file=sys.stderr)
                continue  # leaves the except block first: the traceback's tensors can be freed
            traceback.print_exc()
            reason = "out of memory" + (f" after {attempt} attempts" if attempt > 1 else "") if is_oom(err) else None
            line = f"{type(err).__name__}: {first_line(err)}"
            state, error, summary = "failed", f"{reason}: {line}" if reason else line, {"status": "failed"}
        else:
            state, error = summary.get("status", "completed"), summary.get("error")
            if state not in STATES:  # not a state a ledger keeps: left running, so a rerun looks again
                state = "running"
        break
    if state in ("failed", "diverged"):
        say_error(f"{key}: {error}")
    ledger.update(key, state=state, error=error, ended=now())
    return {**summary, "status": summary.get("status", state), "error": error}


def _free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -------------------------------------------------------------------------------------- device pool
class DevicePool:
    """Which device the next trial gets. A device holds at most `per_device` trials at once; the
    least busy device goes first (ties: the order given); a device is handed out again only after
    `release`. On a CPU-only box the pool is one pseudo-device with n_jobs slots."""

    def __init__(self, devices: Sequence[Hashable], per_device: int = 1):
        if not devices or per_device < 1:
            raise ValueError("a device pool needs at least one device and per_device >= 1")
        self.per_device = per_device
        self.load = {d: 0 for d in devices}

    @property
    def capacity(self) -> int:
        return len(self.load) * self.per_device

    def acquire(self):
        free = [d for d, n in self.load.items() if n < self.per_device]
        if not free:
            return None
        device = min(free, key=lambda d: self.load[d])
        self.load[device] += 1
        return device

    def release(self, device) -> None:
        if self.load.get(device, 0) < 1:
            raise ValueError(f"device {device!r} was not acquired")
        self.load[device] -= 1


# ------------------------------------------------------------------------------------------ summary
def outcome(entry: dict, summary: dict | None) -> str:
    state = entry.get("state")
    if entry.get("locked") and state not in ("completed", "diverged", "failed"):
        return "locked"  # another command is training it and reports it
    if state == "completed":
        return "skipped" if entry.get("skipped") else "completed"
    if state in ("diverged", "failed"):
        return state
    if state == "running":
        return "unfinished"
    if state is None and summary is not None:  # a trial some other launcher ran: trust its folder
        return {"running": "unfinished", "interrupted": "unfinished"}.get(summary.get("status"), summary.get("status"))
    return "not run"


def sweep_rows(sweep_dir: Path) -> list[dict]:
    ledger = Ledger(sweep_dir).read()
    rows = []
    for key in ledger["current"] or sorted(ledger["trials"]):
        entry = ledger["trials"].get(key, {})
        run_dir = Path(entry.get("run_dir") or Path(sweep_dir) / key)
        summary = run_folder.read_summary(run_dir)
        s, final = summary or {}, (summary or {}).get("final") or {}
        rows.append({"trial": key, "outcome": outcome(entry, summary),
                     "error": first_line(entry.get("error") or s.get("error") or "") or None,
                     "attempts": entry.get("attempts"), "resumed": bool(s.get("resumed_from")),
                     "test/acc": final.get("test/acc"), "train_clean/acc": final.get("train_clean/acc"),
                     "gap": final.get("gap"), "best_test_acc": s.get("best_test_acc"), "epochs": s.get("epochs"),
                     "epochs_to_train_error": s.get("epochs_to_train_error"), "wall_time_s": s.get("wall_time_s"),
                     "device": entry.get("device"), "run_dir": str(run_dir)})
    return rows


def write_summary(sweep_dir: Path, sweep: str = "", experiment: str = "") -> dict:
    rows = sweep_rows(sweep_dir)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    report = {"sweep": sweep, "experiment": experiment, "sweep_dir": str(sweep_dir), "written": now(),
              "ok": not any(r["outcome"] in BAD for r in rows), "counts": counts, "trials": rows}
    atomic_write_text(Path(sweep_dir) / f"{SUMMARY}.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(Path(sweep_dir) / f"{SUMMARY}.md", summary_markdown(report))
    return report


def _fmt(v, column: str = "") -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if column == "wall_time_s" else f"{v:.4f}"
    return "" if v is None else str(v)


COLUMNS = ("trial", "outcome", "test/acc", "train_clean/acc", "gap", "epochs", "wall_time_s", "error")


def short_names(keys: list[str]) -> tuple[list[str], str]:
    """Trial names without the overrides they all share (shown once instead)."""
    parts = [k.split(",") for k in keys]
    common = [p for p in parts[0] if all(p in q for q in parts[1:])] if len(parts) > 1 else []
    return [",".join(p for p in q if p not in common) or k for q, k in zip(parts, keys)], ",".join(common)


def _table_rows(report: dict) -> tuple[list[list[str]], str]:
    names, common = short_names([r["trial"] for r in report["trials"]])
    return [[name] + [_fmt(row[c], c) for c in COLUMNS[1:]] for name, row in zip(names, report["trials"])], common


def summary_markdown(report: dict) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report["counts"].items()))
    rows, common = _table_rows(report)
    lines = [f"# Sweep {report['sweep']} / {report['experiment']}", "",
             f"{len(rows)} trials: {counts or 'none'}. Written {report['written']}.",
             f"Folder: `{report['sweep_dir']}`" + (f"; every trial has `{common}`." if common else "."), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    rows, common = _table_rows(report)
    table = Table(title=f"sweep {report['sweep']} / {report['experiment']}",
                  caption=f"every trial: {common}" if common else None)
    for column in COLUMNS:
        table.add_column(column.replace("train_clean/", "clean/"), overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console(width=max(120, Console().width)).print(table)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report["counts"].items()))
    print(f"alexlab: sweep {report['sweep']}: {counts or 'no trials'}; "
          f"{Path(report['sweep_dir']) / (SUMMARY + '.md')}")


def interrupted(line: str) -> str:
    """The command's one line for a signal that stopped it. When it stopped a sweep, the sweep's
    summary is written first (the ledger holds every trial's state: the one it interrupted still
    "running", those it never reached "waiting"), and the line names the trials left to do."""
    if not ACTIVE:
        return line
    sweep_dir, name, experiment = ACTIVE.pop("dir"), ACTIVE.pop("sweep"), ACTIVE.pop("experiment")
    try:
        report = write_summary(sweep_dir, name, experiment)
    except (AlexlabError, OSError):
        return f"{line}; sweep {name}: its ledger {sweep_dir / LEDGER} holds each trial's state"
    print_summary(report)
    names, _ = short_names([r["trial"] for r in report["trials"]])
    left = [n for n, r in zip(names, report["trials"]) if r["outcome"] in ("unfinished", "not run")]
    shown = "; ".join(left[:3]) + (f"; and {len(left) - 3} more" if len(left) > 3 else "")
    return (f"{line}; sweep {name}: {len(left)} of {len(names)} trials unfinished ({shown or 'none'}), "
            f"see {sweep_dir / (SUMMARY + '.md')}")


class SweepCallback(Callback):
    """Registered in conf/config.yaml; runs in the launching process around the whole sweep."""

    def on_multirun_start(self, config, **kwargs) -> None:
        ACTIVE.update(dir=Path(str(config.hydra.sweep.dir)), sweep=str(config.sweep_name), experiment=str(config.name))
        try:
            check_launch(config)
            Ledger(str(config.hydra.sweep.dir)).begin()
        except (AlexlabError, OSError):  # ConfigError is an AlexlabError
            # Hydra would print a callback's error as a multi-line warning; the launcher meets
            # the same fault next and reports it in one line before any trial starts.
            return

    def on_multirun_end(self, config, **kwargs) -> None:
        ACTIVE.clear()
        report = write_summary(Path(str(config.hydra.sweep.dir)), str(config.sweep_name), str(config.name))
        print_summary(report)
        bad = sum(n for k, n in report["counts"].items() if k in BAD)
        if bad:
            line = (f"sweep {config.sweep_name}: {bad} of {len(report['trials'])} trials failed or did not finish; "
                    f"rerun the same command to retry them (see {SUMMARY}.md)")
            say_error(line)
            SWEEP_FAILURES.append(line)
