"""SIGTERM (what SLURM, Kubernetes and most schedulers send before a kill) and SIGINT (Ctrl-C):
the run stops with status `interrupted`, one line saying so and how to resume, and exit status
128 + the signal (143, 130), never 0; a sweep writes its summary naming the unfinished trials;
the same command then resumes. The signal is sent at a chosen step by a fault hook, in this
process (fast) or, where a real process must die, from outside once the hook announced its step."""
import json
import signal
from pathlib import Path

import pytest

from faults import (StepFault, cli, finished_markers, metrics, one_error_line, only_run, send_signal, start_cli, tiny,
                    wait_for_file)

STEPS_PER_EPOCH = 3  # 96 images / 32 per batch, 2 epochs (TINY)
STEP = STEPS_PER_EPOCH + 1  # epoch 1's second step: epoch 0's checkpoint exists
ARGS = tiny()
SIGNALS = {"SIGTERM": (signal.SIGTERM, 143, "terminated"), "SIGINT": (signal.SIGINT, 130, "interrupted")}


def by_seed(entries: dict) -> dict:
    return {k.split("seed=")[1].split(",")[0]: v for k, v in entries.items()}


@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_signal_during_training_is_status_interrupted_one_line_and_exit_128_plus_the_signal(name, tmp_path,
                                                                                             monkeypatch):
    signum, status, verb = SIGNALS[name]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with monkeypatch.context() as mp:
        steps = StepFault(STEP, send_signal(signum)).install(mp)
        code, _, err = cli(ARGS, tmp_path)
    assert code == status, err[-3000:]
    run_dir = only_run(tmp_path)
    line = one_error_line(err)
    assert line == (f"alexlab: error: {verb} by {name} at epoch 1; rerun the same command to resume from "
                    f"{run_dir / 'checkpoints' / 'last.ckpt'}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["error"] == line.removeprefix("alexlab: error: ")
    assert finished_markers(tmp_path) == [] and [r["epoch"] for r in metrics(run_dir)] == ["0"]
    # SIGTERM: Lightning stops at the end of the step it arrived in; SIGINT: within it
    assert steps.calls == {0: STEP + 1}
    # the command gave back the handlers it found (Lightning leaves SIGINT ignored after a Ctrl-C)
    assert {s: signal.getsignal(s) for s in handlers} == handlers

    with monkeypatch.context() as mp:  # the same command resumes from epoch 0's checkpoint
        steps = StepFault(-1, None).install(mp)
        code, _, err = cli(ARGS, tmp_path)
    assert code == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] and steps.calls == {0: STEPS_PER_EPOCH}


