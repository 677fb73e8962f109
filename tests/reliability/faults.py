"""Fault injection for tests/reliability: patches for in-process runs, `alexlab-train` called
in-process, and a command that runs `alexlab-train` with a fault that must kill a real process:

    ALEXLAB_FAULT=<fault> python tests/reliability/faults.py <alexlab-train arguments>
      kill_at_step:K[:S]    SIGKILL as training step K (global, 0-based) runs, in the trial with seed S
      kill_in_save:E        SIGKILL halfway through writing epoch E's checkpoint bytes
      kill_before_rename:E  SIGKILL after epoch E's checkpoint is written, before it replaces last.ckpt
      killpg_at_step:K      SIGKILL to the whole process group (every DDP rank) as rank 0 runs step K
      wait_for_signal_at_step:K   at step K write $ALEXLAB_FAULT_DIR/at_step, then wait for a signal
      hold_at_step:K[:S]    at step K write $ALEXLAB_FAULT_DIR/holding, then wait for .../release
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


class _Watched:
    """A file opened for writing whose `write` goes through `on_write(self, data)` first; `nth`
    counts the earlier openings of a file of the same name in this process (0 for the first)."""

    def __init__(self, f, on_write, nth: int):
        self.f, self.on_write, self.name, self.nth = f, on_write, f.name, nth

    def write(self, data):
        self.on_write(self, data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def watch_writes(mp, on_write) -> None:
    """Every file alexlab writes (all go through run_folder.atomic_write: text files, checkpoints,
    Hydra's .hydra records) passes each write through `on_write(file, data)`, which may fail it."""
    import alexlab.run_folder as run_folder

    opened: dict = {}

    def open_(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        if "w" not in mode:
            return f
        opened[str(path)] = opened.get(str(path), -1) + 1
        return _Watched(f, on_write, opened[str(path)])

    mp.setattr(run_folder, "open", open_, raising=False)


def kill_in_checkpoint_write(epoch: int, mp) -> None:
    """SIGKILL once half of epoch `epoch`'s checkpoint bytes reached the disk (torch.save writes
    them into a temporary file beside last.ckpt, renamed only when complete)."""
    written = [0]

    def on_write(f, data):
        if ".last.ckpt.tmp" not in str(f.name) or f.nth != epoch:
            return
        written[0] += len(data)
        if written[0] > _expected_size(f.name) // 2:
            f.f.write(bytes(data)[:len(data) // 2])
            f.f.flush()
            os.fsync(f.f.fileno())
            sigkill()

    watch_writes(mp, on_write)


def _expected_size(tmp_name) -> int:
    """The size of the checkpoint being replaced (last.ckpt beside the temporary file)."""
    last = Path(tmp_name).with_name("last.ckpt")
    return last.stat().st_size if last.is_file() else 0


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
    bytes down, then fails with ENOSPC as a full disk does (alexlab's text files, its checkpoints,
    Hydra's records). Returns the list of failed writes, which grows as they happen."""
    import errno

    failed = []

    def on_write(f, data):
        if match in str(f.name) and f.nth >= after:
            f.f.write(bytes(data)[:len(data) // 2])
            f.f.flush()
            failed.append(f.name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    watch_writes(mp, on_write)
    return failed


def kill_process_group(module, loss):
    """SIGKILL to this process's whole group (every DDP rank: a node going down), once the
    checkpoint of the last epoch is whole: where the kill lands does not depend on the writer's speed."""
    module.trainer.strategy.checkpoint_io.wait()
    os.killpg(0, signal.SIGKILL)


def send_signal(signum: int):
    """A StepFault that sends `signum` to this very process as the step runs (Lightning's handler
    or Python's KeyboardInterrupt then takes over, as for a signal from outside)."""
    def fault(module, loss):
        os.kill(os.getpid(), signum)
        return loss
    return fault


def marker(name: str) -> Path:
    """A file a subprocess's fault hook and the test meet at: in the subprocess's folder (its cwd)."""
    return Path(os.environ.get("ALEXLAB_FAULT_DIR", ".")) / name


def wait_for_signal(module, loss):
    """Announce the step (file `at_step`), then wait until a signal from outside has arrived: a
    SIGINT raises KeyboardInterrupt in the sleep; a SIGTERM sets Lightning's flag, after which the
    step ends and Lightning stops the loop. The test sends the signal only once the file exists."""
    import time

    marker("at_step").write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + 120
    while not module.trainer.received_sigterm and time.monotonic() < deadline:
        time.sleep(0.01)
    return loss


def hold(module, loss):
    """Announce the step (file `holding`), then wait until the test creates the file `release`."""
    import time

    marker("holding").write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + 120
    while not marker("release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return loss


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


def start_cli(args, tmp_path: Path, fault: str | None = None, multirun: bool = False, sigint_ignored: bool = False):
    """`alexlab-train` started in a fresh process (through this file when a fault is armed), in a
    session of its own (a kill of its process group reaches nothing else). `sigint_ignored`:
    started as a script's `cmd &` starts it, with SIGINT ignored."""
    import subprocess

    entry = [__file__] if fault else ["-m", "alexlab.cli"]
    cmd = [sys.executable, *entry, *(["-m"] if multirun else []), *paths(tmp_path), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path),
           "ALEXLAB_FAULT_DIR": str(tmp_path),  # and probes.py importable, also through `-m alexlab.cli`:
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("ALEXLAB_FAULT", None)
    if fault:
        env["ALEXLAB_FAULT"] = fault
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=ignore)


def subprocess_cli(args, tmp_path: Path, fault: str | None = None, multirun: bool = False, timeout: int = 300):
    """The same, waited for: (exit status, stdout, stderr); -9 when SIGKILL ended it."""
    proc = start_cli(args, tmp_path, fault, multirun)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for_file(path: Path, proc, timeout: float = 120) -> None:
    """Block until `path` exists (a fault hook announced its step), failing if `proc` ends first."""
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {path.name}:\n{out[-2000:]}"
                                 f"\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.02)


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
    elif kind == "wait_for_signal_at_step":
        StepFault(int(arg), wait_for_signal).install(mp)
    elif kind == "hold_at_step":
        step, _, seed = arg.partition(":")
        StepFault(int(step), hold, seed=int(seed) if seed else None).install(mp)
    elif kind == "killpg_at_step":
        StepFault(int(arg), kill_process_group, when=lambda module: module.global_rank == 0).install(mp)
    elif kind == "kill_in_save":
        kill_in_checkpoint_write(int(arg), mp)
    elif kind == "kill_before_rename":
        kill_before_rename(int(arg), mp)
    else:
        raise SystemExit(f"faults.py: unknown ALEXLAB_FAULT={fault!r}")
    sys.argv[0] = os.path.abspath(__file__)  # Lightning's DDP reruns argv[0] for rank 1: the faults come along
    from alexlab.cli import main as alexlab_main

    alexlab_main()


if __name__ == "__main__":
    main()
