"""Every file a run keeps is replaced whole or not at all; a full disk stops the run in one line
with the last whole files in place; a damaged checkpoint is an error, never a silent fresh start."""
import io
import json
import os
import random

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


def zero_64k(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(65536) + data[middle + 65536:]


def flip_100_bits(data: bytes) -> bytes:
    flipped, rng = bytearray(data), random.Random(0)
    for bit in rng.sample(range(len(data) * 8), 100):
        flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def wider_network(data: bytes) -> bytes:
    """A whole Lightning checkpoint of another run: one layer wider than this run's network."""
    ckpt = torch.load(io.BytesIO(data), weights_only=False)
    key = next(k for k, v in ckpt["state_dict"].items() if v.dim() == 4)
    ckpt["state_dict"][key] = torch.zeros(2 * ckpt["state_dict"][key].shape[0], *ckpt["state_dict"][key].shape[1:])
    out = io.BytesIO()
    torch.save(ckpt, out)
    return out.getvalue()


def not_lightning(data: bytes) -> bytes:
    """A valid torch file without a training loop's state."""
    out = io.BytesIO()
    torch.save({"state_dict": {}}, out)
    return out.getvalue()


# kind: (damage, what the line says after the path); a zeroed range or flipped bits load silently as
# other weights without the zip entries' CRC check, and gave a run that "completed" with other numbers
CORRUPTIONS = {
    "zeroed 64 KiB in the middle": (zero_64k, "is corrupt or truncated (ValueError: archive/data/"),
    "100 flipped bits": (flip_100_bits, "is corrupt or truncated ("),
    "truncated": (lambda data: data[:len(data) // 3], "is corrupt or truncated (BadZipFile"),
    "empty": (lambda data: b"", "is corrupt or truncated (BadZipFile"),
    "garbage": (lambda data: os.urandom(4096), "is corrupt or truncated (BadZipFile"),
    "not Lightning's": (not_lightning, "is corrupt or truncated (ValueError: not a Lightning checkpoint)"),
    "another run's (a wider network)": (wider_network, "holds another network (model."),
}


def test_a_damaged_checkpoint_at_resume_names_the_file_and_the_flag_and_never_starts_afresh(tmp_path, monkeypatch):
    with monkeypatch.context() as mp:  # a run that stopped in epoch 1: last.ckpt holds epoch 0
        StepFault(STEPS_PER_EPOCH, raise_(AlexlabError("injected crash"))).install(mp)
        code, _, err = cli(TINY, tmp_path)
    assert code == 2 and "injected crash" in err
    run_dir = only_run(tmp_path)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    whole = ckpt.read_bytes()
    before = run_files(run_dir)

    for kind, (corrupt, says) in CORRUPTIONS.items():
        ckpt.write_bytes(corrupt(whole))
        damaged = ckpt.read_bytes()
        assert damaged != whole, kind
        with monkeypatch.context() as mp:
            steps = StepFault(-1, None).install(mp)
            code, out, err = cli(TINY, tmp_path)
        assert code == 2, (kind, out[-2000:])
        line = one_error_line(err)
        assert line.startswith(f"alexlab: error: checkpoint {ckpt} {says}"), (kind, line)
        assert line.endswith("; rerun with trainer.fresh=true to start this run again"), (kind, line)
        assert steps.calls == {}, kind  # refused before anything trained
        assert ckpt.read_bytes() == damaged, kind  # left for inspection, not overwritten
        assert run_files(run_dir) == before, kind
        assert finished_markers(tmp_path) == [], kind

    code, _, err = cli([*TINY, "trainer.fresh=true"], tmp_path)  # the flag the message names
    assert code == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] is None and summary["epochs"] == 2


def run_files(run_dir) -> dict:
    """The run's files and their mtimes (not .lock: each start writes its pid there)."""
    return {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}


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


def test_a_run_start_removes_the_temporary_files_of_writes_a_kill_cut_short(tmp_path, monkeypatch):
    """A kill between writing a file's temporary copy and renaming it leaves `.<name>.tmp<pid>`
    beside it (never in $TMPDIR); the next start of the run removes every such leftover."""
    with monkeypatch.context() as mp:
        StepFault(STEPS_PER_EPOCH, raise_(AlexlabError("injected crash"))).install(mp)
        code, _, err = cli(TINY, tmp_path)
    assert code == 2 and "injected crash" in err
    run_dir = only_run(tmp_path)
    planted = [run_dir / f".{name}.tmp999999" for name in ("metrics.csv", "summary.json", "COMPLETED", "config.yaml")]
    planted.append(run_dir / "checkpoints" / ".last.ckpt.tmp999999")
    for path in planted:
        path.write_bytes(b"half a file")

    code, _, err = cli(TINY, tmp_path)
    assert code == 0, err
    assert leftovers(run_dir) == [] and (run_dir / "COMPLETED").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from"].endswith("last.ckpt")


def test_hydra_s_records_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """.hydra/{config,hydra,overrides}.yaml go through alexlab's atomic writer: a full disk while
    Hydra saves them is one line naming the file, and the previous record stays whole."""
    code, _, err = cli(TINY, tmp_path)
    assert code == 0, err
    record = only_run(tmp_path) / ".hydra"
    before = {p.name: p.read_bytes() for p in record.iterdir()}
    assert sorted(before) == ["config.yaml", "hydra.yaml", "overrides.yaml"]

    with monkeypatch.context() as mp:
        failed = disk_full("hydra.yaml", mp)
        code, _, err = cli(TINY, tmp_path)
    assert failed and code == 2
    line = one_error_line(err)
    assert line.startswith(f"alexlab: error: cannot write {record / 'hydra.yaml'} (No space left on device)")
    assert {p.name: p.read_bytes() for p in record.iterdir()} == before  # whole; no temporary file left


def test_a_damaged_checkpoint_fails_its_sweep_trial_every_time_never_diverged_or_skipped(tmp_path, monkeypatch):
    sweep = tiny("seed=0,1")
    with monkeypatch.context() as mp:  # seed 1 stops in epoch 1: its last.ckpt holds epoch 0
        StepFault(STEPS_PER_EPOCH, raise_(AlexlabError("injected crash")), seed=1).install(mp)
        code, _, err = cli(sweep, tmp_path, multirun=True)
    assert code == 2
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    (ckpt,) = [p for p in sweep_dir.rglob("last.ckpt") if "seed=1" in str(p)]
    ckpt.write_bytes(flip_100_bits(ckpt.read_bytes()))

    for attempt in range(2):  # a rerun tries it again: failed is not a result, unlike diverged
        code, out, err = cli(sweep, tmp_path, multirun=True)
        assert code == 2, (attempt, err[-2000:])
        trials = json.loads((sweep_dir / "sweep_ledger.json").read_text())["trials"]
        entry = next(t for k, t in trials.items() if "seed=1" in k)
        assert entry["state"] == "failed" and not entry["skipped"], (attempt, entry)
        assert entry["error"].startswith(f"checkpoint {ckpt} is corrupt or truncated"), (attempt, entry)
        assert entry["error"].endswith("rerun with trainer.fresh=true to start this run again")
        report = json.loads((sweep_dir / "sweep_summary.json").read_text())
        assert sorted(r["outcome"] for r in report["trials"]) == ["failed", "skipped"], attempt
