"""CUDA out of memory in a sweep trial (raised on CPU from the training step): retried from the
trial's last checkpoint up to launcher.max_retries times, then failed with the reason; the other
trials never notice. (tests/test_sweeps.py has the plain retry count; this adds the resume.)"""
import json
from pathlib import Path

import torch

from conftest import TINY
from faults import StepFault, checkpoint, cli, finished_markers, metrics, one_error_line, raise_, same_state, tiny

STEPS_PER_EPOCH = 3  # 96 images / 32 per batch, 2 epochs (TINY)


def seed_of(trial: str) -> str:
    return trial.split("seed=")[1].split(",")[0]


def oom():
    return raise_(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)"))


def test_out_of_memory_is_retried_from_the_checkpoint_then_fails_with_the_reason(tmp_path, monkeypatch):
    code, _, err = cli([*TINY, "seed=0"], tmp_path / "reference")  # seed 0 as an ordinary run, no fault
    assert code == 0, err
    (reference,) = [p.parent for p in (tmp_path / "reference" / "runs").rglob("COMPLETED")]

    once = StepFault(STEPS_PER_EPOCH + 1, oom(), seed=0, times=1).install(monkeypatch)  # epoch 1: after a checkpoint
    always = StepFault(1, oom(), seed=1).install(monkeypatch)  # every attempt, before any checkpoint
    code, out, err = cli([*TINY, "seed=0,1,2", "launcher.max_retries=2"], tmp_path, multirun=True)
    assert code == 2
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    trials = {seed_of(k): v for k, v in json.loads((sweep_dir / "sweep_ledger.json").read_text())["trials"].items()}
    assert [(trials[s]["state"], trials[s]["attempts"]) for s in "012"] == [("completed", 2), ("failed", 3),
                                                                             ("completed", 1)]
    assert trials["1"]["error"] == ("out of memory after 3 attempts: OutOfMemoryError: CUDA out of memory. "
                                    "Tried to allocate 2.00 GiB (simulated)")
    assert err.count("out of memory on attempt") == 3  # seed 0 once, seed 1 twice

    # seed 0's retry resumed from epoch 0's checkpoint and ended exactly where an unbroken run ends
    steps = 2 * STEPS_PER_EPOCH
    assert once.calls[0] == (STEPS_PER_EPOCH + 2) + STEPS_PER_EPOCH  # 5 steps, then epoch 1 again
    retried = Path(trials["0"]["run_dir"])
    assert json.loads((retried / "summary.json").read_text())["resumed_from"].endswith("last.ckpt")
    assert metrics(reference) == metrics(retried) and same_state(checkpoint(reference), checkpoint(retried))
    assert always.calls[2] == steps and always.calls[1] == 3 * 2  # seed 2 untouched; seed 1: 3 attempts of 2 steps
    report = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert {seed_of(r["trial"]): r["outcome"] for r in report["trials"]} == {
        "0": "completed", "1": "failed", "2": "completed"}
    assert "out of memory after 3 attempts" in (sweep_dir / "sweep_summary.md").read_text()


def test_out_of_memory_in_a_single_run_is_one_line_naming_the_width_and_the_memory_asked_for(tmp_path, monkeypatch):
    StepFault(1, oom()).install(monkeypatch)
    code, out, err = cli(tiny("model.width=0.25"), tmp_path)
    assert code == 2
    assert one_error_line(err) == ("alexlab: error: out of memory on the GPU (tried to allocate 2.00 GiB) with "
                                   "model.width=0.25, data.batch_size=32; lower model.width or data.batch_size, or "
                                   "use a GPU with more free memory")
    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("summary.json")]
    assert summary["status"] == "failed" and summary["error"].startswith("OutOfMemoryError: CUDA out of memory.")
    assert finished_markers(tmp_path) == []
