"""Beyond one process, for real: a two-process DDP run on CPU (gloo) through the command line, and a
SLURM-style job with two tasks (submitit's local executor): one run folder, written by rank 0
alone; metrics over the whole data, not one rank's share; a kill -9 of every rank, then the same
command resumes."""
import json
import os
import signal
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

from alexlab.data.datamodules import EpochShuffle
from faults import cli, metrics, only_run, start_cli, tiny

NUM_TEST, NUM_TRAIN = 45, 86  # odd test set: a padded shard would count one image twice; 96 - 10 validation
DDP = tiny("trainer.strategy=ddp", "trainer.devices=2", f"data.num_test={NUM_TEST}",
           "+callbacks.shards._target_=probes.ShardRecorder")
STEPS_PER_EPOCH = 2  # 43 images per rank, 32 per batch


def evaluate(run_dir: Path) -> float:
    """test/acc of the run's last checkpoint, recomputed in this process on one device."""
    from alexlab.train import build

    cfg = OmegaConf.load(run_dir / "config.yaml")
    dm, _, module = build(cfg)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    test = module.validation_names.index("test")
    with torch.no_grad():
        for i, (x, y) in enumerate(dm.val_dataloader()[test]):
            module.validation_step((module.transform.eval_view(x), y), i, test)
    return float(module.eval_metrics["test"].compute()["acc"])


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_a_two_process_ddp_run_on_cpu_writes_one_folder_gathers_metrics_and_resumes_after_a_kill_9(tmp_path):
    first = start_cli(DDP, tmp_path, fault=f"killpg_at_step:{STEPS_PER_EPOCH + 1}")  # epoch 1, every rank
    out, err = first.communicate(timeout=300)
    assert first.returncode == -signal.SIGKILL, err[-3000:]
    run_dir = only_run(tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    assert [r["epoch"] for r in metrics(run_dir)] == ["0"]

    proc = start_cli(DDP, tmp_path)  # the same command
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"].endswith("last.ckpt")
    rows = metrics(run_dir)
    assert [r["epoch"] for r in rows] == ["0", "1"]  # each epoch once, across the kill

    # one run folder, nothing per rank (Lightning reruns the command for rank 1 as train_ddp_process_1)
    assert files_under(tmp_path / "runs") == sorted(
        str((run_dir / f).relative_to(tmp_path / "runs")) for f in (
            ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", ".lock", "COMPLETED",
            "checkpoints/last.ckpt", "config.yaml", "metrics.csv", "summary.json"))
    assert not list(tmp_path.glob("*.log")) and "train_ddp_process" not in "".join(files_under(tmp_path))

    # metrics over the whole data: every test image once (45, not 2 x 22 or 2 x 23), every training image
    for row in rows:
        assert float(row["test/acc"]) * NUM_TEST == pytest.approx(round(float(row["test/acc"]) * NUM_TEST), abs=1e-4)
        assert float(row["train/acc"]) * NUM_TRAIN == pytest.approx(round(float(row["train/acc"]) * NUM_TRAIN),
                                                                    abs=1e-4)
    assert float(rows[-1]["test/acc"]) == evaluate(run_dir)

    # each rank trained its own shard, a function of (seed, epoch) alone: disjoint, covering, and the
    # epoch replayed after the kill (epoch 1, recorded again by the rerun) has the shards it would have had
    for epoch in range(2):
        shards = [json.loads((tmp_path / f"shard-{rank}-{epoch}.json").read_text()) for rank in (0, 1)]
        assert sorted(shards[0] + shards[1]) == list(range(NUM_TRAIN)), epoch
        assert shards == [shard_of(rank, epoch) for rank in (0, 1)], epoch
    assert shard_of(0, 0) != shard_of(0, 1)  # reshuffled every epoch


def shard_of(rank: int, epoch: int, seed: int = 0) -> list[int]:
    """What Lightning makes of EpochShuffle on 2 ranks: its DistributedSamplerWrapper, shuffling with seed."""
    sampler = DistributedSamplerWrapper(EpochShuffle(NUM_TRAIN, seed), num_replicas=2, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


WRITE_RECORDER = '''
    """Test-only: every file this process opens for writing under $ALEXLAB_WRITES_UNDER is listed in
    $ALEXLAB_WRITES_DIR/<pid>-rank<SUBMITIT_LOCAL_GLOBALID>.txt (an audit hook sees every open)."""
    import os, sys
    under, out = os.environ.get("ALEXLAB_WRITES_UNDER"), os.environ.get("ALEXLAB_WRITES_DIR")
    rank = os.environ.get("SUBMITIT_LOCAL_GLOBALID")
    if under and out and rank is not None:
        log, busy = os.path.join(out, f"{os.getpid()}-rank{rank}.txt"), [False]

        def hook(event, args):
            if event != "open" or busy[0] or not isinstance(args[0], str) or not args[0].startswith(under):
                return
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & (os.O_WRONLY | os.O_RDWR):
                busy[0] = True
                try:
                    with open(log, "a") as f:
                        f.write(args[0] + "\\n")
                finally:
                    busy[0] = False

        sys.addaudithook(hook)
'''


@pytest.mark.slow
def test_under_slurm_with_two_tasks_only_rank_0_writes_the_ledger_and_the_run_folder(tmp_path, monkeypatch):
    """launcher=slurm with tasks_per_node=2 runs the trial in both tasks; submitit's local executor
    starts them as SLURM would (SUBMITIT_LOCAL_GLOBALID for SLURM_PROCID): rank 1 trains, writes nothing.
    The tasks meet at the start of training, as the ranks of one DDP job do (here each task trains
    alone): a rank 1 that started after rank 0 had finished would, rightly, find the run complete
    and skip it, and so not show what it writes while it trains."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(WRITE_RECORDER))
    writes = tmp_path / "writes"
    writes.mkdir()
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    probes = Path(__file__).parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), str(probes), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("ALEXLAB_WRITES_UNDER", str(sweep_dir))
    monkeypatch.setenv("ALEXLAB_WRITES_DIR", str(writes))
    monkeypatch.setenv("ALEXLAB_FAULT_DIR", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = tiny("seed=0", "launcher.name=slurm", "hydra/launcher=alexlab_submitit_local",
                "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=10",
                "+callbacks.shards._target_=probes.ShardRecorder",
                "+callbacks.meet._target_=probes.Rendezvous", "+callbacks.meet.runs=2")
    code, out, err = cli(args, tmp_path, multirun=True)
    assert code == 0, err[-3000:]

    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [  # both tasks trained the trial's two epochs ...
        "shard-0-0.json", "shard-0-1.json", "shard-1-0.json", "shard-1-1.json"]
    assert sorted(p.name for p in tmp_path.glob("met-*")) == ["met-task-0", "met-task-1"]  # ... at the same time
    logs = {p.name.split("-rank")[1].removesuffix(".txt"): [w for w in p.read_text().split()
                                                           if not w.startswith(str(sweep_dir / ".submitit"))]
            for p in writes.iterdir()}  # (.submitit/ is submitit's: each task leaves its result there)
    assert logs.get("1", []) == []  # ... and rank 1 opened no file of alexlab's under the sweep folder for writing
    (run_dir,) = [p.parent for p in sweep_dir.rglob("COMPLETED")]
    written = logs["0"]
    assert any(w.startswith(str(sweep_dir / ".sweep_ledger.json.tmp")) for w in written)
    assert any(w.startswith(str(run_dir / ".metrics.csv.tmp")) for w in written)
    ledger = json.loads((sweep_dir / "sweep_ledger.json").read_text())
    (entry,) = ledger["trials"].values()
    assert entry["state"] == "completed" and entry["attempts"] == 1
    assert [r["epoch"] for r in metrics(run_dir)] == ["0", "1"]
