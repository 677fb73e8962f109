"""One run: check -> reuse or prepare its folder -> build -> fit -> record the outcome.

A run's folder is derived from its config (runs/<name>/<overrides>), so the same command run
again skips a completed run and resumes an interrupted one from checkpoints/last.ckpt.
`run(cfg)` is what `alexlab-train` (cli.py) calls for a single run and for each trial of a sweep.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
import time
import warnings
from pathlib import Path

import hydra.utils
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException

from . import run_folder
from .callbacks import DivergenceGuard, EpochRecorder
from .config import validate
from .curves import TRAIN_ERROR_COLUMN, epochs_to_error
from .data import AlexDataModule
from .errors import AlexlabError, ConfigError, DivergedError, Interrupted, worker_message
from .models import build_model, count_parameters
from .module import AlexLabModule
from .precision import run_mode
from .sweep import check_launch, in_multirun

# trainer.* keys that are Lightning Trainer arguments of the same name and meaning
TRAINER_ARGS = set(inspect.signature(pl.Trainer.__init__).parameters)


def run(cfg: DictConfig, extra_callbacks=()) -> dict:
    """Train one configuration into its run folder and return its summary (`extra_callbacks`:
    benchmarks time the real path by adding a timer). The run folder is locked while it trains:
    the same command started twice trains it once (the second raises RunLocked)."""
    run_dir = check(cfg)
    writes = run_folder.is_rank_zero()  # DDP children and other SLURM tasks train but write nothing
    with run_folder.locked(run_dir) if writes else contextlib.nullcontext():
        done = completed_summary(cfg, run_dir, writes)
        if done is not None:
            return done
        return train(cfg, run_dir, writes, extra_callbacks)


def completed_summary(cfg: DictConfig, run_dir: Path, writes: bool) -> dict | None:
    """The summary of a finished run, which the same command skips; None when it must train. A
    COMPLETED marker without a whole summary.json (deleted, cut short by a copy) is not trusted:
    the marker goes and the run resumes from its last checkpoint, which trains no further epoch
    and writes the summary again from metrics.csv."""
    if cfg.trainer.fresh or not run_folder.is_completed(run_dir):
        return None
    summary = run_folder.read_summary(run_dir)
    if summary is not None:
        print(f"alexlab: {run_dir} is already complete; skipping (trainer.fresh=true retrains it)")
        return summary
    if writes:
        print(f"alexlab: {run_dir / run_folder.SUMMARY} is missing or not whole; rebuilding it from "
              f"{run_folder.METRICS} and {run_folder.CHECKPOINT}")
        (run_dir / run_folder.COMPLETED).unlink(missing_ok=True)
    return None


def train(cfg: DictConfig, run_dir: Path, writes: bool, extra_callbacks=()) -> dict:
    start = time.time()
    set_up_process(cfg)
    dm, net, module = build(cfg)
    resume = prepare_folder(cfg, run_dir, module.state_dict(), writes)
    summary = first_summary(cfg, run_dir, dm, net, resume, writes)
    recorder = EpochRecorder(run_dir)
    loggers = make_loggers(cfg, run_dir) if writes else []
    trainer = make_trainer(cfg, run_dir, recorder, loggers, extra_callbacks)
    try:
        status, error = fit(trainer, module, dm, resume)
    except BaseException as err:
        reported = as_reported(err, trainer.current_epoch, run_dir)
        status = "interrupted" if isinstance(reported, Interrupted) else \
            "diverged" if isinstance(reported, DivergedError) else "failed"
        error = str(reported) if status != "failed" else \
            f"{type(reported).__name__}: {str(reported).splitlines()[0] if str(reported) else ''}"
        if reported is err:
            raise
        raise reported from None
    finally:
        finish(cfg, trainer, loggers, summary, recorder.csv_path, status, error, start)
    return summary


def as_reported(err: BaseException, epoch: int, run_dir: Path) -> BaseException:
    """What the command line reports for an exception that stopped training: a signal as
    Interrupted (status `interrupted`, exit 128 + signal), an alexlab error raised in a DataLoader
    worker as its own one line, Lightning's refusal of a setting as a ConfigError; anything else
    as it is."""
    signum = signal_of(err)
    if signum is not None:
        ckpt = run_dir / run_folder.CHECKPOINT
        how = f"resume from {ckpt}" if ckpt.is_file() else "start it again (no epoch had finished)"
        verb = "terminated" if signum == signal.SIGTERM else "interrupted"
        return Interrupted(f"{verb} by {signal.Signals(signum).name} at epoch {epoch}; rerun the same command to "
                           f"{how}", signum)
    if isinstance(err, AlexlabError) and worker_message(str(err)) != str(err):
        return type(err)(worker_message(str(err)))
    if isinstance(err, MisconfigurationException):  # Lightning's word on a trainer.* value, once it sees the data
        return ConfigError(str(err).strip().splitlines()[0])
    return err


def signal_of(err: BaseException) -> int | None:
    """The signal behind an exception, if one: Lightning turns SIGTERM into SIGTERMException (a
    SystemExit(None), which would exit 0) at the next batch boundary, and Ctrl-C (KeyboardInterrupt)
    into sys.exit(1) after its own clean-up; outside its loop alexlab's handler raises Interrupted."""
    if isinstance(err, Interrupted):
        return err.signum
    if isinstance(err, SIGTERMException):
        return signal.SIGTERM
    if isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and isinstance(err.__context__,
                                                                                         KeyboardInterrupt)):
        return signal.SIGINT
    return None


