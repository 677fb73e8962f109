"""`alexlab-train` end to end: the run folder, determinism, skip-if-complete, divergence.
(Kill -9 and exact resume, damaged checkpoints and other faults: tests/reliability/.)"""
import csv
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from alexlab.config import validate
from alexlab.errors import ConfigError
from alexlab.train import build
from conftest import REPO, TINY, compose_cfg, run_cli

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
    proc = run_cli(TINY + ["model.activation=tanh", "model.norm=none", "seed=3"], tmp_path, check=True)
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
    assert "activation: tanh" in resolved and "norm: none" in resolved and "${" not in resolved
    assert "test/acc" in proc.stdout  # the one-screen summary
    assert re.search(r"alexlab: epoch 1 of 2 took \d+ s; about \d+ s to go \(ends about \d\d:\d\d\)", proc.stdout)
    assert not list(run_dir.glob("*.log")), "no (empty) log file beside the run's own records"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1


def test_an_extra_callback_is_built_from_its_target_and_a_long_folder_name_is_shortened_stably(tmp_path):
    from alexlab.config import job_name

    from pytorch_lightning.callbacks import Timer

    from alexlab.callbacks import EpochRecorder
    from alexlab.train import make_trainer

    extra = ["+callbacks.timer._target_=pytorch_lightning.callbacks.Timer", "+callbacks.timer.duration=00:01:00:00",
             "model.lrn_alpha=0.0001", "model.lrn_beta=0.75", "seed=3"]
    trainer = make_trainer(compose_cfg(TINY + extra, tmp_path), tmp_path, EpochRecorder(tmp_path), [])
    (timer,) = [c for c in trainer.callbacks if isinstance(c, Timer)]
    assert timer._duration == 3600  # built from its _target_ with its argument
    assert len(",".join(sorted(TINY + extra)).encode()) > 255  # longer than a file name may be
    run_cli(TINY + extra, tmp_path, check=True)
    run_dir = only_run(tmp_path)
    assert "pytorch_lightning.callbacks.Timer" in (run_dir / "config.yaml").read_text()
    # the name keeps whole overrides and a hash of all of them
    assert len(run_dir.name.encode()) <= 255 and re.fullmatch(r".*,[^,~]+~[0-9a-f]{12}", run_dir.name)
    names = {job_name(",".join(f"k{i}=v{i}" for i in range(n))) for n in (60, 61)}
    assert len(names) == 2 and all(len(n.encode()) <= 255 for n in names)


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


def test_how_often_the_test_set_is_evaluated_changes_no_training_step(tmp_path):
    """Evaluating test (and val) every epoch or only at the last leaves the trained run bit-identical,
    with dropout and augmentation drawing random numbers: the demo evaluates its test set once."""
    rows = {}
    for every in (1, 3):
        (tmp_path / str(every)).mkdir()
        run_cli(TINY + ["trainer.max_epochs=3", f"eval.every_n_epochs={every}", "data.augment=crop_flip_pca"],
                tmp_path / str(every), check=True)
        rows[every] = metrics(only_run(tmp_path / str(every)))
    assert [r["test/acc"] != "" for r in rows[3]] == [False, False, True]

    def trained(run):  # every column but what evaluating val and test writes
        return [{k: v for k, v in r.items() if not k.startswith(("test/", "val/", "gap"))} for r in run]

    assert trained(rows[1]) == trained(rows[3])
    assert rows[1][-1] == rows[3][-1]  # and the last epoch's test metrics too


def test_the_plateau_schedule_watches_the_validation_split_never_the_test_set(tmp_path):
    cfg = compose_cfg(TINY + ["optim.schedule=plateau"], tmp_path)
    validate(cfg)
    _, _, module = build(cfg)
    scheduler = module.configure_optimizers()["lr_scheduler"]
    assert type(scheduler["scheduler"]).__name__ == "ReduceLROnPlateau" and scheduler["monitor"] == "val/acc"


