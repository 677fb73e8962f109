"""Sweeps: every job of every sweep file composes and validates; the GPU pool's assignment rule;
the ledger; real multiruns (a 2-process CPU pool; a failing, a diverging and a killed trial, then
a rerun; out-of-memory retries; DDP refused; an ablation arm that changes nothing refused;
submitit's local executor)."""
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf

from alexlab.config import job_name, validate
from alexlab.errors import ConfigError
from alexlab.run_folder import finished_summary
from alexlab.sweep import DevicePool, Ledger, short_names
from conftest import CONF, REPO, TINY
from hydra_plugins.alexlab_launcher.launcher import prepare_trials

SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
PAPER_SWEEPS = {"one_at_a_time": 21, "factorial": 96, "factorial_half": 32, "relu_vs_tanh": 8, "dropout": 12,
                "pooling": 6, "lrn": 6, "augment": 9, "seeds": 5, "demo": 12,
                "norm": 9, "norm_lr": 18, "norm_dropout": 12, "pool_type": 6, "activation_speed": 18, "fc": 9,
                "conv_depth": 9}
GROUPS = {p.name for p in CONF.iterdir() if p.is_dir()} | {"hydra/launcher"}
SWEEP_TINY = [a for a in TINY if not a.startswith("trainer.max_epochs")] + ["trainer.max_epochs=1"]