def check(cfg: DictConfig) -> Path:
    """Everything that can be refused before anything is built: values, the launch, and a run
    folder trained with other settings (skipping or resuming it would pass the old run off as
    this one). Returns the run folder."""
    validate(cfg)
    if in_multirun():
        check_launch(cfg)
    run_dir = resolve_run_dir(cfg)
    changes = [] if cfg.trainer.fresh else run_folder.changed_settings(run_dir, cfg)
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise AlexlabError(f"{run_dir} was trained with other settings ({shown}); rerun with trainer.fresh=true "
                           "to train it again with these, or keep both by giving this one another name=")
    return run_dir


def resolve_run_dir(cfg: DictConfig) -> Path:
    if cfg.paths.run_dir:
        return Path(cfg.paths.run_dir)
    from hydra.core.hydra_config import HydraConfig  # set only inside Hydra's job: read it there

    return Path(HydraConfig.get().runtime.output_dir)


def set_up_process(cfg: DictConfig) -> None:
    """Threads, device check, seeds: what this process must be before the run is built; and one
    line saying which numeric mode `auto` chose (precision.run_mode)."""
    quiet_lightning()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise AlexlabError(f"trainer.accelerator={cfg.trainer.accelerator} but no CUDA device is visible; "
                           "use trainer.accelerator=cpu or auto")
    mode = run_mode(cfg)
    if mode.automatic and rank_zero_only.rank == 0:
        print(mode.line(), flush=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.backends.cudnn.benchmark = cfg.trainer.benchmark


def build(cfg: DictConfig):
    """The datamodule, network and LightningModule a config describes (no training)."""
    dm = AlexDataModule(cfg.data, cfg.eval, seed=cfg.seed, data_dir=cfg.paths.data)
    dm.setup("fit")
    net = build_model(cfg.model, dm.num_classes, dm.in_channels, dm.image_size)
    module = AlexLabModule(model=net, transform=dm.transform, num_classes=dm.num_classes, optim_cfg=cfg.optim,
                           eval_cfg=cfg.eval, eval_names=dm.eval_names(), seed=cfg.seed,
                           max_epochs=cfg.trainer.max_epochs, channels_last=run_mode(cfg).channels_last,
                           compile=cfg.model.compile)
    return dm, net, module


def prepare_folder(cfg: DictConfig, run_dir: Path, expected_state: dict, writes: bool = True) -> Path | None:
    """Create the folder, clear what a fresh start or a killed write left, write config.yaml (rank 0
    alone: `writes`); return the checkpoint to resume from, if any, checked: whole, of this network
    (`expected_state`: the module's state_dict) and with metrics.csv rows for every epoch it ends."""
    ckpt = run_dir / run_folder.CHECKPOINT
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(run_dir, os.W_OK):
            raise AlexlabError(f"run folder {run_dir} is not writable; set paths.runs (or paths.multirun) to a "
                               "writable folder")
        if cfg.trainer.fresh:
            for stale in (ckpt, run_dir / run_folder.COMPLETED, run_dir / run_folder.METRICS):
                stale.unlink(missing_ok=True)
        run_folder.remove_leftovers(run_dir)  # writes a kill cut short: never resumed from (we hold the lock)
    resume = ckpt if ckpt.is_file() else None
    if resume is not None:
        epoch = run_folder.check_checkpoint(resume, expected_state)
        run_folder.check_metrics_cover(run_dir, epoch)
    if writes:
        run_folder.atomic_write_text(run_dir / run_folder.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    return resume


def first_summary(cfg: DictConfig, run_dir: Path, dm, net, resume: Path | None, writes: bool = True) -> dict:
    """summary.json while the run trains (status running): what it is and where it came from."""
    summary = {"status": "running", "run_dir": str(run_dir), "name": cfg.name, "ablation": cfg.ablation_name,
               "job": run_dir.name, "seed": cfg.seed, "model": cfg.model.name, "data": cfg.data.name,
               "num_parameters": count_parameters(net), "num_classes": dm.num_classes, "num_train": dm.num_train,
               "num_val": dm.num_val, "num_train_clean": dm.train_clean_size(), "num_test": dm.num_test,
               "resumed_from": str(resume) if resume else None, "git_sha": run_folder.git_sha(),
               "versions": run_folder.package_versions(), **run_mode(cfg).record()}
    if writes:
        run_folder.write_json(run_dir / run_folder.SUMMARY, summary)
    return summary


def make_loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers = []
    if cfg.logger.tensorboard:
        from pytorch_lightning.loggers import TensorBoardLogger
        loggers.append(TensorBoardLogger(str(run_dir), name="tensorboard", version=""))
    if cfg.logger.wandb.enabled:
        from .wandb_logger import make_wandb_logger  # W&B is imported only when asked for
        logger = make_wandb_logger(cfg, run_dir)
        if logger is not None:
            loggers.append(logger)
    return loggers


class ProgressBar(RichProgressBar):
    """Lightning's rich bar, counting epochs from 1 ("Epoch 1/25", not "Epoch 0/24")."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"Epoch {current_epoch + 1}/{self.trainer.max_epochs}"


def make_trainer(cfg: DictConfig, run_dir: Path, recorder: EpochRecorder, loggers: list, extra_callbacks=()):
    """A Lightning Trainer: the trainer.* keys Lightning knows pass straight through; the rest is ours
    (one metrics row and one checkpoint per epoch by EpochRecorder, no per-step logging)."""
    passed = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k in TRAINER_ARGS}
    passed["precision"] = run_mode(cfg).precision  # trainer.precision=auto resolved for this machine
    callbacks = [recorder, DivergenceGuard(), *extra_callbacks, *user_callbacks(cfg)]
    if cfg.trainer.progress_bar:
        callbacks.append(ProgressBar(refresh_rate=4, leave=False))  # redraws/s: each costs ms of CPU
    return pl.Trainer(**passed, default_root_dir=str(run_dir), check_val_every_n_epoch=cfg.eval.every_n_epochs,
                      num_sanity_val_steps=0, logger=loggers or False, callbacks=callbacks,
                      plugins=[recorder.checkpoint_io], enable_checkpointing=False,
                      enable_progress_bar=cfg.trainer.progress_bar, enable_model_summary=False)


def user_callbacks(cfg: DictConfig) -> list:
    """The +callbacks.<name>._target_=... entries, built by Hydra; one line naming the entry if one fails."""
    built = []
    for name, spec in cfg.callbacks.items():
        try:
            built.append(hydra.utils.instantiate(spec))
        except Exception as err:
            cause = err.__cause__ or err
            raise ConfigError(f"callbacks.{name}: cannot build {spec.get('_target_')} ({type(cause).__name__}: "
                              f"{str(cause).splitlines()[0] if str(cause) else ''})") from None
        if not isinstance(built[-1], pl.Callback):
            raise ConfigError(f"callbacks.{name}: {spec.get('_target_')} is not a Lightning Callback")
    return built


def fit(trainer: pl.Trainer, module: AlexLabModule, dm: AlexDataModule, resume: Path | None) -> tuple[str, str | None]:
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    return "completed", None  # a signal, a divergence or a failure raises (train() records which)


def finish(cfg: DictConfig, trainer: pl.Trainer, loggers: list, summary: dict, csv_path: Path, status: str,
           error: str | None, start: float) -> None:
    """summary.json from metrics.csv, the COMPLETED marker, the loggers' end: on every outcome."""
    rows = run_folder.read_metrics_csv(csv_path)
    summary.update(status=status, error=error, wall_time_s=round(time.time() - start, 2), epochs=len(rows),
                   final=rows[-1] if rows else {}, **best_epoch(rows),
                   # eval-mode train_clean/acc (every epoch), never the as-trained train/acc
                   epochs_to_train_error=epochs_to_error([(r["epoch"], r.get(TRAIN_ERROR_COLUMN)) for r in rows],
                                                         cfg.eval.error_threshold),
                   error_threshold=cfg.eval.error_threshold)
    run_dir = Path(summary["run_dir"])
    writes = trainer.is_global_zero and run_folder.is_rank_zero()
    if writes:
        run_folder.write_json(run_dir / run_folder.SUMMARY, summary)
        if status == "completed":
            run_folder.mark_completed(run_dir, time.strftime("%Y-%m-%dT%H:%M:%S"))
    for logger in loggers:
        if hasattr(logger, "alexlab_finish"):
            logger.alexlab_finish(summary)
    if writes and status == "completed":
        print_summary(summary)


def best_epoch(rows: list[dict]) -> dict:
    """The evaluated epoch with the highest test accuracy (reported beside the final one, never judged)."""
    scored = [r for r in rows if r.get("test/acc") is not None]
    if not scored:
        return {"best_test_acc": None, "best_epoch": None}
    best = max(scored, key=lambda r: r["test/acc"])
    return {"best_test_acc": best["test/acc"], "best_epoch": int(best["epoch"])}


def quiet_lightning() -> None:
    """Keep the console to the progress bar and the summary: Lightning's tips and banners go."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*on_after_batch_transfer.*", ".*LeafSpec.*", ".*does not have many workers.*",
                    ".*weights_only.*",
                    # we log nothing per step (one row per epoch), so the logging interval is moot
                    ".*log_every_n_steps.*",
                    # plateau: val/acc exists on evaluation epochs only; the schedule skips the others
                    ".*ReduceLROnPlateau conditioned on metric val/acc.*",
                    # DDP: the progress bar shows epoch_metrics(), which torchmetrics already gathered
                    ".*sync_dist=True.*when logging on epoch level.*"):
        warnings.filterwarnings("ignore", message=message)


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    final = summary.get("final", {})
    table = Table(title=f"{summary['name']} / {summary['job']}: {summary['status']}", show_header=False)
    for key in ("train/acc", "train_clean/acc", "val/acc", "test/acc", "test/acc_top5", "test/acc_10crop", "gap"):
        if final.get(key) is not None:
            table.add_row(key, f"{final[key]:.4f}")
    table.add_row("best test/acc (epoch)", f"{summary['best_test_acc']:.4f} ({summary['best_epoch'] + 1})"
                  if summary.get("best_test_acc") is not None else "-")
    reached = summary["epochs_to_train_error"]
    table.add_row(f"epochs to train_clean error < {summary['error_threshold']}",
                  f"{reached:.2f}" if reached is not None else f"not reached in {summary['epochs']} epochs")
    table.add_row("parameters", f"{summary['num_parameters']:,}")
    table.add_row("wall time", f"{summary['wall_time_s']:.1f} s")
    table.add_row("run folder", summary["run_dir"])
    Console().print(table)
