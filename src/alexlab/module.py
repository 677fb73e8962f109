"""The LightningModule: cross-entropy, the paper's SGD, torchmetrics top-1/top-5, epoch curves.

Per step it only updates metric state (no logging, no host sync); `epoch_metrics()` turns
the epoch into one row of curves for callbacks.EpochRecorder to write and log.

Evaluation: `train_clean` (the training error in eval mode, which the speed claims read) is
evaluated at the end of EVERY epoch by `evaluate_train_clean()`; `val` and `test` by Lightning's
validation loop every eval.every_n_epochs epochs. Only `val` may steer training (the plateau
schedule); `test` is reported, never read by a decision.
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from .data.augment import center_crop, ten_crop
from .config import PLATEAU_WITHOUT_VALIDATION
from .errors import ConfigError

TRAIN_CLEAN = "train_clean"   # the eval-mode pass over training images, every epoch
PLATEAU_MONITOR = "val/acc"   # what optim.schedule=plateau watches: never a test metric


def _metrics(num_classes: int, top5: bool) -> MetricCollection:
    # no per-update input checks: each costs a host sync on a GPU; inputs are our own logits and
    # labels, and a non-finite training loss stops the run (DivergenceGuard) before any compute()
    acc = dict(average="micro", validate_args=False)
    metrics = {"loss": MeanMetric(nan_strategy="disable"), "acc": MulticlassAccuracy(num_classes, top_k=1, **acc)}
    if top5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), **acc)
    return MetricCollection(metrics)


def step_seed(seed: int, step: int) -> int:
    """Each training step's randomness (crops, flips, lighting, dropout) derives from (seed, step)
    alone, so a resumed run replays exactly what an unbroken run does, whatever else consumed
    random numbers in between (DataLoader iterators, validation)."""
    return (seed * 1_000_003 + step * 7919 + 1) % (2**63 - 1)


def seed_device(device: torch.device, seed: int) -> None:
    """torch.manual_seed for the generators a step on `device` draws from (CPU, and the batch's
    GPU). torch.manual_seed itself also queues a seed for CUDA when CUDA is not initialised,
    capturing the Python stack each time: milliseconds per step on a CPU-only run."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):  # CUDA is initialised here, so this seeds at once
            torch.cuda.manual_seed(seed)
    elif device.type == "mps":
        torch.mps.manual_seed(seed)


