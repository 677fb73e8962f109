"""`alexlab-train`: compose -> validate -> build -> fit -> write the run folder.

A run's folder is derived from its config (runs/<name>/<overrides>), so the same command run
again skips a completed run and resumes an interrupted one from checkpoints/last.ckpt.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from .config import validate
from .curves import TRAIN_ERROR_COLUMN, epochs_to_error
from .errors import AlexlabError, CheckpointError, DivergedError
from .settings import RESULT_NEUTRAL as RERUN_MAY_CHANGE, flatten, ignored

COMPLETED = "COMPLETED"  # marker file: the run finished and summary.json is final
PACKAGES = ("alexlab", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "hydra-core", "wandb")


def conf_dir() -> str:
    """conf/ inside an installed wheel, else the repository's conf/ (editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"alexlab's conf/ folder not found beside {here}")


def git_sha() -> str | None:
    for where in (Path.cwd(), Path(__file__).resolve().parent):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
            if out.returncode == 0:
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def package_versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def write_json(path: Path, data: dict) -> None:
    from .callbacks import atomic_write_text
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def resolve_run_dir(cfg: DictConfig) -> Path:
    if cfg.paths.run_dir:
        return Path(cfg.paths.run_dir)
    from hydra.core.hydra_config import HydraConfig
    return Path(HydraConfig.get().runtime.output_dir)


_UNKNOWN = object()
# Keys whose absence from a run folder's config.yaml means that run computed something else than
# the same settings compute now, so a rerun must neither skip nor resume it. data.subset_seed came
# with class-stratified samples (before: the first N images), train_clean every epoch and the
# plateau schedule on a validation split (before: on test/acc).
ABSENT_BEFORE = {"data.subset_seed": "absent (first-N subsets, plateau on test/acc)"}


def changed_settings(run_dir: Path, cfg: DictConfig) -> list[str]:
    """'key: before -> now' for every setting that differs between the config a run folder was
    trained with (its config.yaml) and `cfg`. Keys only one side knows (a newer schema) are not
    compared; an unreadable config.yaml compares as unchanged (the checkpoint check speaks then).
    A larger trainer.max_epochs is not a change for an unfinished run: resuming it trains on to
    the new end (a finished run is not extended: that would need trainer.fresh=true).
    Only the compared keys of `cfg` are resolved (its hydra node needs a live Hydra to resolve)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return []
    try:
        before = flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    except Exception:
        return []
    changes = []
    for key in sorted(before):
        if ignored(key, RERUN_MAY_CHANGE):
            continue
        try:
            now = OmegaConf.select(cfg, key, default=_UNKNOWN)
        except Exception:  # an interpolation that cannot resolve here
            continue
        if now is _UNKNOWN:
            continue
        if isinstance(now, (DictConfig, ListConfig)):
            now = OmegaConf.to_container(now, resolve=True)
        if key == "trainer.max_epochs" and now >= before[key] and not (Path(run_dir) / COMPLETED).is_file():
            continue
        if now != before[key]:
            changes.append(f"{key}: {before[key]!r} -> {now!r}")
    for key, meaning in ABSENT_BEFORE.items():
        now = OmegaConf.select(cfg, key, default=_UNKNOWN)
        if key not in before and now is not _UNKNOWN:
            changes.append(f"{key}: {meaning} -> {now!r}")
    return changes


def check_checkpoint(path: Path) -> None:
    """Fail loudly on a checkpoint that cannot be resumed, rather than silently starting afresh."""
    import torch
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if "state_dict" not in ckpt or "loops" not in ckpt:
            raise ValueError("not a Lightning checkpoint")
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}); "
                              f"rerun with trainer.fresh=true to start this run again") from None


def build(cfg: DictConfig):
    """The datamodule, network and LightningModule a config describes (no training)."""
    from .data import AlexDataModule
    from .models import build_model
    from .module import AlexLabModule

    dm = AlexDataModule(cfg.data, cfg.eval, seed=cfg.seed, data_dir=cfg.paths.data)
    dm.setup("fit")
    net = build_model(cfg.model, dm.num_classes, dm.in_channels, dm.image_size)
    module = AlexLabModule(net, dm.transform, dm.num_classes, cfg.optim, cfg.eval, dm.eval_names(), cfg.seed,
                           cfg.trainer.max_epochs, cfg.model.channels_last, cfg.model.compile)
    return dm, net, module


def make_loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers = []
    if cfg.logger.tensorboard:
        from pytorch_lightning.loggers import TensorBoardLogger
        loggers.append(TensorBoardLogger(str(run_dir), name="tensorboard", version=""))
    if cfg.logger.wandb.enabled:
        from .wandb_logger import make_wandb_logger
        logger = make_wandb_logger(cfg, run_dir)
        if logger is not None:
            loggers.append(logger)
    return loggers


def quiet_lightning() -> None:
    """Keep the console to the progress bar and the summary: Lightning's tips and banners go."""
    import logging
    import warnings

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*on_after_batch_transfer.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*weights_only.*")
    # plateau: val/acc exists on evaluation epochs only; the schedule is meant to skip the others
    warnings.filterwarnings("ignore", message=".*ReduceLROnPlateau conditioned on metric val/acc.*")