# ------------------------------------------------------------------------------------ sweep files
def header_commands(name: str) -> list[list[str]]:
    """The `alexlab-train -m ...` commands a sweep file's header comment documents."""
    commands = []
    for line in (REPO / "sweeps" / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("alexlab-train -m"):
            commands.append(shlex.split(text.split(" #")[0])[2:])
    return commands


def jobs_of(args: list[str]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands hydra.sweeper.params and `args`."""
    # with Hydra's config loader, as the sweeper has it: glob(...) sweeps list a config group's options
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    fixed = [o.input_line for o in parser.parse_overrides(args) if not o.is_sweep_override()]
    cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True)
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()] + list(args)
    return [list(job) for batch in BasicSweeper.split_arguments(parser.parse_overrides(params), None) for job in batch]


def compose_job(job: list[str], cache: dict):
    """Compose once per set of config-group choices; apply plain key overrides the way Hydra does."""
    parsed = OverridesParser.create().parse_overrides(job)
    groups = tuple(o.input_line for o in parsed if o.key_or_group.lstrip("+~") in GROUPS)
    if groups not in cache:
        cache[groups] = compose(config_name="config", overrides=list(groups), return_hydra_config=True)
    cfg = OmegaConf.create(cache[groups])  # a copy
    OmegaConf.set_struct(cfg, True)
    ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o.input_line not in groups], cfg)
    return cfg, parsed


def test_sweep_files_are_the_paper_ablations_and_each_documents_its_command():
    assert set(PAPER_SWEEPS) <= set(SWEEPS)
    for name in SWEEPS:
        text = (REPO / "sweeps" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_"), name
        assert f"sweep_name: {name}" in text, name
        assert header_commands(name), f"sweeps/{name}.yaml documents no `alexlab-train -m` command"


@pytest.mark.parametrize("name", SWEEPS)
def test_every_job_of_every_documented_sweep_command_composes_and_validates(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for i, args in enumerate(header_commands(name)):
            jobs = jobs_of(args)
            if i == 0 and name in PAPER_SWEEPS:
                assert len(jobs) == PAPER_SWEEPS[name], (name, len(jobs))
            cache: dict = {}
            folders = set()
            for job in jobs if i == 0 else [jobs[0], jobs[-1]]:  # variants: launcher/experiment only
                cfg, parsed = compose_job(job, cache)
                validate(cfg)
                assert cfg.sweep_name == name
                excluded = list(cfg.hydra.job.config.override_dirname.exclude_keys)
                folders.add(job_name(get_overrides_dirname(parsed, excluded, ",", "=")))
            assert i > 0 or len(folders) == len(jobs), f"two trials of {args} share a run folder"
            full = compose(config_name="config", overrides=jobs[-1], return_hydra_config=True)
            fast, _ = compose_job(jobs[-1], cache)  # the shortcut above equals a real composition
            for key in ("model", "data", "optim", "eval", "trainer", "launcher", "seed", "name", "ablation_name"):
                assert OmegaConf.select(full, key) == OmegaConf.select(fast, key), (name, key)


def test_relu_vs_tanh_is_figure_1_with_an_lr_grid_per_activation():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        jobs = jobs_of(["sweep=relu_vs_tanh"])
        cfg = compose(config_name="config", overrides=jobs[0])
    grid = {tuple(sorted(j for j in job if j.startswith(("model.activation", "optim.lr")))) for job in jobs}
    assert {g[0] for g in grid} == {"model.activation=relu", "model.activation=tanh"} and len(grid) == 8
    assert (cfg.model.name, cfg.data.name, cfg.model.dropout, cfg.data.augment) == ("convnet4", "cifar10", 0.0, "none")
    assert cfg.optim.weight_decay == 0.0 and cfg.optim.schedule == "none" and cfg.eval.error_threshold == 0.25


def test_launcher_configs_compose_and_slurm_is_submitit_with_one_gpu_per_trial():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        local = compose(config_name="config", return_hydra_config=True)
        pool = compose(config_name="config", overrides=["launcher=gpu_pool", "launcher.trials_per_gpu=4"],
                       return_hydra_config=True)
        slurm = compose(config_name="config", overrides=["launcher=slurm", "hydra.launcher.partition=gpu",
                                                         "hydra.launcher.account=lab", "hydra.launcher.timeout_min=90"],
                        return_hydra_config=True)
    assert local.launcher.name == "local" and local.hydra.launcher._target_.endswith("AlexlabLauncher")
    assert pool.launcher.name == "gpu_pool" and pool.launcher.trials_per_gpu == 4
    assert slurm.hydra.launcher._target_ == "hydra_plugins.alexlab_launcher.slurm.AlexlabSlurmLauncher"
    launcher = slurm.hydra.launcher
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.partition, launcher.account,
            launcher.timeout_min) == (1, 1, "gpu", "lab", 90)
    assert launcher.max_num_timeout > 0  # time limits requeue; the fixed folder makes the requeued job resume
    for cfg in (local, pool, slurm):
        validate(cfg)
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert {"hydra_plugins.alexlab_launcher.launcher.AlexlabLauncher",
            "hydra_plugins.alexlab_launcher.slurm.AlexlabSlurmLauncher"} <= found


# ------------------------------------------------------------------------------ pool and ledger
def test_device_pool_never_shares_a_gpu_at_one_trial_per_gpu_and_reuses_freed_ones():
    pool = DevicePool(["0", "1", "2"], per_device=1)
    got = [pool.acquire() for _ in range(3)]
    assert sorted(got) == ["0", "1", "2"] and pool.acquire() is None
    pool.release("1")
    assert pool.acquire() == "1" and pool.acquire() is None
    with pytest.raises(ValueError):
        DevicePool(["0"]).release("0")


def test_device_pool_packs_k_trials_per_gpu_and_spreads_them():
    pool = DevicePool(["0", "1"], per_device=3)
    got = [pool.acquire() for _ in range(6)]
    assert pool.capacity == 6 and got.count("0") == 3 and got.count("1") == 3 and pool.acquire() is None
    assert got[:2] == ["0", "1"]  # least busy first: two trials sit on two GPUs, not on one
    pool.release("0")
    assert pool.acquire() == "0"


def test_device_pool_random_schedule_keeps_every_device_within_its_limit():
    import random

    rng = random.Random(0)
    for k in (1, 2, 4):
        pool, held = DevicePool(list("0123"), per_device=k), []
        for _ in range(500):
            if held and (rng.random() < 0.5 or len(held) == pool.capacity):
                pool.release(held.pop(rng.randrange(len(held))))
            else:
                held.append(pool.acquire())
            assert None not in held and max(held.count(d) for d in "0123") <= k


def test_ledger_keeps_every_concurrent_update(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.register({f"t{i}": {"run_dir": str(tmp_path / f"t{i}")} for i in range(3)})

    def work(n):
        for i in range(6):
            ledger.update(f"w{n}-{i}", state="running")
            ledger.update(f"w{n}-{i}", state="completed")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = json.loads((tmp_path / "sweep_ledger.json").read_text())
    assert [data["trials"][f"t{i}"]["state"] for i in range(3)] == ["waiting"] * 3
    assert sum(v["state"] == "completed" for v in data["trials"].values()) == 24
    assert len(data["current"]) == 27 and not list(tmp_path.glob(".sweep_ledger.json.tmp*"))


def test_short_names_drop_what_every_trial_shares():
    names, common = short_names(["a=1,seed=0", "a=1,seed=1"])
    assert names == ["seed=0", "seed=1"] and common == "a=1"


# ---------------------------------------------------------------------------- real multiruns
PROBES = Path(__file__).parent / "reliability"  # probes.py: callbacks a test puts on the command line


def cli(args, tmp_path, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "ALEXLAB_FAULT_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(PROBES), os.environ.get("PYTHONPATH", "")])}
    return [sys.executable, "-m", "alexlab.cli", "-m", *args, f"paths.multirun={tmp_path / 'multirun'}",
            f"paths.data={tmp_path / 'data'}", f"paths.runs={tmp_path / 'runs'}"], {"cwd": tmp_path, "env": env, **kw}


def run_sweep(args, tmp_path, timeout=300):
    cmd, kw = cli(args, tmp_path)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def report(sweep_dir: Path) -> dict:
    data = json.loads((sweep_dir / "sweep_summary.json").read_text())
    return {row["trial"]: row for row in data["trials"]}


@pytest.mark.slow
def test_gpu_pool_without_gpu_runs_two_cpu_trials_at_once_with_threads_split(tmp_path):
    tiny = [a for a in SWEEP_TINY if not a.startswith("trainer.threads")]
    meet = ["+callbacks.meet._target_=probes.Rendezvous", "+callbacks.meet.runs=2"]  # both wait for the other
    proc = run_sweep([*tiny, "launcher=gpu_pool", "launcher.n_jobs=2", "seed=0,1", *meet], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    trials = json.loads((sweep_dir / "sweep_ledger.json").read_text())["trials"]
    assert [t["state"] for t in trials.values()] == ["completed", "completed"]
    a, b = trials.values()
    assert a["pid"] != b["pid"] != os.getpid()
    met = {p.name: int(p.read_text()) for p in tmp_path.glob("met-*")}
    assert met == {"met-0": a["pid"], "met-1": b["pid"]}, "the two trials did not run at the same time"
    threads = max(1, (os.cpu_count() or 1) // 2)
    for t in trials.values():
        assert f"threads: {threads}" in (Path(t["run_dir"]) / "config.yaml").read_text()
        assert (Path(t["run_dir"]) / "console.log").is_file()
    assert {r["outcome"] for r in report(sweep_dir).values()} == {"completed"}


@pytest.mark.slow
def test_gpu_pool_trials_die_with_a_launcher_killed_by_sigkill(tmp_path):
    """CPU slots fork their trials from multiprocessing's fork server, not from the launcher, and that
    server outlives the launcher while trials hold its pipe; a kill -9 of the launcher still ends
    them (each forked trial waits on the launcher's pidfd), so a rerun never races an orphan."""
    tiny = [a for a in SWEEP_TINY if not a.startswith("trainer.threads")]
    hold = ["+callbacks.meet._target_=probes.Rendezvous", "+callbacks.meet.runs=3",  # two trials wait for a third
            "+callbacks.meet.timeout=600"]
    cmd, kw = cli([*tiny, "launcher=gpu_pool", "launcher.n_jobs=2", "seed=0,1", *hold], tmp_path)
    launcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    try:
        deadline = time.monotonic() + 300
        while len(list(tmp_path.glob("arrived-*"))) < 2:  # both trials are training (and waiting)
            assert launcher.poll() is None and time.monotonic() < deadline, "the trials never started"
            time.sleep(0.2)
        trials = [int(p.read_text()) for p in tmp_path.glob("arrived-*")]
        assert launcher.pid not in trials and all(alive(pid) for pid in trials)
    finally:
        launcher.kill()
        launcher.wait()
    deadline = time.monotonic() + 120
    while any(alive(pid) for pid in trials) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in trials), "a trial outlived its launcher"


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (a dead child nobody has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


FAULTS = {  # +fault=<name> arms of a test sweep (a config group on the search path, in tmp)
    "bad_subset": "data:\n  train_subset: 100000\n",        # DataError at setup: failed
    "diverge": "optim:\n  lr: 100.0\ntrainer:\n  max_epochs: 3\n",   # NaN loss: diverged
    "ok": "{}\n",
    "long": "data:\n  num_train: 1024\ntrainer:\n  max_epochs: 4\n",  # the one the test kills
}


def fault_sweep(tmp_path) -> list[str]:
    conf = tmp_path / "conf"
    (conf / "fault").mkdir(parents=True)
    for name, body in FAULTS.items():
        (conf / "fault" / f"{name}.yaml").write_text("# @package _global_\n" + body)
    (conf / "sweep").mkdir()
    (conf / "sweep" / "faults.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /data: synthetic\nsweep_name: faults\n"
        "data:\n  num_train: 96\n  num_test: 48\n  batch_size: 32\nmodel:\n  width: 0.125\n  init: default\n"
        "eval:\n  train_clean_size: 32\noptim:\n  lr: 0.02\n"
        "trainer:\n  max_epochs: 2\n  progress_bar: false\n  threads: 1\n  accelerator: cpu\n"
        "hydra:\n  sweeper:\n    params:\n      +fault: bad_subset,diverge,ok,long\n")
    return ["sweep=faults", f"hydra.searchpath=[file://{conf}]"]


@pytest.mark.slow
def test_failed_diverged_and_killed_trials_never_stop_the_sweep_and_a_rerun_finishes_only_the_rest(tmp_path):
    args = fault_sweep(tmp_path)
    sweep_dir = tmp_path / "multirun" / "faults" / "default"
    long_ckpt = sweep_dir / "+fault=long" / "checkpoints" / "last.ckpt"
    cmd, kw = cli(args, tmp_path)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, **kw)
    deadline = time.time() + 240
    while not long_ckpt.is_file():  # the last trial has finished its first epoch: kill the whole sweep
        assert proc.poll() is None, f"sweep ended before the kill:\n{proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint of the long trial"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()

    states = {k: v["state"] for k, v in json.loads((sweep_dir / "sweep_ledger.json").read_text())["trials"].items()}
    assert states == {"+fault=bad_subset": "failed", "+fault=diverge": "diverged", "+fault=ok": "completed",
                      "+fault=long": "running"}
    assert not (sweep_dir / "sweep_summary.json").exists()  # the launcher died: no summary, the ledger has it all
    ok_dir, diverge_dir = sweep_dir / "+fault=ok", sweep_dir / "+fault=diverge"
    before = {p: p.stat().st_mtime_ns for p in (ok_dir / "COMPLETED", ok_dir / "summary.json",
                                                ok_dir / "metrics.csv", diverge_dir / "summary.json")}

    rerun = run_sweep(args, tmp_path)
    assert rerun.returncode == 2, rerun.stderr[-3000:]
    rows = report(sweep_dir)
    assert {k: r["outcome"] for k, r in rows.items()} == {
        "+fault=bad_subset": "failed", "+fault=diverge": "diverged", "+fault=ok": "skipped",
        "+fault=long": "completed"}
    assert "train_subset=100000 is larger than" in rows["+fault=bad_subset"]["error"]
    assert "loss is nan" in rows["+fault=diverge"]["error"] or "loss is inf" in rows["+fault=diverge"]["error"]
    assert rows["+fault=long"]["resumed"] and rows["+fault=long"]["epochs"] == 4
    epochs = [line.split(",")[0] for line in (sweep_dir / "+fault=long" / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3"]  # resumed, no epoch twice
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing finished twice
    md = (sweep_dir / "sweep_summary.md").read_text()
    assert "| +fault=bad_subset | failed |" in md and "| +fault=long | completed |" in md
    assert "1 completed, 1 diverged, 1 failed, 1 skipped" in rerun.stdout
    assert rerun.stderr.strip().splitlines()[-1].startswith("alexlab: error: sweep faults: 1 of 4 trials failed")


def test_out_of_memory_is_retried_then_failed_without_touching_the_other_trials(tmp_path, monkeypatch):
    import torch
    from hydra.core.global_hydra import GlobalHydra

    from alexlab import cli, sweep
    from alexlab.module import AlexLabModule

    calls: dict = {}
    step = AlexLabModule.training_step

    def oom_for_some_seeds(self, batch, batch_idx):
        calls[self.seed] = calls.get(self.seed, 0) + 1
        if self.seed == 2 or (self.seed == 1 and calls[self.seed] == 1):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(AlexLabModule, "training_step", oom_for_some_seeds)
    monkeypatch.setattr(cli, "FAILURES", [])
    monkeypatch.setattr(sweep, "SWEEP_FAILURES", [])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["alexlab-train", "-m", *SWEEP_TINY, "seed=0,1,2", "launcher.max_retries=2",
                                      f"paths.multirun={tmp_path / 'multirun'}", f"paths.data={tmp_path / 'data'}"])
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main()
    finally:
        GlobalHydra.instance().clear()
    assert exit_.value.code == 2
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    trials = {k.split("seed=")[1].split(",")[0]: v for k, v in
              json.loads((sweep_dir / "sweep_ledger.json").read_text())["trials"].items()}
    assert [(trials[s]["state"], trials[s]["attempts"]) for s in "012"] == [
        ("completed", 1), ("completed", 2), ("failed", 3)]
    assert trials["2"]["error"].startswith("out of memory after 3 attempts: OutOfMemoryError: CUDA out of memory")
    assert calls[0] == calls[1] - 1 and calls[2] == 3  # seed 0 never saw a fault; seed 1 one extra step
    assert {r["outcome"] for r in report(sweep_dir).values()} == {"completed", "failed"}


@pytest.mark.slow
def test_ddp_inside_a_multirun_fails_in_one_line_before_anything_is_written(tmp_path):
    proc = run_sweep(["trainer=ddp", "data=synthetic", "seed=0,1"], tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alexlab: error: trainer.strategy=ddp")
    assert "launcher=gpu_pool" in lines[0] and "launcher=slurm" in lines[0]
    assert not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_an_invalid_value_in_one_arm_refuses_the_sweep_before_any_trial_starts(tmp_path):
    proc = run_sweep([*SWEEP_TINY, "model.dropout=0.5,1.5"], tmp_path, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("alexlab: error: trial ") and "model.dropout=1.5 is out of range" in line
    assert not list((tmp_path / "multirun").rglob("summary.json"))  # nothing trained, no trial folder
    assert not [p for p in (tmp_path / "multirun" / "adhoc" / "default").iterdir() if p.is_dir()]


def run_in_process(args, tmp_path, monkeypatch, capsys) -> tuple[int, str]:
    """`alexlab-train -m <args>` in this process (faster than a subprocess; what a user sees on stderr)."""
    from alexlab import cli

    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["alexlab-train", "-m", *args, f"paths.multirun={tmp_path / 'multirun'}",
                                      f"paths.data={tmp_path / 'data'}", f"paths.runs={tmp_path / 'runs'}"])
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main()
    finally:
        GlobalHydra.instance().clear()
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args,trial,preset", [
    (["model=convnet4", "ablation=paper,no_dropout"], "ablation=no_dropout,",
     "ablation=no_dropout changes nothing in this preset (name=default, model=convnet4, data=synthetic: "
     "model.dropout is already 0.0); leave the arm out of the sweep"),
    (["sweep=relu_vs_tanh", "ablation=no_lrn"], "ablation=no_lrn,model.activation=relu,optim.lr=0.003,seed=0",
     "ablation=no_lrn changes nothing in this preset (name=cifar10_convnet4, sweep=relu_vs_tanh, model=convnet4, "
     "data=cifar10: model.norm is already none); leave the arm out of the sweep"),
], ids=["convnet4_no_dropout", "relu_vs_tanh_no_lrn"])
def test_an_ablation_arm_that_changes_nothing_in_its_preset_refuses_the_sweep_before_any_trial(
        args, trial, preset, tmp_path, monkeypatch, capsys):
    # relu_vs_tanh brings its own model and data; CIFAR-10 is never read (were a trial to start, it would fail fast)
    tiny = ["data.download=false", f"data.root={tmp_path / 'no_cifar'}"] if args[0].startswith("sweep=") else SWEEP_TINY
    code, err = run_in_process([*tiny, *args], tmp_path, monkeypatch, capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"alexlab: error: trial {trial}") and line.endswith(f": {preset}; no trial was started")
    assert not list((tmp_path / "multirun").rglob("summary.json")) and not list(tmp_path.rglob("COMPLETED"))
    sweep_dirs = [p.parent for p in (tmp_path / "multirun").rglob("multirun.yaml")]
    assert sweep_dirs and not [p for d in sweep_dirs for p in d.iterdir() if p.is_dir()]  # no trial folder


def test_the_launch_check_passes_arms_that_change_their_preset_and_refuses_one_that_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*SWEEP_TINY, "model=convnet4", f"paths.multirun={tmp_path / 'multirun'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        config = loader.load_configuration("config", args + ["ablation=paper,no_lrn,no_dropout"], RunMode.MULTIRUN)
        HydraConfig.instance().set_config(config)
        context = HydraContext(config_loader=loader, callbacks=Callbacks())
        trials = prepare_trials(context, config, [args + ["ablation=paper"], args + ["ablation=no_lrn"]], 0)
        assert [t.config.ablation_name for t in trials] == ["paper", "no_lrn"]
        with pytest.raises(ConfigError, match=r"ablation=no_dropout changes nothing in this preset"):
            prepare_trials(context, config, [args + ["ablation=paper"], args + ["ablation=no_dropout"]], 0)


@pytest.mark.slow
def test_submitit_local_executor_runs_a_trial_through_the_slurm_code_path(tmp_path):
    cmd, kw = cli([*SWEEP_TINY, "hydra/launcher=alexlab_submitit_local", "hydra.launcher.timeout_min=10", "seed=0"],
                  tmp_path)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    (row,) = report(sweep_dir).values()
    assert row["outcome"] == "completed" and finished_summary(Path(row["run_dir"]))
    ledger = json.loads((sweep_dir / "sweep_ledger.json").read_text())
    assert next(iter(ledger["trials"].values()))["pid"] != proc.pid  # ran in submitit's own process
    assert list((sweep_dir / ".submitit").glob("*/*_result.pkl"))


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("sbatch") is not None, reason="SLURM is installed here")
def test_slurm_launcher_without_slurm_says_so_in_one_line(tmp_path):
    proc = run_sweep([*SWEEP_TINY, "launcher=slurm", "seed=0,1"], tmp_path, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "launcher=slurm needs SLURM's sbatch" in line and "launcher=gpu_pool" in line


def test_every_list_of_arm_names_is_the_ablation_folder():
    """conf/ablation/ is the one list of arms: the report's headings and claims name only arms it
    holds; sweep=one_at_a_time sweeps every arm but those its glob excludes (one_column, which needs a
    two-column preset, and the later-work arms, which have sweeps of their own), each excluded name is
    an arm, every arm it sweeps has a heading in the report, and the W&B sweep file (W&B cannot glob)
    lists the same arms. sweep=demo's 2 x 2 crosses the values the no_dropout and no_augment files set
    with the paper's."""
    from alexlab.report.claims import CLAIMS, TRICKS

    arms = {p.stem for p in (CONF / "ablation").glob("*.yaml")}
    assert set(TRICKS) | {"paper"} == arms  # every arm has a heading, and only arms have one
    assert {c.ablation for c in CLAIMS} <= arms
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        swept = {name: {a.split("=", 1)[1] for job in jobs_of([f"sweep={name}", "seed=0"]) for a in job
                        if a.startswith("ablation=")} for name in ("one_at_a_time",)}
        demo = {tuple(sorted(a for a in job if a.split("=")[0] not in ("seed", "sweep")))
                for job in jobs_of(["sweep=demo"])}
        params = compose(config_name="config", overrides=["sweep=one_at_a_time"], return_hydra_config=True)
    excluded = set(OverridesParser.create().parse_override(f"ablation={params.hydra.sweeper.params.ablation}")
                   .value().exclude)
    assert "one_column" in excluded and excluded <= arms, excluded - arms
    assert swept["one_at_a_time"] == arms - excluded
    from alexlab.report.designs import ARMS, PAPER_LEVELS
    levels = {k: (PAPER_LEVELS[k], v) for arm in ("no_dropout", "no_augment") for k, v in ARMS[arm].items()}
    assert demo == {tuple(sorted(f"{k}={v}" for k, v in zip(levels, cell)))
                    for cell in __import__("itertools").product(*levels.values())}
    assert swept["one_at_a_time"] <= set(TRICKS) | {"paper"}
    wandb = OmegaConf.load(REPO / "sweeps" / "wandb" / "one_at_a_time.yaml")
    assert set(wandb.parameters.ablation["values"]) == swept["one_at_a_time"]