class AlexLabModule(pl.LightningModule):
    def __init__(self, *, model: nn.Module, transform: nn.Module, num_classes: int, optim_cfg, eval_cfg,
                 eval_names=("train_clean", "test"), seed: int = 0, max_epochs: int = 90,
                 channels_last: bool = False, compile: bool = False):
        super().__init__()
        self.model, self.transform = model, transform
        self.optim_cfg, self.eval_cfg, self.seed, self.max_epochs = optim_cfg, eval_cfg, seed, max_epochs
        self.eval_names = list(eval_names)
        # Lightning's validation loaders, in order (AlexDataModule.validation_names): train_clean is not one
        self.validation_names = [n for n in self.eval_names if n != TRAIN_CLEAN]
        self.channels_last = channels_last
        # kept out of the submodule registry, so checkpoints hold `model.*` once and a run
        # resumes whether or not model.compile is set
        self.__dict__["forward_fn"] = torch.compile(model) if compile else model
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.train_metrics = _metrics(num_classes, top5=False)
        self.eval_metrics = nn.ModuleDict({name: _metrics(num_classes, top5=True) for name in self.eval_names})
        self.ten_crop = bool(eval_cfg.ten_crop) and "test" in self.eval_names
        if self.ten_crop:
            self.ten_crop_metrics = _metrics(num_classes, top5=True)
        self.images_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fn(x)

    # -- data on the device ------------------------------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.trainer.training:
            # + rank: DDP ranks draw different crops and dropout masks (rank 0 = a one-device run)
            seed_device(x.device, step_seed(self.seed, self.global_step) + self.global_rank)
            x = self.transform.train_batch(x)
        else:
            x = self.transform.eval_view(x)  # centre crop or the 10 patches: validation_step
        return self._memory_format(x), y

    def _memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # -- steps -----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        self._warmup()
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_metrics["loss"].update(loss.detach(), weight=len(y))
        self.train_metrics["acc"].update(logits.detach(), y)
        self.images_seen += len(y)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        view, y = batch
        self._evaluate_batch(self.validation_names[dataloader_idx], view, y)

    def _evaluate_batch(self, name: str, view: torch.Tensor, y: torch.Tensor) -> None:
        logits = self(center_crop(view, self.transform.image_size))
        self._update(self.eval_metrics[name], logits, y)
        if name == "test" and self.ten_crop:
            # log of the mean softmax over the 10 patches, without log(0) when a probability underflows
            log_probs = torch.stack([F.log_softmax(self(c).float(), -1) for c in ten_crop(view, self.transform.image_size)])
            self._update(self.ten_crop_metrics, log_probs.logsumexp(0) - math.log(log_probs.shape[0]), y)

    def evaluate_train_clean(self) -> None:
        """The training error in eval mode (no dropout, no augmentation) on the fixed train_clean
        sample, run at the end of every epoch (EpochRecorder calls it before writing the row): the
        paper's Figure 1 is a per-epoch curve, and Lightning's validation loop runs only every
        eval.every_n_epochs. Same precision context as Lightning's validation step, same view and
        memory format; it draws no random numbers, so a resumed run replays it exactly."""
        if TRAIN_CLEAN not in self.eval_metrics:
            return
        loader = self.trainer.datamodule.train_clean_dataloader()
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), self.trainer.precision_plugin.val_step_context():
                for x, y in loader:
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                    self._evaluate_batch(TRAIN_CLEAN, self._memory_format(self.transform.eval_view(x)), y)
        finally:
            self.train(was_training)

    @staticmethod
    def _update(metrics: MetricCollection, logits: torch.Tensor, y: torch.Tensor) -> None:
        metrics["loss"].update(F.cross_entropy(logits.float(), y), weight=len(y))
        metrics["acc"].update(logits, y)
        metrics["acc_top5"].update(logits, y)

    # -- one row per epoch -----------------------------------------------------------------------
    def epoch_metrics(self) -> dict[str, float]:
        """Compute and reset every metric that saw data this epoch; add the gap."""
        row: dict[str, float] = {}
        groups = [("train", self.train_metrics)] + [(n, m) for n, m in self.eval_metrics.items()]
        if self.ten_crop:
            groups.append(("test_10crop", self.ten_crop_metrics))
        for prefix, metrics in groups:
            if metrics["loss"].update_count == 0:
                continue
            for key, value in metrics.compute().items():
                if prefix == "test_10crop":
                    row[f"test/{key}_10crop"] = float(value)
                else:
                    row[f"{prefix}/{key}"] = float(value)
            metrics.reset()
        if "train_clean/acc" in row and "test/acc" in row:
            row["gap"] = row["train_clean/acc"] - row["test/acc"]
        for key in ("train/acc", PLATEAU_MONITOR, "test/acc", "gap"):
            if key in row:  # progress bar; loggers get the row from the recorder
                self.log(key, row[key], logger=False, prog_bar=True, sync_dist=False)
        if PLATEAU_MONITOR in row:
            self._step_plateau(row[PLATEAU_MONITOR])
        return row

    def _step_plateau(self, val_acc: float) -> None:
        """Step ReduceLROnPlateau here, as the epoch's row is made, so the last.ckpt written right
        after holds the stepped state. Lightning steps plateau schedulers only after
        on_train_epoch_end (where EpochRecorder writes last.ckpt) and skips that step when it
        resumes from such a checkpoint: a resumed run would lose one step. Lightning's own call
        is therefore a no-op (lr_scheduler_step)."""
        for config in self.trainer.lr_scheduler_configs:
            if config.reduce_on_plateau:
                config.scheduler.step(val_acc)

    def lr_scheduler_step(self, scheduler, metric) -> None:
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return  # stepped by _step_plateau, before the epoch's checkpoint
        super().lr_scheduler_step(scheduler, metric)

    # -- optimiser -------------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.optim_cfg
        optimizer = torch.optim.SGD(self.parameters(), lr=o.lr, momentum=o.momentum,
                                    weight_decay=o.weight_decay, nesterov=o.nesterov)
        if o.schedule == "none":
            return optimizer
        if o.schedule == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, o.step_epochs, o.gamma)
        elif o.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.max_epochs)
        else:  # plateau: the paper's "divide by 10 when the validation error stops improving"
            if "val" not in self.eval_names:
                raise ConfigError(PLATEAU_WITHOUT_VALIDATION)
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=o.gamma,
                                                                   patience=o.patience)
            # stepped by _step_plateau on evaluation epochs; "monitor" is what Lightning requires of a
            # plateau scheduler (strict=False: it looks for val/acc and skips the epochs without one)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": PLATEAU_MONITOR,
                                                             "interval": "epoch", "strict": False}}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def _warmup(self) -> None:
        """Linear warm-up from lr/10 to lr over optim.warmup_epochs, by step (a function of the step alone)."""
        epochs = self.optim_cfg.warmup_epochs
        if not epochs or self.current_epoch >= epochs:
            return
        total = epochs * max(1, self.trainer.num_training_batches)
        frac = min(1.0, (self.global_step + 1) / total)
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = self.optim_cfg.lr * (0.1 + 0.9 * frac)
