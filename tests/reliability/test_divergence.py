"""A NaN or infinite loss stops the run at that step: status "diverged", one line naming the epoch
and step, no checkpoint or metrics row of the bad epoch. (In a sweep: test_sweep_faults.py.)"""
import json

import pytest

from conftest import TINY
from faults import StepFault, checkpoint, cli, finished_markers, metrics, one_error_line, only_run, poison

STEPS_PER_EPOCH = 3  # 96 images / 32 per batch, 2 epochs (TINY)


@pytest.mark.parametrize("value,shown", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")])
def test_a_non_finite_loss_stops_the_run_at_that_step(value, shown, tmp_path, monkeypatch):
    step = STEPS_PER_EPOCH + 1  # epoch 1, its second batch
    fault = StepFault(step, poison(value)).install(monkeypatch)
    code, _, err = cli(TINY, tmp_path)
    assert code == 2 and fault.fired == 1
    line = one_error_line(err)
    assert line == (f"alexlab: error: loss is {shown} at epoch 1, step {step} (batch 1); "
                    "lower optim.lr or use model.bias_init=0.1")
    assert fault.calls == {0: step + 1}  # not one step after the bad one
    run_dir = only_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["error"] == line.removeprefix("alexlab: error: ")
    assert summary["epochs"] == 1 and [r["epoch"] for r in metrics(run_dir)] == ["0"]  # the bad epoch left no row
    assert checkpoint(run_dir)["epoch"] == 0  # nor a checkpoint
    assert finished_markers(tmp_path) == []
