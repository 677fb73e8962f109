"""Fault injection for tests/reliability: patches for in-process runs, `alexlab-train` called
in-process, and a command that runs `alexlab-train` with a fault that must kill a real process:

    ALEXLAB_FAULT=<fault> python tests/reliability/faults.py <alexlab-train arguments>
      kill_at_step:K[:S]    SIGKILL as training step K (global, 0-based) runs, in the trial with seed S
      kill_in_save:E        SIGKILL halfway through writing epoch E's checkpoint bytes
      kill_before_rename:E  SIGKILL after epoch E's checkpoint is written, before it replaces last.ckpt
"""
from __future__ import annotations

import csv
import io
import os
import signal
import sys
from pathlib import Path

TIMING = ("epoch_time_s", "images_per_s")  # wall-clock columns: the only ones two runs may differ in


def trial_name() -> str:
    """The running job's folder name (a sweep trial's overrides)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir).name


class StepFault:
    """Wraps AlexLabModule.training_step: counts the steps each run makes (by `key(module)`: its
    seed, or e.g. trial_name), and at global step `step` of the runs `when(module)` picks (at
    most `times` times) passes the step's loss through `fault(module, loss) -> loss`, which may
    poison it, raise, or kill the process."""

    def __init__(self, step: int, fault, seed: int | None = None, times: int | None = None, when=None,
                 key=lambda module: module.seed):
        self.step, self.fault, self.times, self.key = step, fault, times, key
        self.when = when or (lambda module: seed is None or module.seed == seed)
        self.calls: dict = {}
        self.fired = 0

    def install(self, mp) -> "StepFault":
        from alexlab.module import AlexLabModule

        original, hook = AlexLabModule.training_step, self

        def training_step(module, batch, batch_idx):
            key = hook.key(module)
            hook.calls[key] = hook.calls.get(key, 0) + 1
            loss = original(module, batch, batch_idx)
            hit = module.global_step == hook.step and hook.when(module)
            if hit and (hook.times is None or hook.fired < hook.times):
                hook.fired += 1
                return hook.fault(module, loss)
            return loss

        mp.setattr(AlexLabModule, "training_step", training_step)
        return self


def poison(value: float):
    return lambda module, loss: loss * value  # the loss is positive: nan, inf or -inf


def raise_(err: BaseException):
    def fault(module, loss):
        raise err
    return fault


def sigkill(*_):
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_checkpoint_write(epoch: int, mp) -> None:
    """SIGKILL after half of epoch `epoch`'s checkpoint bytes reached the disk (Lightning writes them
    through fsspec, into a temporary file that is renamed only when complete)."""
    from fsspec.implementations.local import LocalFileOpener

    seen = []

    def write(self, data):
        if ".last.ckpt.tmp" in str(self.path):
            seen.append(self.path)
            if len(seen) == epoch + 1:
                self.f.write(bytes(data)[:len(data) // 2])
                self.f.flush()
                os.fsync(self.f.fileno())
                sigkill()
        return self.f.write(data)

    mp.setattr(LocalFileOpener, "write", write, raising=False)


def kill_before_rename(epoch: int, mp) -> None:
    """SIGKILL between writing epoch `epoch`'s whole checkpoint and renaming it to last.ckpt."""
    replace, renames = os.replace, []

    def guarded(src, dst, *args, **kwargs):
        if str(dst).endswith("last.ckpt"):
            renames.append(dst)
            if len(renames) == epoch + 1:
                sigkill()
        return replace(src, dst, *args, **kwargs)

    mp.setattr(os, "replace", guarded)


