"""`alexlab-train` end to end: the run folder, determinism, skip-if-complete, divergence.
(Kill -9 and exact resume, damaged checkpoints and other faults: tests/reliability/.)"""
import csv
import json
import re

import pytest
import torch

from conftest import TINY, run_cli

pytestmark = pytest.mark.slow
TIMING = ("epoch_time_s", "images_per_s")


def metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def only_run(tmp_path):
    dirs = [p.parent for p in (tmp_path / "runs").rglob("summary.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_cli_run_writes_the_whole_run_folder(tmp_path):
    proc = run_cli(TINY + ["model.activation=tanh", "model.lrn=false", "seed=3"], tmp_path, check=True)
    run_dir = only_run(tmp_path)
    assert run_dir.parent.name == "default" and "model.activation=tanh" in run_dir.name and "seed=3" in run_dir.name
    for name in ("config.yaml", "metrics.csv", "summary.json", "checkpoints/last.ckpt", "COMPLETED"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["seed"] == 3 and summary["epochs"] == 2
    assert summary["num_parameters"] > 0 and summary["versions"]["torch"] and "wall_time_s" in summary
    assert set(summary["final"]) >= {"train/loss", "train/acc", "train_clean/acc", "test/loss", "test/acc",
                                     "test/acc_top5", "gap", "lr", "epoch_time_s", "images_per_s"}
    rows = metrics(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    last = rows[-1]
    assert float(last["gap"]) == pytest.approx(float(last["train_clean/acc"]) - float(last["test/acc"]))
    resolved = (run_dir / "config.yaml").read_text()
    assert "activation: tanh" in resolved and "lrn: false" in resolved and "${" not in resolved
    assert "test/acc" in proc.stdout  # the one-screen summary
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1


def test_warmup_ramps_the_lr_by_step_and_the_lr_column_shows_each_epochs_first_step(tmp_path):
    run_cli(TINY + ["optim.warmup_epochs=1", "optim.schedule=none"], tmp_path, check=True)
    lrs = [float(r["lr"]) for r in metrics(only_run(tmp_path))]
    steps = 96 // 32  # TINY: 3 steps an epoch, optim.lr=0.02; warm-up from lr/10, linear in the step
    assert lrs == pytest.approx([0.02 * (0.1 + 0.9 * 1 / steps), 0.02])


def test_same_seed_same_metrics_and_rerun_skips(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    run_cli(TINY + ["seed=7"], a, check=True)
    run_cli(TINY + ["seed=7"], b, check=True)
    assert metrics(only_run(a)) == metrics(only_run(b))
    other = tmp_path / "c"
    other.mkdir()
    run_cli(TINY + ["seed=8"], other, check=True)
    assert metrics(only_run(other)) != metrics(only_run(a))
    before = (only_run(a) / "summary.json").read_text()
    again = run_cli(TINY + ["seed=7"], a, check=True)
    assert "already complete; skipping" in again.stdout
    assert (only_run(a) / "summary.json").read_text() == before


def test_divergence_is_reported_and_recorded(tmp_path):
    proc = run_cli(TINY + ["optim.lr=50"], tmp_path)
    assert proc.returncode == 2
    assert re.search(r"alexlab: error: loss is (nan|inf) at epoch \d+, step \d+", proc.stderr), proc.stderr
    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "diverged" and not (only_run(tmp_path) / "COMPLETED").exists()


def test_tensorboard_logger_beside_csv(tmp_path):
    run_cli(TINY + ["trainer.max_epochs=1", "logger=tensorboard"], tmp_path, check=True)
    run_dir = only_run(tmp_path)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*")) and (run_dir / "metrics.csv").is_file()


def test_last_epoch_is_always_evaluated(tmp_path):
    run_cli(TINY + ["trainer.max_epochs=3", "eval.every_n_epochs=2"], tmp_path, check=True)
    evaluated = [int(r["epoch"]) for r in metrics(only_run(tmp_path)) if r["test/acc"]]
    assert evaluated == [1, 2]