def test_the_plateau_schedule_without_a_validation_split_is_one_line_naming_data_val_size(tmp_path):
    cfg = compose_cfg(TINY + ["optim.schedule=plateau", "data.val_size=0"], tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert message.startswith("optim.schedule=plateau needs a validation split") and "data.val_size" in message
    assert "\n" not in message
    _, _, module = build(cfg)  # built without validate(): the module refuses too, never falling back to test
    with pytest.raises(ConfigError, match="data.val_size"):
        module.configure_optimizers()


def interpolated_epochs_to_error(epochs, accuracies, threshold):
    """Independent reading: epochs of training (row e = e + 1 epochs) at which the error curve,
    linear between rows, first falls below the threshold."""
    x, err = np.asarray(epochs, float) + 1, 1 - np.asarray(accuracies, float)
    below = np.flatnonzero(err < threshold)
    if not len(below):
        return None
    i = below[0]
    return float(x[0]) if i == 0 else float(np.interp(threshold, [err[i], err[i - 1]], [x[i], x[i - 1]]))


def test_train_clean_is_evaluated_every_epoch_and_read_for_the_epochs_to_train_error(tmp_path):
    # convnet4 without augmentation learns the synthetic classes within ~2 epochs; evaluation every 2;
    # the default schedule (plateau, on val/acc) and threshold (25% training error)
    run_dir = tmp_path / "run"  # the overrides would make too long a folder name
    args = ["data=synthetic", "data.num_train=256", "data.num_test=48", "data.batch_size=32", "data.augment=none",
            "model=convnet4", "model.width=0.5", "model.init=kaiming", "optim.lr=0.003", "eval.train_clean_size=64",
            "eval.every_n_epochs=2", "trainer.max_epochs=4", "trainer.progress_bar=false", "trainer.threads=1",
            "trainer.accelerator=cpu", f"hydra.run.dir={run_dir}"]
    run_cli(args, tmp_path, check=True)
    rows = metrics(run_dir)
    assert all(r["train_clean/acc"] and r["train_clean/loss"] and r["train_clean/acc_top5"] for r in rows)
    assert [int(r["epoch"]) for r in rows if r["test/acc"]] == [1, 3]  # evaluation epochs only (and the last)
    assert [int(r["epoch"]) for r in rows if r["val/acc"]] == [1, 3]
    assert all(r["gap"] for r in rows if r["test/acc"]) and not any(r["gap"] for r in rows if not r["test/acc"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_classes"] == 10 and summary["num_val"] == 26 and summary["num_train"] == 230
    first_error = 1 - float(rows[0]["train_clean/acc"])
    assert first_error > 0.25, "the run learned within one epoch: nothing to interpolate"
    expected = interpolated_epochs_to_error([r["epoch"] for r in rows], [r["train_clean/acc"] for r in rows], 0.25)
    assert expected is not None and summary["epochs_to_train_error"] == pytest.approx(expected, abs=1e-12)
    assert summary["epochs_to_train_error"] != round(summary["epochs_to_train_error"])  # a fraction of an epoch


def test_a_plateau_run_killed_after_an_epoch_resumes_to_the_numbers_of_an_unbroken_one(tmp_path):
    # the default schedule (plateau) with patience 0: every evaluation without a better val/acc halves
    # the lr, so a lost scheduler step shows
    changes = ["data.num_train=192", "trainer.max_epochs=4", "optim.patience=0", "optim.gamma=0.5", "seed=5"]
    args = [a for a in TINY if a.split("=")[0] not in {c.split("=")[0] for c in changes}] + changes
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    unbroken.mkdir(), broken.mkdir()
    run_cli(args, unbroken, check=True)
    paths = [f"paths.runs={broken / 'runs'}", f"paths.data={broken / 'data'}"]
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "reliability" / "faults.py"), *args, *paths],
                            cwd=broken, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "ALEXLAB_FAULT": "kill_at_step:14", "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]  # in epoch 2 (6 steps an epoch)
    run_cli(args, broken, check=True)  # the same command resumes from the end of epoch 1
    lrs = [float(r["lr"]) for r in metrics(only_run(unbroken))]
    assert lrs[2] < lrs[1], lrs  # the step the checkpoint of epoch 1 must hold
    assert metrics(only_run(broken)) == metrics(only_run(unbroken))


def test_a_run_folder_from_before_stratified_samples_is_neither_skipped_nor_resumed(tmp_path):
    from omegaconf import OmegaConf

    from alexlab.run_folder import changed_settings

    cfg = compose_cfg(TINY, tmp_path)
    for folder in ("old", "now"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    old = OmegaConf.load(tmp_path / "old" / "config.yaml")
    del old.data["subset_seed"], old.data["val_size"]  # what alexlab wrote before the fixed samples
    (tmp_path / "old" / "config.yaml").write_text(OmegaConf.to_yaml(old))
    assert changed_settings(tmp_path / "old", cfg) == ["data.subset_seed: absent (first-N subsets, plateau on "
                                                       "test/acc) -> 0"]
    assert changed_settings(tmp_path / "now", cfg) == []


def test_under_ddp_train_clean_is_the_one_device_accuracy_of_the_final_weights(tmp_path):
    from alexlab.data.augment import center_crop

    # two CPU processes (gloo); 33 train_clean images: a sampler that evens out the ranks would count one twice
    run_dir = tmp_path / "run"
    args = TINY + ["eval.train_clean_size=33", "trainer.strategy=ddp", "trainer.devices=2", f"hydra.run.dir={run_dir}"]
    run_cli(args, tmp_path, check=True)
    last = metrics(run_dir)[-1]
    dm, net, _ = build(compose_cfg(TINY + ["eval.train_clean_size=33"], tmp_path))
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    net.eval()
    with torch.no_grad():
        views = center_crop(dm.transform.eval_view(dm.clean_x), dm.image_size)
        correct = int((net(views).argmax(1) == dm.clean_y).sum())
    assert correct > 0, "nothing right: a duplicated image would not show"
    assert float(last["train_clean/acc"]) == pytest.approx(correct / 33, abs=1e-6)


def test_the_train_clean_pass_runs_in_eval_mode_under_the_trainers_precision_and_memory_format(tmp_path, monkeypatch):
    from alexlab.module import AlexLabModule
    from alexlab.train import run

    seen = []
    original = AlexLabModule.evaluate_train_clean

    def spy(module):
        def record(net, args):
            seen.append((net.training, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                         args[0].stride(1) == 1))  # NHWC: channels innermost (the centre crop is a strided view)
        handle = module.model.register_forward_pre_hook(record)
        try:
            original(module)
        finally:
            handle.remove()

    monkeypatch.setattr(AlexLabModule, "evaluate_train_clean", spy)
    run(compose_cfg(TINY + ["trainer.precision=bf16-mixed", "model.channels_last=true"], tmp_path))
    assert len(seen) == 2 * 1  # 32 train_clean images, one evaluation batch, each of the 2 epochs
    assert set(seen) == {(False, True, torch.bfloat16, True)}
