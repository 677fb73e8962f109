"""One LightningDataModule for every data set.

Small sets (fashion_mnist, cifar10, synthetic) are held whole as uint8 tensors, on the training
device when `data.on_device` allows; a batch is an index into them, so there are no workers and
no per-image Python. Image folders are decoded by DataLoader workers to uint8 256x256. Either
way augmentation happens later, batched, in `augment.BatchTransform` on the training device.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from ..callbacks import atomic_write_text
from ..errors import AlexlabError, DataError
from . import sources
from .augment import BatchTransform

IMAGENET_PCA = {  # fb.resnet.torch's values for [0, 1] pixels (PAPER.md)
    "eigval": [0.2175, 0.0188, 0.0045],
    "eigvec": [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
}
EVAL_BATCH_FACTOR = 4  # small in-memory sets: evaluation batches are this many training batches
CPU_EVAL_BATCH = 128   # ... on a CPU at most this many images (or one training batch, if larger)
STATS_SAMPLE = 2000  # image folders: statistics from this many training images (evenly spaced)


class EpochShuffle(Sampler[int]):
    """A permutation that depends only on (seed, epoch), so a run resumed at an epoch boundary
    sees exactly the batches an uninterrupted run would. Lightning calls set_epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class IndexBatch:
    """collate_fn: a list of indices -> (images, labels) sliced from tensors, wherever they live."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __call__(self, indices):
        device = self.images.device
        if device.type == "cuda":  # pinned and non-blocking: a plain copy would wait for the GPU every batch
            idx = torch.as_tensor(indices).pin_memory().to(device, non_blocking=True)
        else:
            idx = torch.as_tensor(indices, device=device)
        return self.images[idx], self.labels[idx]


def pixel_statistics(images: torch.Tensor) -> dict:
    """Per-channel mean/std and the eigen-decomposition of the channel covariance of [0, 1] pixels
    (unbiased, over every pixel of every image). One channel: eigval = [variance], eigvec = [[1]].
    Accumulated in float64 over chunks of ~4M pixels, so CIFAR-10 or 2,000 256-px images fit in memory."""
    n, c = images.shape[:2]
    per_chunk = max(1, (1 << 22) // max(1, images[0, 0].numel()))
    total, outer, count = torch.zeros(c, dtype=torch.float64), torch.zeros(c, c, dtype=torch.float64), 0
    for start in range(0, n, per_chunk):
        pixels = images[start:start + per_chunk].transpose(0, 1).reshape(c, -1).double() / 255.0 - 0.5
        total += pixels.sum(1)
        outer += pixels @ pixels.T
        count += pixels.shape[1]
    mean = total / count
    cov = (outer - count * torch.outer(mean, mean)) / max(1, count - 1)
    eigval, eigvec = torch.linalg.eigh(cov)
    order = eigval.argsort(descending=True)
    return {"mean": (mean + 0.5).tolist(), "std": cov.diagonal().clamp_min(0).sqrt().tolist(),
            "eigval": eigval[order].clamp_min(0).tolist(), "eigvec": eigvec[:, order].tolist()}


class AlexDataModule(pl.LightningDataModule):
    def __init__(self, data_cfg, eval_cfg=None, seed: int = 0, data_dir: str = "data"):
        super().__init__()
        self.cfg, self.eval_cfg, self.seed, self.data_dir = data_cfg, eval_cfg, seed, data_dir
        self._loaded = False

    # -- loading -------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._loaded:
            return
        cfg = self.cfg
        download_dir = os.path.join(self.data_dir, cfg.name)
        self.folder = None
        if cfg.name == "fashion_mnist":
            loaded = sources.load_fashion_mnist(cfg.root, download_dir, cfg.download)
        elif cfg.name == "cifar10":
            loaded = sources.load_cifar10(cfg.root, download_dir, cfg.download)
        elif cfg.name == "synthetic":
            loaded = sources.make_synthetic(cfg.num_train, cfg.num_test, cfg.channels, cfg.num_classes, cfg.size)
        elif cfg.name == "imagefolder":
            loaded = None
            if not cfg.root:
                raise DataError("data.root is not set; point it at a folder with train/<class>/ and val/<class>/ (e.g. Imagenette)")
            root = Path(cfg.root)
            self.folder = {"train": sources.ImageFolderSource(root / "train", cfg.resize)}
            self.folder["test"] = sources.ImageFolderSource(root / "val", cfg.resize, self.folder["train"].classes)
            self.classes = tuple(self.folder["train"].classes)
            self.in_channels, self.stored_size = 3, cfg.resize
        else:
            raise DataError(f"data.name={cfg.name!r} is not a data set; choose fashion_mnist, cifar10, imagefolder or synthetic")
        if loaded is not None:
            self.train_x, self.train_y, self.test_x, self.test_y, self.classes = loaded
            self.in_channels, self.stored_size = self.train_x.shape[1], self.train_x.shape[-1]
        n_train = len(self.folder["train"]) if self.folder else len(self.train_x)
        n_test = len(self.folder["test"]) if self.folder else len(self.test_x)
        if cfg.train_subset is not None and cfg.train_subset > n_train:
            raise DataError(f"data.train_subset={cfg.train_subset} is larger than the {n_train} training images of {cfg.name}")
        self.num_train = cfg.train_subset or n_train
        self.num_test = min(cfg.test_subset or n_test, n_test)
        if self.folder is None:  # fixed subsets: the first N images
            self.train_x, self.train_y = self.train_x[:self.num_train], self.train_y[:self.num_train]
            self.test_x, self.test_y = self.test_x[:self.num_test], self.test_y[:self.num_test]
        self.num_classes = len(self.classes)
        self.image_size = cfg.image_size or (227 if cfg.name == "imagefolder" else self.stored_size)
        padding = cfg.crop_padding if self.stored_size <= 64 else 0  # large images crop inside the 256 square
        if self.image_size > self.stored_size + 2 * padding:
            raise DataError(f"data.image_size={self.image_size} is larger than the {self.stored_size}-px images "
                            f"(+{padding} px padding) of {cfg.name}")
        self.stats = self.statistics()
        self.transform = BatchTransform(self.stats["mean"], self.stats["std"], self.image_size, padding, cfg.augment,
                                        self.stats["eigval"], self.stats["eigvec"], cfg.pca_std)
        self._loaded = True

    def statistics(self) -> dict:
        """Training-set pixel statistics, computed once and cached in <paths.data>/stats/."""
        stats = self._dataset_statistics()
        if self.cfg.pca == "imagenet" and self.cfg.augment == "crop_flip_pca":
            if self.in_channels != 3:
                raise DataError(f"data.pca=imagenet needs RGB images but {self.cfg.name} has {self.in_channels} channel(s); "
                                f"use data.pca=dataset (1-D lighting from the pixel variance) or data.augment=crop_flip")
            stats = {**stats, **IMAGENET_PCA}
        return stats

    def _dataset_statistics(self) -> dict:
        key = f"{self.cfg.name}-{self.num_train}-{self.cfg.root or 'default'}"
        if self.cfg.name == "synthetic":
            key += f"-{self.cfg.num_classes}-{self.cfg.channels}-{self.cfg.size}"
        elif self.cfg.name == "imagefolder":
            key += f"-{self.cfg.resize}"
        path = Path(self.data_dir) / "stats" / f"{self.cfg.name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.json"
        if path.is_file():
            try:
                cached = json.loads(path.read_text())
                if all(len(cached[k]) == self.in_channels for k in ("mean", "std", "eigval", "eigvec")):
                    return cached
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a damaged or mismatched cache is recomputed
        if self.folder is not None:
            train = self.folder["train"]
            step = max(1, self.num_train // STATS_SAMPLE)
            images = torch.stack([train[i][0] for i in range(0, self.num_train, step)])
        else:
            images = self.train_x
        stats = pixel_statistics(images)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(stats))
        except (OSError, AlexlabError):
            pass  # read-only data dir: recompute next time
        return stats

    # -- loaders -------------------------------------------------------------------------
    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        if trainer is None or str(self.cfg.on_device) == "false":
            return torch.device("cpu")
        return trainer.strategy.root_device  # auto/true: in-memory sets live where training runs

    def _tensor_loader(self, x, y, shuffle: bool) -> DataLoader:
        device = self._device()
        x, y = x.to(device), y.to(device)
        sampler = EpochShuffle(len(x), self.seed) if shuffle else None
        # evaluation keeps no activations for backward: bigger batches, but on a CPU not past
        # 128 images, beyond which activations fall out of cache (alexnet_small: 512 is ~20% slower)
        batch_size = self.cfg.batch_size
        if not shuffle:
            batch_size *= EVAL_BATCH_FACTOR
            if device.type == "cpu":
                batch_size = min(batch_size, max(self.cfg.batch_size, CPU_EVAL_BATCH))
        return DataLoader(range(len(x)), batch_size=batch_size, sampler=sampler, shuffle=False,
                          collate_fn=IndexBatch(x, y), num_workers=0)

    def _folder_loader(self, dataset, shuffle: bool) -> DataLoader:
        sampler = EpochShuffle(len(dataset), self.seed) if shuffle else None
        workers = self.cfg.num_workers
        return DataLoader(dataset, batch_size=self.cfg.batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)

    def train_clean_size(self) -> int:
        size = self.eval_cfg.train_clean_size if self.eval_cfg is not None else 2000
        return min(size, self.num_train)

    def train_dataloader(self):
        if self.folder is not None:
            subset = torch.utils.data.Subset(self.folder["train"], range(self.num_train))
            return self._folder_loader(subset, shuffle=True)
        return self._tensor_loader(self.train_x, self.train_y, shuffle=True)

    def val_dataloader(self):
        """[train_clean, test]: a fixed slice of the training subset in eval mode, and the test set."""
        clean = self.train_clean_size()
        if self.folder is not None:
            loaders = [self._folder_loader(torch.utils.data.Subset(self.folder["train"], range(clean)), False),
                       self._folder_loader(torch.utils.data.Subset(self.folder["test"], range(self.num_test)), False)]
        else:
            loaders = [self._tensor_loader(self.train_x[:clean], self.train_y[:clean], False),
                       self._tensor_loader(self.test_x, self.test_y, False)]
        return loaders if clean > 0 else loaders[1:]

    def eval_names(self) -> list[str]:
        return ["train_clean", "test"] if self.train_clean_size() > 0 else ["test"]
