"""alexlab's Hydra launcher: `launcher=local` (trials one after another in this process) and
`launcher=gpu_pool` (trials at once in fresh processes, each pinned to a GPU of the pool through
CUDA_VISIBLE_DEVICES; on a CPU-only box launcher.n_jobs trials with the CPU threads split).

Both read their settings from the task config's `launcher` node, register every trial in the
sweep ledger before starting any, and skip finished trials without starting a process.
Plugin discovery executes this module at every start: keep it free of torch, and of
`from __future__ import annotations` (its dataclasses are built before the module is registered).
"""

import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import select
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, RunMode, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

# plain Python, no torch: plugin discovery imports this module at every start of any Hydra app
from alexlab.config import validate
from alexlab.errors import AlexlabError, ConfigError, Interrupted, say_error
from alexlab.run_folder import finished_summary
from alexlab.settings import RESULT_NEUTRAL, differences, flatten
from alexlab.sweep import DevicePool, Ledger, check_launch, first_line, now

log = logging.getLogger(__name__)


@dataclass
class AlexlabLauncherConf:
    _target_: str = "hydra_plugins.alexlab_launcher.launcher.AlexlabLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="alexlab", node=AlexlabLauncherConf, provider="alexlab")


@dataclass
class Trial:
    idx: int
    overrides: list
    config: DictConfig   # the composed sweep config of this trial (hydra node included)
    key: str             # its folder below the sweep dir: the ledger's name for it
    run_dir: Path


def prepare_trials(hydra_context: HydraContext, config: DictConfig, job_overrides: Sequence[Sequence[str]],
                   initial_job_idx: int, extra: Sequence[str] = ()) -> list[Trial]:
    """Compose every trial's config once, refuse the sweep if any is invalid or is an ablation arm
    that changes nothing in its preset (one line, before anything runs), and register them all in
    the ledger as waiting."""
    trials = []
    saved = HydraConfig.instance().cfg
    try:
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            overrides = list(overrides) + list(extra)
            sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                sweep_config.hydra.job.num = idx
            HydraConfig.instance().set_config(sweep_config)
            key = str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
            problem = None
            try:
                validate(sweep_config)
                check_launch(sweep_config)
                problem = unchanged_arm(hydra_context.config_loader, config, overrides, sweep_config)
            except ConfigError as err:
                problem = str(err)
            if problem:  # raised outside the except block: the CLI prints this line, not its context
                raise ConfigError(f"trial {key}: {problem}; no trial was started")
            run_dir = Path(os.path.abspath(str(sweep_config.hydra.sweep.dir))) / key
            trials.append(Trial(idx, overrides, sweep_config, key, run_dir))
    finally:
        HydraConfig.instance().cfg = saved
    sweep_dir = Path(str(config.hydra.sweep.dir))
    Ledger(sweep_dir).register({t.key: {"overrides": filter_overrides(t.overrides), "run_dir": str(t.run_dir)}
                                for t in trials})
    return trials


REFERENCE_ARM = "paper"  # the arm every other ablation arm is compared with (conf/ablation/paper.yaml)
ARM_GROUP = "ablation"
PRESET_GROUPS = ("experiment", "sweep", "model", "data", "optim", "eval", "trainer")  # named when not the default


def unchanged_arm(config_loader: Any, config: DictConfig, overrides: Sequence[str], trial: DictConfig) -> Optional[str]:
    """The refusal, in one line, when the trial's ablation arm composes to the very settings of
    ablation=paper with the same overrides (the preset already has what the arm sets: comparing
    the two would measure nothing); None otherwise. The arm is the trial's `ablation` choice, not
    `ablation_name`, which sweep files set as well."""
    arm = OmegaConf.select(trial, f"hydra.runtime.choices.{ARM_GROUP}")
    if arm in (None, REFERENCE_ARM):
        return None
    reference = config_loader.load_sweep_config(config, with_arm(overrides, REFERENCE_ARM))
    if differences(settings_of(trial), settings_of(reference), ignore=RESULT_NEUTRAL + ("ablation_name",)):
        return None
    sets = arm_settings(config_loader, str(arm))
    why = "; ".join(_same_value(key, value, OmegaConf.select(reference, key)) for key, value in sets.items())
    preset = preset_of(config_loader, config, trial, overrides, sets)
    return (f"{ARM_GROUP}={arm} changes nothing in this preset ({preset}: {why or 'it sets nothing but ablation_name'}); "
            "leave the arm out of the sweep")


