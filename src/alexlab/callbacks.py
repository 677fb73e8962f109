"""Callbacks: one metrics row per epoch (CSV + loggers), atomic last.ckpt written in the
background, divergence guard."""
from __future__ import annotations

import copy
import csv
import io
import logging
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from .errors import AlexlabError, DivergedError
from .run_folder import CHECKPOINT, METRICS, atomic_write, atomic_write_text, is_rank_zero, read_metrics_csv


log = logging.getLogger(__name__)
BOOKKEEPING = ("lr", "epoch_time_s", "images_per_s")  # metrics.csv's last columns


def snapshot(obj):
    """A copy of a checkpoint in which every tensor is a CPU copy taken now (containers copied,
    other objects shared): training may change the live tensors as soon as this returns."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):  # state_dict() is an OrderedDict with a _metadata attribute: keep both
        out = copy.copy(obj)
        for key, value in obj.items():
            out[key] = snapshot(value)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(snapshot(v) for v in obj)
    return obj


class BackgroundCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint in a background thread while the next epoch trains, atomically:
    torch.save into a temporary file beside it (never $TMPDIR: a kill would strand half a
    checkpoint there, and a full $TMPDIR would pass for the run folder's disk), fsync, renamed
    over the old one only when whole. The caller pays only for a memory copy of the state
    (snapshot); the 227-px net's ~0.5 GB write no longer stalls training. One write at a time: a
    save first waits for the previous one, and `wait()` raises a failed write's error
    (EpochRecorder calls it when training ends). `enabled=False` (a process that is not rank 0 of
    its job) writes nothing."""

    def __init__(self, enabled: bool = True):
        super().__init__()
        self.enabled = enabled
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if not self.enabled:
            return
        self.wait()
        state = snapshot(checkpoint)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="alexlab-checkpoint")
        self._pending = self._executor.submit(self._write, state, Path(path))

    @staticmethod
    def _write(checkpoint, path: Path) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f), what="checkpoint",  # disk full: the old one stays
                     hint="the previous one is kept: free disk space and rerun the same command to resume")

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def teardown(self) -> None:
        """End of fit. After an error elsewhere, let the last write finish and only log its own error."""
        try:
            self.wait()
        except AlexlabError as err:
            log.error("%s", err)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


