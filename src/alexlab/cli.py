"""`alexlab-train`: Hydra's command line, with every error as one line and exit status 2.

Composition, `--help`, `--cfg` and config errors need no torch: train.py (and with it torch and
Lightning) is imported only when a run starts.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import sys

import hydra
from omegaconf import DictConfig

from .config import RENAMED, conf_dir
from .errors import AlexlabError, DivergedError, Interrupted, RunLocked, fail, say_error
from . import sweep

FAILURES: list[str] = []  # one line per failed job of this process, reported by main()


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def hydra_main(cfg: DictConfig):
    from .train import run  # torch and Lightning: loaded only once a run is about to start

    # An expected failure ends this job, not the process: the next trial of a sweep still runs.
    if sweep.in_multirun():  # ledger, OOM retries, any exception recorded: never raises
        return sweep.run_trial(cfg, run)
    try:
        return run(cfg)
    except RunLocked as locked:  # the same command is training it: not an error of this one
        print(f"alexlab: {locked}")
        return {"status": "locked", "error": str(locked)}
    except AlexlabError as err:
        FAILURES.append(str(err))
        say_error(str(err))
        return {"status": "diverged" if isinstance(err, DivergedError) else "failed", "error": str(err)}
    except Exception as err:
        if not sweep.is_oom(err):
            raise
        line = out_of_memory_line(err, cfg)
        FAILURES.append(line)
        say_error(line)
        return {"status": "failed", "error": line}


def out_of_memory_line(err: BaseException, cfg: DictConfig) -> str:
    """One line for a single run's CUDA out-of-memory: how much was asked for, and the settings that set it."""
    asked = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]i?B)", str(err))
    return (f"out of memory on the GPU{f' (tried to allocate {asked.group(1)})' if asked else ''} with "
            f"model.width={cfg.model.width}, data.batch_size={cfg.data.batch_size}; lower model.width or "
            "data.batch_size, or use a GPU with more free memory")


@contextlib.contextmanager
def signals_handled():
    """SIGTERM (what schedulers send before a kill) raises Interrupted wherever Python is, so the
    command records it and exits 143 instead of dying silently; inside Lightning's training loop
    Lightning's own handler runs first and calls this one, which then leaves the stop to the next
    batch boundary (SIGTERMException). A SIGINT that a shell set to ignored (`cmd &` in a script)
    is given back to Python, so Ctrl-C and kill -INT stop the command. The previous handlers come
    back when the command ends (tests call main() in-process)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if saved[signal.SIGINT] is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if saved[signal.SIGTERM] is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def terminate(signum, frame) -> None:
    if signal.getsignal(signal.SIGTERM) is terminate:  # else Lightning's handler called us: it stops the loop
        raise Interrupted("terminated by SIGTERM; rerun the same command to resume", signum)


def one_line(err: BaseException) -> str:
    """The most telling line of a Hydra/OmegaConf error, with the key it concerns."""
    cause = err.__cause__ or (None if err.__suppress_context__ else err.__context__)  # `raise ... from None`: none
    key = getattr(cause, "full_key", None) or getattr(err, "full_key", None)
    if key in RENAMED:  # an old command: name the key that replaced it
        return RENAMED[key]
    text = [t.strip() for t in str(cause if cause is not None and str(cause) else err).strip().splitlines() if t.strip()]
    first = text[0] if text else type(err).__name__
    parent = getattr(cause, "parent_node", None)
    if " not in " in first and isinstance(parent, DictConfig):  # unknown key: name the keys that exist
        first = f"{first}; valid keys: {', '.join(str(k) for k in parent.keys())}"
    if "Available options" in " ".join(text):  # unknown config group option: list the valid ones
        start = next(i for i, t in enumerate(text) if "Available options" in t) + 1
        options = [t for t in text[start:] if ":" not in t and "=" not in t]
        first = f"{first}; choose one of: {', '.join(options)}"
    return f"{key}: {first}" if key and key not in first else first


def main() -> None:
    """Console entry of alexlab-train."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    full_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's multi-line report
    sweep.ACTIVE.clear()
    try:
        with signals_handled():
            hydra_main()
    except Interrupted as stop:
        fail(sweep.interrupted(str(stop)), stop.exit_status)
    except KeyboardInterrupt:  # Ctrl-C outside Lightning's loop (composing, loading data, between trials)
        fail(sweep.interrupted("interrupted by SIGINT; rerun the same command to resume"), 128 + signal.SIGINT)
    except (HydraException, OmegaConfBaseException, AlexlabError) as err:
        if full_trace:
            raise
        fail(one_line(err))
    except YAMLError as err:  # a config or sweep file that is not YAML
        if full_trace:
            raise
        mark = getattr(err, "problem_mark", None)
        where = f"{mark.name} (line {mark.line + 1})" if mark is not None else "a config file"
        fail(f"{where} is not valid YAML: {getattr(err, 'problem', None) or err}")
    except OSError as err:  # an output folder Hydra cannot create (a file in the way, no space, read-only)
        if full_trace:
            raise
        where = f" {err.filename}" if err.filename else ""
        fail(f"cannot write{where} ({err.strerror or err}); paths.runs and paths.multirun must be writable folders "
             "with free space")
    if FAILURES or sweep.SWEEP_FAILURES:
        sys.exit(2)


if __name__ == "__main__":
    main()
