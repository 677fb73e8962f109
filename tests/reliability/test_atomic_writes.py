"""Every file a run keeps is replaced whole or not at all; a full disk stops the run in one line
with the last whole files in place; a damaged checkpoint is an error, never a silent fresh start."""
import json
import os

import pytest
import torch

from alexlab.errors import AlexlabError
from conftest import TINY
from faults import (StepFault, checkpoint, cli, disk_full, finished_markers, metrics, one_error_line, only_run, raise_,
                    same_state, tiny)

STEPS_PER_EPOCH = 3  # 96 images / 32 per batch, 2 epochs (TINY)


def leftovers(run_dir):
    return [p.name for p in run_dir.rglob(".*tmp*")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    code, _, err = cli(TINY, root)
    assert code == 0, err
    return {"metrics": metrics(only_run(root)), "checkpoint": checkpoint(only_run(root))}


@pytest.mark.parametrize("target,after", [("last.ckpt", 1), ("metrics.csv", 1), ("summary.json", 1)])
def test_disk_full_while_saving_stops_in_one_line_and_keeps_the_last_whole_files(target, after, reference,
                                                                                 tmp_path, monkeypatch):
    with monkeypatch.context() as mp:
        failed = disk_full(target, mp, after=after)  # epoch 1's checkpoint / row, or the final summary
        code, _, err = cli(TINY, tmp_path)
    assert failed and code == 2
    run_dir = only_run(tmp_path)
    line = one_error_line(err)
    assert str(run_dir / ("checkpoints" if target == "last.ckpt" else "") / target) in line
    assert "No space left on device" in line and "free disk space" in line
    assert leftovers(run_dir) == []  # the half-written temporary file was removed
    assert checkpoint(run_dir)["epoch"] == (1 if target == "summary.json" else 0)  # whole and loadable
    rows = 1 if target == "metrics.csv" else 2  # a row is written before its checkpoint (replaced on resume)
    assert metrics(run_dir) == reference["metrics"][:rows]
    status = json.loads((run_dir / "summary.json").read_text())["status"]
    assert status == ("running" if target == "summary.json" else "failed") and finished_markers(tmp_path) == []

    code, _, err = cli(TINY, tmp_path)  # space again: the same command finishes the run, nothing lost
    assert code == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] and (run_dir / "COMPLETED").is_file()
    assert metrics(run_dir) == reference["metrics"] and same_state(checkpoint(run_dir), reference["checkpoint"])


CORRUPTIONS = {
    "truncated": lambda data: data[:len(data) // 3],
    "empty": lambda data: b"",
    "garbage": lambda data: os.urandom(4096),
    "not_lightning": None,  # a valid torch file without a training loop's state
}


def test_a_damaged_checkpoint_at_resume_names_the_file_and_the_flag_and_never_starts_afresh(tmp_path, monkeypatch):
    with monkeypatch.context() as mp:  # a run that stopped in epoch 1: last.ckpt holds epoch 0
        StepFault(STEPS_PER_EPOCH, raise_(AlexlabError("injected crash"))).install(mp)
        code, _, err = cli(TINY, tmp_path)
    assert code == 2 and "injected crash" in err
    run_dir = only_run(tmp_path)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    whole = ckpt.read_bytes()
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file()}

    for kind, corrupt in CORRUPTIONS.items():
        if corrupt is None:
            torch.save({"state_dict": {}}, ckpt)
        else:
            ckpt.write_bytes(corrupt(whole))
        damaged = ckpt.read_bytes()
        code, out, err = cli(TINY, tmp_path)
        assert code == 2, (kind, out[-2000:])
        line = one_error_line(err)
        assert line.startswith(f"alexlab: error: checkpoint {ckpt} is corrupt or truncated"), (kind, line)
        assert "trainer.fresh=true" in line, kind
        assert ckpt.read_bytes() == damaged, kind  # left for inspection, not overwritten
        assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file()} == before, kind
        assert finished_markers(tmp_path) == [], kind

    code, _, err = cli([*TINY, "trainer.fresh=true"], tmp_path)  # the flag the message names
    assert code == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] is None and summary["epochs"] == 2


def test_a_checkpoint_written_in_the_background_holds_the_state_of_its_epoch(tmp_path, monkeypatch):
    """save_checkpoint returns before the file is written; training changing the weights and the
    momentum in place right after must not reach the file, and a later save replaces it whole."""
    import threading

    from pytorch_lightning.plugins import TorchCheckpointIO

    from alexlab.callbacks import BackgroundCheckpointIO

    gate, write = threading.Event(), TorchCheckpointIO.save_checkpoint
    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint",  # the writer starts only after training moved on
                        lambda self, *args, **kwargs: gate.wait(30) and write(self, *args, **kwargs))

    net = torch.nn.Linear(1000, 1000)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 1000)).sum().backward()
    opt.step()  # momentum buffers exist
    before = {k: v.clone() for k, v in net.state_dict().items()}
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in net.parameters()]
    io_, path = BackgroundCheckpointIO(), tmp_path / "last.ckpt"
    io_.save_checkpoint({"state_dict": net.state_dict(), "optimizer_states": [opt.state_dict()], "epoch": 0}, path)
    for _ in range(3):  # the next epoch trains
        opt.step()
        with torch.no_grad():
            net.weight.add_(1)
    gate.set()
    io_.wait()
    saved = torch.load(path)
    assert saved["epoch"] == 0 and all(torch.equal(saved["state_dict"][k], v) for k, v in before.items())
    assert all(torch.equal(saved["optimizer_states"][0]["state"][i]["momentum_buffer"], m)
               for i, m in enumerate(momentum))
    assert hasattr(saved["state_dict"], "_metadata")  # load_state_dict's version information kept
    io_.save_checkpoint({"state_dict": net.state_dict(), "epoch": 1}, path)
    io_.teardown()
    assert torch.load(path)["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_disk_full_in_a_middle_epoch_stops_at_the_next_save_with_the_files_of_a_whole_epoch(tmp_path, monkeypatch):
    """Epoch 1's background write fails; the run learns of it at epoch 2's save and stops there in one
    line. last.ckpt still holds epoch 0, so the rerun replays epochs 1 and 2 and ends as an unbroken run."""
    three = tiny("trainer.max_epochs=3")
    code, _, err = cli(three, tmp_path / "unbroken")
    assert code == 0, err
    unbroken = only_run(tmp_path / "unbroken")
    with monkeypatch.context() as mp:
        failed = disk_full("last.ckpt", mp, after=1)
        code, _, err = cli(three, tmp_path / "full")
    run_dir = only_run(tmp_path / "full")
    assert failed and code == 2
    line = one_error_line(err)
    assert str(run_dir / "checkpoints" / "last.ckpt") in line and "No space left on device" in line
    assert checkpoint(run_dir)["epoch"] == 0 and leftovers(run_dir) == []
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"

    code, _, err = cli(three, tmp_path / "full")
    assert code == 0, err
    assert metrics(run_dir) == metrics(unbroken) and same_state(checkpoint(run_dir), checkpoint(unbroken))