class EpochRecorder(pl.Callback):
    """Each epoch: time it, have the module evaluate train_clean (every epoch, in eval mode:
    `AlexLabModule.evaluate_train_clean`), collect the module's metrics, append one row to
    metrics.csv (rewritten atomically), send the row to the loggers with `epoch` as its step,
    then save last.ckpt through `checkpoint_io` (pass it to the Trainer's plugins): atomic,
    written while the next epoch trains. The row is written before the checkpoint, so a kill
    between the two replays the epoch and its row is replaced, never duplicated."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / METRICS
        self.ckpt_path = self.run_dir / CHECKPOINT
        # a SLURM task or DDP child other than rank 0 trains but writes nothing (Lightning's
        # is_global_zero alone is not enough: tasks that are not one DDP job each call themselves 0)
        self.writes = is_rank_zero()
        self.checkpoint_io = BackgroundCheckpointIO(enabled=self.writes)
        self.rows: list[dict] = []
        self.estimated = False  # the expected end is printed once, after the first epoch this process trains

    def on_train_start(self, trainer, pl_module) -> None:
        # resumed: keep the rows of the epochs the checkpoint holds
        self.rows = [r for r in read_metrics_csv(self.csv_path) if r["epoch"] < trainer.current_epoch]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == trainer.max_epochs - 1:  # every run's last row is evaluated
            trainer.check_val_every_n_epoch = 1
        self.epoch_start = time.perf_counter()
        self.images_at_start = pl_module.images_seen
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]  # replaced by the first step's (warm-up sets it per step)
        self.train_time = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.lr = trainer.optimizers[0].param_groups[0]["lr"]  # the lr the epoch's first step used

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.training or trainer.state.fn == "fit":
            self.train_time = time.perf_counter() - self.epoch_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        train_time = self.train_time if self.train_time is not None else time.perf_counter() - self.epoch_start
        pl_module.evaluate_train_clean()  # here, so the row below holds it: every epoch, not only evaluation epochs
        now = time.perf_counter()
        images = (pl_module.images_seen - self.images_at_start) * trainer.world_size
        row = {"epoch": trainer.current_epoch, **pl_module.epoch_metrics(), "lr": self.lr,
               "epoch_time_s": now - self.epoch_start, "images_per_s": images / max(train_time, 1e-9)}
        self.rows.append(row)
        if trainer.is_global_zero and self.writes:
            self._write_csv()
            for logger in trainer.loggers:
                logger.log_metrics(row, step=trainer.current_epoch)
            if not self.estimated:
                print(f"alexlab: {expected_end(trainer.current_epoch, trainer.max_epochs, row['epoch_time_s'])}",
                      flush=True)
                self.estimated = True
        if self.writes:
            self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.ckpt_path)  # on every rank: it ends in a barrier  # waits for the previous epoch's write first

    def on_train_end(self, trainer, pl_module) -> None:
        self.checkpoint_io.wait()  # the last checkpoint is whole (or its error raised) before the run is called done

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:  # metrics in the order they first appear, then the bookkeeping columns
            columns += [k for k in row if k not in columns]
        columns = [k for k in columns if k not in BOOKKEEPING] + [k for k in BOOKKEEPING if k in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (int(v) if k == "epoch" else v) for k, v in row.items()})
        atomic_write_text(self.csv_path, buf.getvalue())


def expected_end(epoch: int, max_epochs: int, epoch_time_s: float) -> str:
    """'epoch 1 of 90 took 2 min 25 s; about 3 h 35 min to go (ends about 15:42)'."""
    left = (max_epochs - epoch - 1) * epoch_time_s
    ends = time.strftime("%H:%M", time.localtime(time.time() + left))
    return (f"epoch {epoch + 1} of {max_epochs} took {duration(epoch_time_s)}; "
            + (f"about {duration(left)} to go (ends about {ends})" if left > 0 else "that was the last"))


def duration(seconds: float) -> str:
    seconds = round(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h} h {m} min" if h else f"{m} min {s} s" if m else f"{s} s"


class DivergenceGuard(pl.Callback):
    """Stop at the step whose loss is NaN or infinite (a later step would only spread it).

    On a GPU, reading the loss every step would make the host wait for the device each step.
    There the step's finite-flag is copied to the host without blocking and read one step later
    (and at the epoch's last step, so no checkpoint is written after a bad step): the run stops
    at most one step late, naming the step that went bad."""

    def __init__(self):
        self.pending = None  # GPU: (host flag, copy-done event, loss, epoch, step, batch) of the last step
        self.step = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.step = trainer.global_step  # the step's own index (step_seed's); batch end sees it + 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        where = (trainer.current_epoch, self.step, batch_idx)
        if loss.device.type != "cuda":
            self._check(float(loss), *where)
            return
        self.flush()
        finite = torch.isfinite(loss.detach())
        flag = torch.empty((), dtype=torch.bool, pin_memory=True)
        flag.copy_(finite, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self.pending = (flag, done, loss.detach(), *where)
        if batch_idx + 1 >= trainer.num_training_batches:
            self.flush()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            flag, done, loss, *where = self.pending
            self.pending = None
            done.synchronize()
            if not bool(flag):
                self._check(float(loss), *where)

    @staticmethod
    def _check(loss: float, epoch: int, step: int, batch_idx: int) -> None:
        if not math.isfinite(loss):
            raise DivergedError(f"loss is {loss} at epoch {epoch}, step {step} "
                                f"(batch {batch_idx}); lower optim.lr or use model.bias_init=0.1")
