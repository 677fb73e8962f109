"""The launching process of a sweep killed with SIGKILL at a random step of its second trial:
the ledger still says which trials finished, which was running and which were waiting; the same
command resumes the running one from its checkpoint, skips the finished one, runs the rest."""
import json
import random
import signal

import pytest

from faults import StepFault, cli, metrics, subprocess_cli, tiny

STEPS_PER_EPOCH = 6  # 192 images / 32 per batch, 2 epochs
ARGS = tiny("data.num_train=192", "seed=0,1,2")


def by_seed(entries: dict) -> dict:
    return {k.split("seed=")[1].split(",")[0]: v for k, v in entries.items()}


@pytest.mark.slow
def test_sigkill_of_the_launching_process_loses_nothing(tmp_path, monkeypatch):
    step = random.randrange(STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)  # in seed 1's epoch 1: it has a checkpoint
    where = f"(killed at step {step} of seed 1)"
    code, _, err = subprocess_cli(ARGS, tmp_path, fault=f"kill_at_step:{step}:1", multirun=True)
    assert code == -signal.SIGKILL, f"{where} {err[-2000:]}"
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    ledger = by_seed(json.loads((sweep_dir / "sweep_ledger.json").read_text())["trials"])
    assert {s: t["state"] for s, t in ledger.items()} == {"0": "completed", "1": "running", "2": "waiting"}, where
    assert not (sweep_dir / "sweep_summary.json").exists()  # the launcher never got to write it: the ledger has all
    done = {p: p.stat().st_mtime_ns for p in (sweep_dir / ledger["0"]["run_dir"]).iterdir() if p.is_file()}

    with monkeypatch.context() as mp:
        steps = StepFault(-1, None).install(mp)  # counts each seed's steps in the rerun
        code, out, err = cli(ARGS, tmp_path, multirun=True)  # the same command
    assert code == 0, f"{where} {err[-3000:]}"
    report = by_seed({r["trial"]: r for r in json.loads((sweep_dir / "sweep_summary.json").read_text())["trials"]})
    assert {s: r["outcome"] for s, r in report.items()} == {"0": "skipped", "1": "completed", "2": "completed"}
    assert report["1"]["resumed"] and not report["2"]["resumed"], where
    assert steps.calls == {1: STEPS_PER_EPOCH, 2: 2 * STEPS_PER_EPOCH}, where  # seed 1: only its unfinished epoch
    assert [r["epoch"] for r in metrics(sweep_dir / ledger["1"]["run_dir"])] == ["0", "1"]  # each epoch once
    assert {p: p.stat().st_mtime_ns for p in done} == done  # the finished trial untouched