def with_arm(overrides: Sequence[str], arm: str) -> list:
    """The same overrides with the ablation choice replaced by `arm`."""
    def group(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]

    return [o for o in overrides if group(o) != ARM_GROUP] + [f"{ARM_GROUP}={arm}"]


def settings_of(cfg: DictConfig) -> dict:
    """Everything a trial computes with, resolved; the hydra node (which needs a live Hydra) is left out."""
    return {key: OmegaConf.to_container(cfg[key], resolve=True) if isinstance(cfg[key], DictConfig) else cfg[key]
            for key in cfg if key != "hydra"}


def arm_settings(config_loader: Any, arm: str) -> dict:
    """{flattened key: value} of what conf/ablation/<arm>.yaml sets, besides ablation_name."""
    path = f"{ARM_GROUP}/{arm}"
    for source in config_loader.get_sources():
        if source.is_config(path):
            content = OmegaConf.to_container(source.load_config(path).config, resolve=False)
            return {k: v for k, v in flatten(content).items() if k != "ablation_name"}
    return {}


def preset_of(config_loader: Any, config: DictConfig, trial: DictConfig, overrides: Sequence[str], keys) -> str:
    """'name=default, model=convnet4': the experiment name, the config-group choices that differ from
    the root config's, and the command-line overrides of the arm's own keys."""
    root = config_loader.load_configuration(config_name=trial.hydra.job.config_name,
                                            overrides=list(config.hydra.overrides.hydra), run_mode=RunMode.RUN)
    default, chosen = root.hydra.runtime.choices, trial.hydra.runtime.choices
    parts = [f"name={trial.name}"]
    parts += [f"{g}={chosen.get(g)}" for g in PRESET_GROUPS if chosen.get(g) != default.get(g)]
    parts += [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in keys]
    return ", ".join(parts)


def _same_value(key: str, arm_value: Any, value: Any) -> str:
    """Why `key` did not change: the preset already has the arm's value, or sets it back afterwards."""
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    if value == arm_value:
        return f"{key} is already {shown}"
    return f"{key} stays {shown} (set after the ablation)"


def failed_to_start(trial: Trial, err: Exception) -> JobReturn:
    """A trial whose job could not even start (its folder or Hydra's record of it cannot be
    written, ...): recorded failed in the ledger with one line; the other trials go on."""
    if isinstance(err, OSError):
        line = f"cannot write {err.filename or trial.run_dir} ({err.strerror or err})"
    elif isinstance(err, AlexlabError):
        line = first_line(err)
    else:
        line = f"{type(err).__name__}: {first_line(err)}"
    say_error(f"{trial.key}: {line}")
    Ledger(Path(str(trial.config.hydra.sweep.dir))).update(trial.key, state="failed", error=line, ended=now())
    return returned(trial, {"status": "failed", "error": line})


def returned(trial: Trial, value: Any) -> JobReturn:
    ret = JobReturn(overrides=trial.overrides, cfg=None, hydra_cfg=None, working_dir=os.getcwd(),
                    task_name=str(trial.config.hydra.job.name), status=JobStatus.COMPLETED)
    ret.return_value = value
    return ret


class AlexlabLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:

        check_launch(config)  # DDP inside a multirun: refused before the sweeper writes anything
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if self.config.launcher.name == "gpu_pool":
            return self._pool(job_overrides, initial_job_idx)
        return self._sequential(job_overrides, initial_job_idx)

    def _sequential(self, job_overrides, initial_job_idx) -> list[JobReturn]:
        trials = prepare_trials(self.hydra_context, self.config, job_overrides, initial_job_idx)
        log.info(f"Launching {len(trials)} trials one after another in {self.config.hydra.sweep.dir}")
        results = []
        for trial in trials:
            log.info(f"\t#{trial.idx} : {' '.join(filter_overrides(trial.overrides))}")
            HydraConfig.instance().set_config(trial.config)
            try:  # run_trial records every failure of the run itself; this catches what comes before it
                results.append(run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                       config=trial.config, job_dir_key="hydra.sweep.dir",
                                       job_subdir_key="hydra.sweep.subdir"))
            except Exception as err:
                results.append(failed_to_start(trial, err))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return results

    def _pool(self, job_overrides, initial_job_idx) -> list[JobReturn]:

        cfg = self.config
        gpus = [] if cfg.trainer.accelerator == "cpu" else visible_gpus()
        pool = DevicePool(gpus, cfg.launcher.trials_per_gpu) if gpus else DevicePool(["cpu"], cfg.launcher.n_jobs)
        extra = ["trainer.progress_bar=false"]  # a log file per trial, not interleaved bars
        context = trial_context(bool(gpus))  # (a fork server starts loading torch now, beside the work below)
        threads = cfg.trainer.threads or max(1, (os.cpu_count() or 1) // pool.capacity)
        if not cfg.trainer.threads:
            extra.append(f"trainer.threads={threads}")
        trials = prepare_trials(self.hydra_context, cfg, job_overrides, initial_job_idx, extra)
        ledger = Ledger(Path(str(cfg.hydra.sweep.dir)))
        where = f"GPUs {','.join(gpus)} x {pool.per_device} trial(s) each" if gpus else f"{pool.capacity} CPU slots"
        log.info(f"Launching {len(trials)} trials on {where}, {threads} threads each, in {cfg.hydra.sweep.dir}")

        results: list[Optional[JobReturn]] = [None] * len(trials)
        waiting: deque = deque()
        for pos, trial in enumerate(trials):
            done = None if cfg.trainer.fresh else finished_summary(trial.run_dir, trial.config)
            if done is not None:  # no process (and no torch import) just to skip it
                log.info(f"\t#{trial.idx} {trial.key}: {done['status']} earlier; skipped")
                ledger.update(trial.key, state=done["status"], skipped=True, error=done.get("error"))
                results[pos] = returned(trial, done)
            else:
                waiting.append(pos)

        singleton_state = Singleton.get_state()
        running: dict = {}  # process sentinel -> (process, device, position)
        try:
            while waiting or running:
                while waiting:
                    device = pool.acquire()
                    if device is None:
                        break
                    pos = waiting.popleft()
                    trial = trials[pos]
                    env = {"OMP_NUM_THREADS": str(threads)}
                    if gpus:
                        env["CUDA_VISIBLE_DEVICES"] = str(device)
                    try:
                        trial.run_dir.mkdir(parents=True, exist_ok=True)
                        payload = _dumps((self.hydra_context, trial.config, self.task_function, singleton_state))
                        proc = context.Process(target=run_in_child, name=f"alexlab-trial-{trial.idx}", daemon=False,
                                               args=(payload, env, str(trial.run_dir / "console.log"), os.getpid()))
                        proc.start()
                    except Exception as err:  # this trial fails; the others still start
                        pool.release(device)
                        results[pos] = failed_to_start(trial, err)
                        continue
                    running[proc.sentinel] = (proc, device, pos)
                    log.info(f"\t#{trial.idx} [{device}] started {trial.key} (log: {trial.run_dir / 'console.log'})")
                for sentinel in multiprocessing.connection.wait(list(running)) if running else ():
                    proc, device, pos = running.pop(sentinel)
                    proc.join()
                    pool.release(device)
                    trial = trials[pos]
                    entry = ledger.read()["trials"].get(trial.key, {})
                    stopped = proc.exitcode in SIGNAL_EXITS  # a signal to that trial alone: left running, resumed later
                    if proc.exitcode != 0 and not stopped and entry.get("state") in (None, "waiting", "running"):
                        error = f"trial process ended with exit code {proc.exitcode} (see {trial.run_dir / 'console.log'})"
                        ledger.update(trial.key, state="failed", error=error)
                        entry = {**entry, "state": "failed", "error": error}
                    log.info(f"\t#{trial.idx} [{device}] {entry.get('state')}: {trial.key}"
                             + (f" ({entry['error']})" if entry.get("error") else ""))
                    results[pos] = returned(trial, {"status": entry.get("state"), "error": entry.get("error")})
        except BaseException:  # Ctrl-C or an error here: stop the trials; their checkpoints let a rerun resume
            for proc, _, _ in running.values():
                proc.terminate()
            for proc, _, _ in running.values():
                proc.join()
            raise
        return results


# exit statuses of a trial process that a signal stopped: 128 + SIGINT / SIGTERM (alexlab's own), or
# the signal itself (multiprocessing reports death by signal N as -N)
SIGNAL_EXITS = (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM)


def trial_context(on_gpus: bool):
    """How trial processes start. On GPUs each is spawned: a fresh interpreter, so CUDA starts only
    there, under the CUDA_VISIBLE_DEVICES it was given. On CPU slots each is forked from a server
    process that imported alexlab.train (torch, Lightning) once and never ran a torch op: importing
    them costs ~5 s of a core per process on a 2-core machine, a minute of CPU over a 12-trial demo.
    Either way every trial is a new process of its own, as `kill`, the ledger and console.log expect."""
    if on_gpus or "forkserver" not in multiprocessing.get_all_start_methods():  # (Windows has no fork server)
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["alexlab.train"])
    multiprocessing.forkserver.ensure_running()  # returns at once; the server imports while the sweep is prepared
    return context


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them for the children."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in listed.split(",") if d.strip()][:count]