def run(cfg: DictConfig, extra_callbacks=()) -> dict:
    """Train one configuration into its run folder and return its summary (`extra_callbacks`:
    benchmarks time the real path by adding a timer)."""
    validate(cfg)
    from .sweep import check_launch, in_multirun
    if in_multirun():
        check_launch(cfg)
    run_dir = resolve_run_dir(cfg)
    summary_path = run_dir / "summary.json"
    changes = [] if cfg.trainer.fresh else changed_settings(run_dir, cfg)
    if changes:  # skipping or resuming would pass off the old settings' run as this one
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise AlexlabError(f"{run_dir} was trained with other settings ({shown}); rerun with trainer.fresh=true "
                           "to train it again with these, or keep both by giving this one another name=")
    if (run_dir / COMPLETED).is_file() and not cfg.trainer.fresh:
        print(f"alexlab: {run_dir} is already complete; skipping (trainer.fresh=true retrains it)")
        return json.loads(summary_path.read_text())

    import pytorch_lightning as pl
    import torch

    from .callbacks import DivergenceGuard, EpochRecorder, atomic_write_text, read_metrics_csv
    from .models import count_parameters

    quiet_lightning()
    start = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise AlexlabError(f"run folder {run_dir} is not writable; set paths.runs (or paths.multirun) to a writable folder")
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise AlexlabError(f"trainer.accelerator={cfg.trainer.accelerator} but no CUDA device is visible; "
                           "use trainer.accelerator=cpu or auto")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.backends.cudnn.benchmark = cfg.trainer.benchmark
    dm, net, module = build(cfg)

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if cfg.trainer.fresh:
        for stale in (ckpt, run_dir / COMPLETED, run_dir / "metrics.csv"):
            stale.unlink(missing_ok=True)
    for partial in ckpt.parent.glob(".last.ckpt.tmp*"):  # a save cut short by a kill: never resumed from
        partial.unlink(missing_ok=True)
    resume = ckpt if ckpt.is_file() else None
    if resume is not None:
        check_checkpoint(resume)

    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    summary = {"status": "running", "run_dir": str(run_dir), "name": cfg.name, "ablation": cfg.ablation_name,
               "job": run_dir.name, "seed": cfg.seed, "model": cfg.model.name, "data": cfg.data.name,
               "num_parameters": count_parameters(net), "num_classes": dm.num_classes, "num_train": dm.num_train,
               "num_val": dm.num_val, "num_train_clean": dm.train_clean_size(), "num_test": dm.num_test,
               "resumed_from": str(resume) if resume else None, "git_sha": git_sha(), "versions": package_versions()}
    write_json(summary_path, summary)

    recorder = EpochRecorder(run_dir)
    callbacks = [recorder, DivergenceGuard(), *extra_callbacks]
    if cfg.trainer.progress_bar:
        from pytorch_lightning.callbacks import RichProgressBar
        callbacks.append(RichProgressBar(refresh_rate=4, leave=False))  # redraws/s: each costs ms of CPU
    loggers = make_loggers(cfg, run_dir)
    trainer = pl.Trainer(
        default_root_dir=str(run_dir), max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices, strategy=cfg.trainer.strategy, num_nodes=cfg.trainer.num_nodes,
        precision=cfg.trainer.precision, deterministic=cfg.trainer.deterministic, benchmark=cfg.trainer.benchmark,
        gradient_clip_val=cfg.trainer.gradient_clip_val, limit_train_batches=cfg.trainer.limit_train_batches,
        check_val_every_n_epoch=cfg.eval.every_n_epochs, num_sanity_val_steps=0, logger=loggers or False,
        callbacks=callbacks, plugins=[recorder.checkpoint_io], enable_checkpointing=False,
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False, log_every_n_steps=10**9)
    status, error = "completed", None
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
        if trainer.interrupted:
            status, error = "interrupted", "interrupted (Ctrl-C or signal)"
    except DivergedError as err:
        status, error = "diverged", str(err)
        raise
    except BaseException as err:
        status, error = "failed", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise
    finally:
        rows = read_metrics_csv(recorder.csv_path)
        summary.update(status=status, error=error, wall_time_s=round(time.time() - start, 2), epochs=len(rows),
                       final=rows[-1] if rows else {}, **_best(rows),
                       # eval-mode train_clean/acc (every epoch), never the as-trained train/acc
                       epochs_to_train_error=epochs_to_error([(r["epoch"], r.get(TRAIN_ERROR_COLUMN)) for r in rows],
                                                             cfg.eval.error_threshold),
                       error_threshold=cfg.eval.error_threshold)
        if trainer.is_global_zero:
            write_json(summary_path, summary)
            if status == "completed":
                atomic_write_text(run_dir / COMPLETED, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
        for logger in loggers:
            if hasattr(logger, "alexlab_finish"):
                logger.alexlab_finish(summary)
    if trainer.is_global_zero:
        print_summary(summary)
    return summary


def _best(rows: list[dict]) -> dict:
    scored = [r for r in rows if r.get("test/acc") is not None]
    if not scored:
        return {"best_test_acc": None, "best_epoch": None}
    best = max(scored, key=lambda r: r["test/acc"])
    return {"best_test_acc": best["test/acc"], "best_epoch": int(best["epoch"])}


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    final = summary.get("final", {})
    table = Table(title=f"{summary['name']} / {summary['job']}: {summary['status']}", show_header=False)
    for key in ("train/acc", "train_clean/acc", "val/acc", "test/acc", "test/acc_top5", "test/acc_10crop", "gap"):
        if final.get(key) is not None:
            table.add_row(key, f"{final[key]:.4f}")
    table.add_row("best test/acc (epoch)", f"{summary['best_test_acc']:.4f} ({summary['best_epoch']})"
                  if summary.get("best_test_acc") is not None else "-")
    reached = summary["epochs_to_train_error"]
    table.add_row(f"epochs to train_clean error < {summary['error_threshold']}",
                  f"{reached:.2f}" if reached is not None else "not reached")
    table.add_row("parameters", f"{summary['num_parameters']:,}")
    table.add_row("wall time", f"{summary['wall_time_s']:.1f} s")
    table.add_row("run folder", summary["run_dir"])
    Console().print(table)


FAILURES: list[str] = []  # one line per failed job of this process, reported by main()


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def hydra_main(cfg: DictConfig):
    # An expected failure ends this job, not the process: the next trial of a sweep still runs.
    from .sweep import in_multirun, run_trial
    if in_multirun():  # ledger, OOM retries, any exception recorded: never raises
        return run_trial(cfg, run)
    try:
        return run(cfg)
    except AlexlabError as err:
        FAILURES.append(str(err))
        print(f"alexlab: error: {err}", file=sys.stderr)
        return {"status": "diverged" if isinstance(err, DivergedError) else "failed", "error": str(err)}


def one_line(err: BaseException) -> str:
    """The most telling line of a Hydra/OmegaConf error, with the key it concerns."""
    cause = err.__cause__ or (None if err.__suppress_context__ else err.__context__)  # `raise ... from None`: none
    key = getattr(cause, "full_key", None) or getattr(err, "full_key", None)
    text = [t.strip() for t in str(cause if cause is not None and str(cause) else err).strip().splitlines() if t.strip()]
    first = text[0] if text else type(err).__name__
    parent = getattr(cause, "parent_node", None)
    if " not in " in first and isinstance(parent, DictConfig):  # unknown key: name the keys that exist
        first = f"{first}; valid keys: {', '.join(str(k) for k in parent.keys())}"
    if "Available options" in " ".join(text):  # unknown config group option: list the valid ones
        start = next(i for i, t in enumerate(text) if "Available options" in t) + 1
        options = [t for t in text[start:] if ":" not in t and "=" not in t]
        first = f"{first}; choose one of: {', '.join(options)}"
    return f"{key}: {first}" if key and key not in first else first


def main() -> None:
    """Console entry: Hydra's CLI, but every error ends as one line and exit status 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    full_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's multi-line report
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException, AlexlabError) as err:
        if full_trace:
            raise
        print(f"alexlab: error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except YAMLError as err:  # a config or sweep file that is not YAML
        if full_trace:
            raise
        mark = getattr(err, "problem_mark", None)
        where = f"{mark.name} (line {mark.line + 1})" if mark is not None else "a config file"
        print(f"alexlab: error: {where} is not valid YAML: {getattr(err, 'problem', None) or err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # an output folder Hydra cannot create (a file in the way, no space, read-only)
        if full_trace:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"alexlab: error: cannot write{where} ({err.strerror or err}); paths.runs and paths.multirun must be "
              "writable folders with free space", file=sys.stderr)
        sys.exit(2)
    from .sweep import SWEEP_FAILURES
    if FAILURES or SWEEP_FAILURES:
        sys.exit(2)


if __name__ == "__main__":
    main()
