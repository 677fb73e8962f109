"""Two identical commands at once on the same run folder or sweep: each run folder is trained by
one process only (an advisory lock on <run folder>/.lock, held while it trains); the other command
skips it and says so. The lock dies with its process, so a kill -9 never leaves one that blocks.
The first command holds its run at a chosen step until the test releases it (a fault hook that
waits on a file): no sleeps, no races."""
import json
import os
import signal

import pytest

from faults import StepFault, cli, metrics, only_run, start_cli, tiny, wait_for_file

STEPS_PER_EPOCH = 3  # 96 images / 32 per batch, 2 epochs (TINY)
ARGS = tiny()


def by_seed(entries: dict) -> dict:
    return {k.split("seed=")[1].split(",")[0]: v for k, v in entries.items()}


@pytest.mark.slow
def test_a_run_being_trained_is_skipped_by_a_second_command_and_its_lock_dies_with_a_kill_9(tmp_path, monkeypatch):
    first = start_cli(ARGS, tmp_path, fault="hold_at_step:1")
    try:
        wait_for_file(tmp_path / "holding", first)  # it holds the lock, in epoch 0's second step
        run_dir = only_run(tmp_path)
        with monkeypatch.context() as mp:
            steps = StepFault(-1, None).install(mp)
            code, out, err = cli(ARGS, tmp_path)  # the same command, at the same time
        assert code == 0, err[-3000:]
        assert f"alexlab: {run_dir} is being trained by another process (pid {first.pid}); skipped" in out
        assert steps.calls == {} and "alexlab: error" not in err  # nothing trained twice, nothing called an error
        assert (run_dir / ".lock").read_text().strip() == str(first.pid)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a kill -9 while it holds the lock
        first.communicate()

    with monkeypatch.context() as mp:  # the lock died with it: the same command trains the run
        steps = StepFault(-1, None).install(mp)
        code, out, err = cli(ARGS, tmp_path)
    assert code == 0, err[-3000:]
    assert steps.calls == {0: 2 * STEPS_PER_EPOCH} and "being trained by another process" not in out
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert [r["epoch"] for r in metrics(run_dir)] == ["0", "1"]


@pytest.mark.slow
def test_two_commands_on_one_sweep_share_its_trials_and_train_none_twice(tmp_path, monkeypatch):
    sweep = tiny("seed=0,1")
    first = start_cli(sweep, tmp_path, fault="hold_at_step:1:0", multirun=True)  # holds seed 0
    try:
        wait_for_file(tmp_path / "holding", first)
        with monkeypatch.context() as mp:
            steps = StepFault(-1, None).install(mp)
            code, out, err = cli(sweep, tmp_path, multirun=True)  # the same sweep, at the same time
        assert code == 0, err[-3000:]
        assert steps.calls == {1: 2 * STEPS_PER_EPOCH}  # seed 1 only: seed 0 is the first command's
        assert "is being trained by another process" in out
        sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
        report = json.loads((sweep_dir / "sweep_summary.json").read_text())
        assert {s: r["outcome"] for s, r in by_seed({r["trial"]: r for r in report["trials"]}).items()} == {
            "0": "locked", "1": "completed"}
        (tmp_path / "release").write_text("")
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err[-3000:]
    assert "seed=1" in out and "completed earlier; skipped" in out  # the first command did not train seed 1 again
    report = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert {s: r["outcome"] for s, r in by_seed({r["trial"]: r for r in report["trials"]}).items()} == {
        "0": "completed", "1": "skipped"}
    for row in report["trials"]:
        assert [r["epoch"] for r in metrics(sweep_dir / row["trial"])] == ["0", "1"]


def test_a_file_system_without_locks_warns_once_and_trains_unlocked(tmp_path, monkeypatch):
    """flock refused (Lustre mounted without -o flock: ENOLCK, EOPNOTSUPP): not an error."""
    import errno

    from alexlab import run_folder

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(run_folder.fcntl, "flock", no_locks)
    monkeypatch.setattr(run_folder, "_NO_LOCKS", [])
    code, _, err = cli(ARGS, tmp_path)
    assert code == 0, err[-3000:]
    run_dir = only_run(tmp_path)
    warnings = [line for line in err.splitlines() if line.startswith("alexlab:")]
    assert warnings == [f"alexlab: warning: cannot lock {run_dir / '.lock'} (No locks available); two commands on "
                        "this run folder at once would both train it"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
