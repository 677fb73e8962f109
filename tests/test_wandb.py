"""logger=wandb without a network: offline runs read back from the .wandb transaction log they wrote."""
import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import REPO, TINY, compose_cfg, run_cli

FAKE_KEY = "deadbeef" * 5  # planted in WANDB_API_KEY: must never reach a file
WANDB = ["logger=wandb", "logger.wandb.mode=offline"]


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    """W&B offline, its caches in tmp_path, no credentials but a planted fake key, no agent variables."""
    home = tmp_path / "wandb_home"
    for name in ("WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RESUME",
                 "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                      ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(name, str(home / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    return tmp_path


def read_wandb_log(path: Path) -> list:
    """Records of a .wandb file: W&B's header, then LevelDB-style 32 KiB blocks of chunked protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, block, chunk, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def offline_runs(run_dir: Path) -> list[list]:
    logs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    return [read_wandb_log(p) for p in logs]


def of_type(records, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def history(records) -> list[dict]:
    return [{i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in h.item}
            for h in of_type(records, "history")]


def final_summary(records) -> dict:
    values = {}
    for s in of_type(records, "summary"):
        for u in s.update:
            values[u.nested_key[0] if u.nested_key else u.key] = json.loads(u.value_json)
    return values


def tiny_cfg(tmp_path: Path, *overrides, job="ablation=tanh,model.norm=none"):
    run_dir = tmp_path / "runs" / "default" / job
    return compose_cfg(TINY + WANDB + list(overrides) + [f"paths.run_dir='{run_dir}'", f"paths.data={tmp_path / 'data'}"])


def train(cfg):
    from alexlab.train import run
    return run(cfg)


def test_offline_run_records_config_group_job_type_tags_curves_and_no_key(wandb_env, capsys):
    tmp_path = wandb_env
    cfg = tiny_cfg(tmp_path, "ablation=tanh", "model.norm=none", "logger.wandb.log_checkpoints=true",
                   "logger.wandb.tags=[mine]")
    summary = train(cfg)
    run_dir = Path(summary["run_dir"])
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if "W&B run saved offline" in line]
    assert len(lines) == 1 and "wandb sync " + str(run_dir / "wandb" / "offline-run-") in lines[0]
    assert "warning" not in out.err

    runs = offline_runs(run_dir)
    assert len(runs) == 1
    records = runs[0]
    (meta,) = of_type(records, "run")
    assert meta.run_id == (run_dir / "wandb_id").read_text().strip()
    assert (meta.project, meta.display_name, meta.run_group, meta.job_type) == ("alexlab", run_dir.name, "default", "tanh")
    assert {"activation:tanh", "norm:none", "pooling:overlapping", "dropout:0.5", "augment:crop_flip_pca",
            "seed:0", "mine"} <= set(meta.tags)
    config = {i.key: json.loads(i.value_json) for i in meta.config.update}
    assert config["model"]["activation"] == "tanh" and config["model"]["norm"] == "none"
    assert config["ablation_name"] == "tanh" and config["logger"]["wandb"]["mode"] == "offline"
    assert config["num_parameters"] == summary["num_parameters"] > 0
    assert (config["num_train"], config["git_sha"]) == (summary["num_train"], summary["git_sha"])
    assert config["run_dir"] == str(run_dir)

    steps = {(m.glob_name or m.name): m.step_metric for m in of_type(records, "metric")}
    for curve in ("train/*", "train_clean/*", "test/*", "gap", "lr", "epoch_time_s", "images_per_s"):
        assert steps[curve] == "epoch", curve
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = history(records)
    assert [h["epoch"] for h in logged] == [0, 1]
    assert [h["test/acc"] for h in logged] == pytest.approx([float(r["test/acc"]) for r in rows])
    final = final_summary(records)
    assert final["status"] == "completed" and final["best_test_acc"] == summary["best_test_acc"]
    assert final["gap"] == pytest.approx(summary["final"]["gap"]) and final["epoch"] == 1
    artifacts = of_type(records, "artifact")
    assert [(a.name, a.type) for a in artifacts] == [(f"model-{meta.run_id}", "model")]
    assert [e.exit_code for e in of_type(records, "exit")] == [0]

    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert leaked == []


def test_resume_continues_the_same_wandb_run_and_fresh_starts_a_new_one(wandb_env):
    tmp_path = wandb_env
    first = train(tiny_cfg(tmp_path, "trainer.max_epochs=1"))
    run_dir = Path(first["run_dir"])
    run_id = (run_dir / "wandb_id").read_text().strip()
    (run_dir / "COMPLETED").unlink()  # as if killed after epoch 0's checkpoint

    resumed = train(tiny_cfg(tmp_path, "trainer.max_epochs=2"))
    assert resumed["resumed_from"] and resumed["status"] == "completed"
    runs = offline_runs(run_dir)
    assert [of_type(r, "run")[0].run_id for r in runs] == [run_id, run_id]
    assert [h["epoch"] for h in history(runs[1])] == [1]

    train(tiny_cfg(tmp_path, "trainer.max_epochs=1", "trainer.fresh=true"))
    new_id = (run_dir / "wandb_id").read_text().strip()
    # folder names sort by second, then by id: two runs in one second need not sort by time
    ids = sorted(of_type(r, "run")[0].run_id for r in offline_runs(run_dir))
    assert new_id != run_id and ids == sorted([run_id, run_id, new_id])


def test_wandb_init_failure_still_trains_with_csv(wandb_env, monkeypatch, capsys):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("W&B quota exceeded")

    monkeypatch.setattr(wandb, "init", broken_init)
    summary = train(tiny_cfg(wandb_env, "trainer.max_epochs=1"))
    run_dir = Path(summary["run_dir"])
    assert summary["status"] == "completed" and (run_dir / "COMPLETED").is_file()
    with open(run_dir / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if "W&B" in line]
    assert len(warnings) == 1 and "quota exceeded" in warnings[0] and "continuing without W&B" in warnings[0]
    assert not (run_dir / "wandb").exists()


def test_unreachable_server_falls_back_to_offline_and_log_failure_warns_once(wandb_env, monkeypatch, capsys, request):
    import socket

    import wandb
    from wandb.sdk.wandb_run import Run

    from alexlab import wandb_logger

    with socket.socket() as s:  # a local port nobody listens on: connection refused, no network used
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    monkeypatch.setattr(wandb_logger, "ONLINE_FAILED", False)
    wandb.teardown()  # W&B reads WANDB_* variables once per process; start over with these, and after
    request.addfinalizer(wandb.teardown)
    run_dir = wandb_env / "run"
    logger = wandb_logger.make_wandb_logger(compose_cfg(TINY + ["logger=wandb", "logger.wandb.mode=online"]), run_dir)
    logger.log_metrics({"epoch": 0, "test/acc": 0.5, "test/acc_10crop": None}, step=0)

    def quota(self, *args, **kwargs):
        raise RuntimeError("quota exceeded")

    monkeypatch.setattr(Run, "log", quota)
    logger.log_metrics({"epoch": 1, "test/acc": 0.6}, step=1)
    logger.log_metrics({"epoch": 2, "test/acc": 0.7}, step=2)
    logger.alexlab_finish({"status": "completed", "final": {"epoch": 2.0, "test/acc": 0.7}})
    err = capsys.readouterr().err
    assert err.count("alexlab: warning: W&B online start failed") == 1 and "logging offline" in err
    assert err.count("alexlab: warning: W&B log failed") == 1 and "quota exceeded" in err
    (records,) = offline_runs(run_dir)
    assert of_type(records, "run")[0].run_id == (run_dir / "wandb_id").read_text().strip()
    assert [{k: v for k, v in h.items() if not k.startswith("_")} for h in history(records)] == [
        {"epoch": 0, "test/acc": 0.5}]
    assert [e.exit_code for e in of_type(records, "exit")] == [1]
    assert not [p for p in wandb_env.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]

    later = wandb_logger.make_wandb_logger(compose_cfg(TINY + ["logger=wandb", "logger.wandb.mode=online"]),
                                           wandb_env / "next")
    assert later.start() is not None and later.mode == "offline"  # no second wait for the timeout
    later.alexlab_finish({"status": "completed"})


def test_mode_auto_is_online_only_with_credentials(monkeypatch, tmp_path):
    from alexlab.wandb_logger import make_wandb_logger, resolve_mode

    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_mode("auto") == "offline"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + FAKE_KEY + "\n")
    assert resolve_mode("auto") == "online"
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_mode("auto") == "online" and resolve_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    assert make_wandb_logger(compose_cfg(["logger=wandb", "logger.wandb.mode=disabled"]), tmp_path) is None


@pytest.mark.slow
def test_wandb_is_imported_only_when_the_wandb_logger_is_used():
    code = ("import sys, alexlab.train, alexlab.callbacks, alexlab.wandb_logger, pytorch_lightning; "
            "sys.exit('wandb' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


@pytest.mark.parametrize("path", sorted((REPO / "sweeps" / "wandb").glob("*.yaml")), ids=lambda p: p.stem)
def test_wandb_sweep_files_run_alexlab_train_with_valid_overrides(path):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from alexlab.config import validate

    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "alexlab-train" and sweep["method"] == "grid"
    command = sweep["command"]
    assert command[:2] == ["${env}", "${program}"] and command[-1] == "${args_no_hyphens}" and "logger=wandb" in command
    fixed = [c for c in command if not c.startswith("${")]
    params = sweep["parameters"]
    levels = {k: (p["values"] if "values" in p else [p["value"]]) for k, p in params.items()}
    # every level of every parameter at least once (the whole grid would compose the same files again)
    for i in range(max(len(v) for v in levels.values())):
        combo = [(k, v[i % len(v)]) for k, v in levels.items()]
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in combo}})["args_no_hyphens"]
        cfg = compose_cfg(fixed + args)  # what the agent's `alexlab-train ...` composes
        validate(cfg)
        assert cfg.logger.wandb.enabled
        assert f"name={cfg.name}" in fixed  # the W&B sweep's runs share one folder and W&B group
        for key, value in combo:
            if key != "experiment":  # a preset: its own test composes it
                assert str(OmegaConf.select(cfg, "ablation_name" if key == "ablation" else key)) == str(value), key


@pytest.mark.slow
def test_multirun_starts_one_wandb_run_per_trial(wandb_env):
    tmp_path = wandb_env
    run_cli(["-m", *TINY, *WANDB, "trainer.max_epochs=1", "sweep_name=wbtest", "seed=0,1"], tmp_path, check=True)
    run_dirs = sorted(p.parent for p in (tmp_path / "multirun" / "wbtest").rglob("summary.json"))
    assert len(run_dirs) == 2 and "seed=0" in run_dirs[0].name and "seed=1" in run_dirs[1].name
    ids = set()
    for run_dir in run_dirs:
        (records,) = offline_runs(run_dir)
        (meta,) = of_type(records, "run")
        assert (meta.run_group, meta.display_name, meta.job_type) == ("wbtest-default", run_dir.name, "paper")
        seed = json.loads((run_dir / "summary.json").read_text())["seed"]
        assert f"seed:{seed}" in meta.tags and len(history(records)) == 1
        assert [e.exit_code for e in of_type(records, "exit")] == [0]
        ids.add(meta.run_id)
    assert len(ids) == 2


@pytest.mark.slow
def test_ctrl_c_still_finishes_the_wandb_run(wandb_env):
    """Ctrl-C at a chosen step (a fault hook announces it in a file; the signal is sent only then).
    Started with SIGINT ignored, as a script's `cmd &` starts it: that is why this test once saw the
    run finish all its epochs and exit 0 (Python keeps an inherited SIG_IGN; alexlab-train restores
    SIGINT's handler)."""
    tmp_path = wandb_env
    args = [*TINY, *WANDB, "trainer.max_epochs=3"]
    cmd = [sys.executable, str(REPO / "tests" / "reliability" / "faults.py"), *args,
           f"paths.runs={tmp_path / 'runs'}", f"paths.data={tmp_path / 'data'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ALEXLAB_FAULT": "wait_for_signal_at_step:4",
           "ALEXLAB_FAULT_DIR": str(tmp_path)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 120
        while proc.poll() is None and not (tmp_path / "at_step").exists() and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    (run_dir,) = [p.parent for p in (tmp_path / "runs").rglob("metrics.csv")]
    (records,) = offline_runs(run_dir)
    assert [e.exit_code for e in of_type(records, "exit")] == [1], err[-2000:]
    assert final_summary(records)["status"] == "interrupted"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
