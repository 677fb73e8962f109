"""kill -9 at a random step, or in the middle of saving a checkpoint: the same command resumes
from the last whole checkpoint and ends bit-identical to a run that was never interrupted."""
import json
import random
import signal

import pytest

from faults import StepFault, checkpoint, cli, metrics, only_run, same_state, start_cli, subprocess_cli, tiny

STEPS_PER_EPOCH, EPOCHS = 6, 3  # 192 images / 32 per batch
# warm-up (per step) then a cosine schedule (per epoch): lr, momentum, scheduler and loop state all
# have to come back from the checkpoint
ARGS = tiny("data.num_train=192", f"trainer.max_epochs={EPOCHS}", "optim.schedule=cosine", "optim.warmup_epochs=1",
            "seed=5")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in this process."""
    root = tmp_path_factory.mktemp("uninterrupted")
    code, _, err = cli(ARGS, root)
    assert code == 0, err
    run_dir = only_run(root)
    return {"metrics": metrics(run_dir), "checkpoint": checkpoint(run_dir)}


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_the_same_command_ends_bit_identical(reference, tmp_path):
    step = random.randrange(STEPS_PER_EPOCH, STEPS_PER_EPOCH * EPOCHS)  # any step after the first checkpoint
    epoch = step // STEPS_PER_EPOCH
    where = f"(killed at step {step}, epoch {epoch})"
    code, _, err = subprocess_cli(ARGS, tmp_path, fault=f"kill_at_step:{step}")
    assert code == -signal.SIGKILL, f"{where} {err[-2000:]}"
    run_dir = only_run(tmp_path)
    assert not (run_dir / "COMPLETED").exists() and json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    assert checkpoint(run_dir)["epoch"] == epoch - 1, where  # the last epoch that ended
    assert metrics(run_dir) == reference["metrics"][:epoch], where  # rows of finished epochs, as they were

    code, _, err = cli(ARGS, tmp_path)  # the same command, no fault (in this process: no start-up to wait for)
    assert code == 0, f"{where} {err[-2000:]}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"].endswith("last.ckpt"), where
    assert metrics(run_dir) == reference["metrics"], where  # every epoch once, every value equal (atol 0)
    assert same_state(checkpoint(run_dir), reference["checkpoint"]), where  # weights and momentum, bit for bit


@pytest.mark.slow
def test_kill_9_while_saving_keeps_the_previous_checkpoint_whole(reference, tmp_path, monkeypatch):
    faults = ("kill_in_save", "kill_before_rename")  # both at once: two processes, one waits less
    procs = {}
    for fault in faults:
        (tmp_path / fault).mkdir()
        procs[fault] = start_cli(ARGS, tmp_path / fault, fault=f"{fault}:1")  # while saving epoch 1's checkpoint
    for fault, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, f"{fault}: {err[-2000:]}"

    for fault in faults:
        root = tmp_path / fault
        run_dir = only_run(root)
        ckpt_dir = run_dir / "checkpoints"
        kept = checkpoint(run_dir)  # loads: whole
        assert kept["epoch"] == 0 and kept["global_step"] == STEPS_PER_EPOCH, fault
        partial = [p for p in ckpt_dir.iterdir() if p.name != "last.ckpt"]
        assert [p.name.startswith(".last.ckpt.tmp") for p in partial] == [True], fault  # beside it, never renamed
        size = (ckpt_dir / "last.ckpt").stat().st_size
        if fault == "kill_in_save":  # half of epoch 1's bytes
            assert 0 < partial[0].stat().st_size < size, "the fault did not fire while the checkpoint was written"
        else:  # epoch 1's whole checkpoint under its temporary name: not last.ckpt, so never resumed from
            assert partial[0].stat().st_size == size
        assert not [p for p in root.iterdir() if p.name.startswith("tmp")], fault  # nothing stranded in $TMPDIR

        with monkeypatch.context() as mp:
            steps = StepFault(-1, None).install(mp)  # counts the steps the rerun trains
            code, _, err = cli(ARGS, root)
        assert code == 0, err
        assert json.loads((run_dir / "summary.json").read_text())["resumed_from"].endswith("last.ckpt")
        assert steps.calls == {5: STEPS_PER_EPOCH * (EPOCHS - 1)}, fault  # from the kept checkpoint, not the temp
        assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"], fault  # the partial copy is gone
        assert metrics(run_dir) == reference["metrics"], fault
        assert same_state(checkpoint(run_dir), reference["checkpoint"]), fault