def test_a_terminated_sweep_writes_its_summary_naming_the_unfinished_trials_then_resumes(tmp_path, monkeypatch):
    sweep = tiny("seed=0,1,2")
    with monkeypatch.context() as mp:
        StepFault(STEP, send_signal(signal.SIGTERM), seed=1).install(mp)
        code, out, err = cli(sweep, tmp_path, multirun=True)
    assert code == 143, err[-3000:]
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    line = one_error_line(err)
    assert line.startswith("alexlab: error: terminated by SIGTERM at epoch 1; rerun the same command to resume from ")
    assert line.endswith(f"; sweep adhoc: 2 of 3 trials unfinished (seed=1; seed=2), see {sweep_dir}/sweep_summary.md")
    ledger = by_seed(json.loads((sweep_dir / "sweep_ledger.json").read_text())["trials"])
    assert {s: t["state"] for s, t in ledger.items()} == {"0": "completed", "1": "running", "2": "waiting"}
    report = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert {s: r["outcome"] for s, r in by_seed({r["trial"]: r for r in report["trials"]}).items()} == {
        "0": "completed", "1": "unfinished", "2": "not run"}
    assert "| unfinished |" in (sweep_dir / "sweep_summary.md").read_text() and report["ok"] is False

    with monkeypatch.context() as mp:  # the same command: seed 1 resumes, seed 2 runs, seed 0 is skipped
        steps = StepFault(-1, None).install(mp)
        code, out, err = cli(sweep, tmp_path, multirun=True)
    assert code == 0, err[-3000:]
    assert steps.calls == {1: STEPS_PER_EPOCH, 2: 2 * STEPS_PER_EPOCH}
    report = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert {s: r["outcome"] for s, r in by_seed({r["trial"]: r for r in report["trials"]}).items()} == {
        "0": "skipped", "1": "completed", "2": "completed"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_signal_from_outside_stops_a_process_started_with_sigint_ignored(name, tmp_path):
    """As a script's `alexlab-train ... &` starts it: SIGINT ignored (why Ctrl-C once did nothing and
    the interrupted run exited 0); the command gives SIGINT back to Python, so both signals stop it."""
    signum, status, verb = SIGNALS[name]
    proc = start_cli(ARGS, tmp_path, fault=f"wait_for_signal_at_step:{STEP}", sigint_ignored=True)
    try:
        wait_for_file(tmp_path / "at_step", proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == status, err[-3000:]
    run_dir = only_run(tmp_path)
    line = one_error_line(err)
    assert line == (f"alexlab: error: {verb} by {name} at epoch 1; rerun the same command to resume from "
                    f"{run_dir / 'checkpoints' / 'last.ckpt'}")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert finished_markers(tmp_path) == []


def test_sigterm_before_training_starts_is_one_line_and_exit_143(tmp_path, monkeypatch):
    """Outside Lightning's loop (here while the data loads) alexlab's own handler stops the command."""
    import os

    from alexlab.data import AlexDataModule

    def load(self, stage=None):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(AlexDataModule, "setup", load)
    code, _, err = cli(ARGS, tmp_path)
    assert code == 143
    assert one_error_line(err) == "alexlab: error: terminated by SIGTERM; rerun the same command to resume"
    assert finished_markers(tmp_path) == []


@pytest.mark.slow
def test_a_gpu_pool_trial_stopped_by_sigterm_is_left_unfinished_and_the_rerun_resumes_it(tmp_path):
    """One trial process of launcher=gpu_pool gets SIGTERM (a probe callback sends it at its step):
    it records `interrupted` and exits 143; the launcher leaves it `running` in the ledger (not
    failed), the other trial completes, and the same command resumes it."""
    sweep = tiny("launcher=gpu_pool", "launcher.n_jobs=2", "seed=0,1", "+callbacks.stop._target_=probes.SignalAtStep",
                 f"+callbacks.stop.step={STEP}", "+callbacks.stop.seed=1")
    proc = start_cli(sweep, tmp_path, multirun=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    ledger = by_run_seed(json.loads((sweep_dir / "sweep_ledger.json").read_text())["trials"])
    assert {s: t["state"] for s, t in ledger.items()} == {0: "completed", 1: "running"}
    stopped = Path(ledger[1]["run_dir"])
    assert json.loads((stopped / "summary.json").read_text())["status"] == "interrupted"
    assert "alexlab: error: terminated by SIGTERM at epoch 1" in (stopped / "console.log").read_text()
    report = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert sorted(r["outcome"] for r in report["trials"]) == ["completed", "unfinished"]

    proc = start_cli(sweep, tmp_path, multirun=True)  # the same command (the probe has fired: it stays quiet)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert {s: r["outcome"] for s, r in by_run_seed({r["trial"]: r for r in report["trials"]}).items()} == {
        0: "skipped", 1: "completed"}
    assert json.loads((stopped / "summary.json").read_text())["resumed_from"].endswith("last.ckpt")


def by_run_seed(entries: dict) -> dict:
    """Ledger or summary rows by the seed their run folder's summary records (these folder names are
    long enough to be shortened, seed and all)."""
    return {json.loads((Path(e["run_dir"]) / "summary.json").read_text())["seed"]: e for e in entries.values()}