def _dumps(obj) -> bytes:
    import cloudpickle  # the task function hides behind hydra.main's wrapper: pickle cannot find it by name

    return cloudpickle.dumps(obj)


def run_in_child(payload: bytes, env: dict, log_path: str, launcher_pid: int) -> None:
    """A trial process: device and threads first (before torch is imported where the process was
    spawned; torch.set_num_threads sets them again where it was forked with torch loaded), then the job."""
    os.environ.update(env)
    _die_with_launcher(launcher_pid)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import cloudpickle

    hydra_context, config, task_function, singleton_state = cloudpickle.loads(payload)
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(config)
    try:
        ret = run_job(hydra_context=hydra_context, task_function=task_function, config=config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    except Interrupted as stop:  # its ledger entry stays running: the next command resumes it
        say_error(str(stop))
        raise SystemExit(stop.exit_status) from None
    if ret.status != JobStatus.COMPLETED:
        raise SystemExit(1)


def _die_with_launcher(launcher_pid: int) -> None:
    """A trial dies with its launcher (kill -9 included), so a rerun never races an orphan. A spawned
    trial's parent is the launcher: Linux's parent-death signal does it. A forked one's parent is
    multiprocessing's fork server, which outlives the launcher while trials hold its pipe: a thread
    waits on the launcher's pidfd (or polls its pid) and kills this process when it ends."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == launcher_pid:
        return

    def watch() -> None:
        try:
            fd = os.pidfd_open(launcher_pid)
            select.select([fd], [], [])  # readable once the launcher has exited
        except ProcessLookupError:  # it already has
            pass
        except (AttributeError, OSError):  # no pidfds (not Linux, or a kernel before 5.3): poll
            while _exists(launcher_pid):
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="alexlab-launcher-watch", daemon=True).start()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