def disk_full(match: str, mp, after: int = 0) -> list:
    """After `after` good ones, every write to a file whose name contains `match` puts half its
    bytes down, then fails with ENOSPC as a full disk does (alexlab's text files and Lightning's
    checkpoint file). Returns the list of failed writes, which grows as they happen."""
    import errno

    from fsspec.implementations.local import LocalFileOpener

    import alexlab.run_folder as run_folder

    seen, failed = [], []

    def full(name) -> bool:
        if match not in str(name):
            return False
        seen.append(name)
        return len(seen) > after

    def fail(write, flush, data, name):
        write(data[:len(data) // 2])
        flush()
        failed.append(name)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class FullFile(io.TextIOWrapper):
        def write(self, text):
            if full(self.name):
                fail(super().write, self.flush, text, self.name)
            return super().write(text)

    def open_(path, mode="r", *args, **kwargs):
        if "w" in mode and "b" not in mode:
            return FullFile(open(path, mode.replace("w", "wb"), *args, **kwargs), encoding="utf-8")
        return open(path, mode, *args, **kwargs)

    def write(self, data):
        if full(self.path):
            fail(self.f.write, self.f.flush, data, self.path)
        return self.f.write(data)

    mp.setattr(run_folder, "open", open_, raising=False)
    mp.setattr(LocalFileOpener, "write", write, raising=False)
    return failed


# ------------------------------------------------------------------------------ running the CLI
def tiny(*changes: str) -> list[str]:
    """conftest.TINY with some of its values replaced (one value per key: one run folder name)."""
    from conftest import TINY

    keys = {c.split("=")[0] for c in changes}
    return [a for a in TINY if a.split("=")[0] not in keys] + list(changes)


def paths(tmp_path: Path) -> list[str]:
    """Output folders inside tmp_path (first, so a test's own paths.* override wins)."""
    return [f"paths.runs={tmp_path / 'runs'}", f"paths.multirun={tmp_path / 'multirun'}",
            f"paths.data={tmp_path / 'data'}"]


def cli(args, tmp_path: Path, multirun: bool = False) -> tuple[int, str, str]:
    """`alexlab-train [-m] <args>` in this process (no interpreter start-up, no imports): exit
    status, stdout, stderr. Paths go into tmp_path; Hydra's global state is reset around it.
    Warnings go to stderr as the command line would print them (pytest would swallow them)."""
    import contextlib
    import warnings

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from alexlab import cli, sweep

    argv = ["alexlab-train", *(["-m"] if multirun else []), *paths(tmp_path), *args]
    saved = sys.argv, os.environ.get("HYDRA_FULL_ERROR"), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    sys.argv = argv
    os.environ.pop("HYDRA_FULL_ERROR", None)
    cli.FAILURES.clear()
    sweep.SWEEP_FAILURES.clear()
    GlobalHydra.instance().clear()
    code = 0
    try:
        tmp_path.mkdir(parents=True, exist_ok=True)
        os.chdir(tmp_path)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # Python's own defaults, not pytest's
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            try:
                cli.main()
            finally:
                for w in caught:
                    err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved[0]
        if saved[1] is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved[1]
        os.chdir(saved[2])
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # else the next run in this process believes it is a sweep trial
    return code, out.getvalue(), err.getvalue()


def start_cli(args, tmp_path: Path, fault: str | None = None, multirun: bool = False):
    """`alexlab-train` started in a fresh process (through this file when a fault is armed)."""
    import subprocess

    entry = [__file__] if fault else ["-m", "alexlab.cli"]
    cmd = [sys.executable, *entry, *(["-m"] if multirun else []), *paths(tmp_path), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env.pop("ALEXLAB_FAULT", None)
    if fault:
        env["ALEXLAB_FAULT"] = fault
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def subprocess_cli(args, tmp_path: Path, fault: str | None = None, multirun: bool = False, timeout: int = 300):
    """The same, waited for: (exit status, stdout, stderr); -9 when SIGKILL ended it."""
    proc = start_cli(args, tmp_path, fault, multirun)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# ------------------------------------------------------------------------------ reading results
def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def checkpoint(run_dir: Path) -> dict:
    import torch

    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def same_state(a: dict, b: dict) -> bool:
    """Weights and optimizer state (momentum buffers) bit for bit."""
    import torch

    wa, wb = a["state_dict"], b["state_dict"]
    if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
        return False
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) for k in sa)


def only_run(root: Path) -> Path:
    dirs = [p.parent for p in (root / "runs").rglob("summary.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def one_error_line(err: str) -> str:
    """stderr must be exactly one line, `alexlab: error: ...`; returns it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("alexlab: error: "), err[-3000:]
    return lines[0]


def finished_markers(root: Path) -> list[str]:
    """What a rerun would take for a finished run: COMPLETED files, summaries that say completed."""
    import json

    found = [str(p) for p in root.rglob("COMPLETED")]
    for path in root.rglob("summary.json"):
        if json.loads(path.read_text()).get("status") == "completed":
            found.append(str(path))
    return found


def main() -> None:
    import pytest

    mp = pytest.MonkeyPatch()  # never undone: the process dies of its fault
    fault = os.environ.get("ALEXLAB_FAULT", "")
    kind, _, arg = fault.partition(":")
    if kind == "kill_at_step":
        step, _, seed = arg.partition(":")
        StepFault(int(step), sigkill, seed=int(seed) if seed else None).install(mp)
    elif kind == "kill_in_save":
        kill_in_checkpoint_write(int(arg), mp)
    elif kind == "kill_before_rename":
        kill_before_rename(int(arg), mp)
    else:
        raise SystemExit(f"faults.py: unknown ALEXLAB_FAULT={fault!r}")
    sys.argv[0] = "alexlab-train"
    from alexlab.cli import main as alexlab_main

    alexlab_main()


if __name__ == "__main__":
    main()
