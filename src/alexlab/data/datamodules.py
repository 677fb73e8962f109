"""One LightningDataModule for every data set.

Small sets (fashion_mnist, cifar10, synthetic) are held whole as uint8 tensors, on the training
device when `data.on_device` allows; a batch is an index into them, so there are no workers and
no per-image Python. Image folders are decoded by DataLoader workers to uint8 256x256. Either
way augmentation happens later, batched, in `augment.BatchTransform` on the training device.

Which images train, validate and evaluate is fixed by `splits.make_splits` (class-stratified,
seeded by data.subset_seed alone): the training subset, the validation split (data.val_size),
the train_clean sample (evaluated every epoch) and the test subset.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from ..errors import AlexlabError, DataError
from ..run_folder import atomic_write_text
from . import sources, splits
from .augment import BatchTransform

IMAGENET_PCA = {  # fb.resnet.torch's values for [0, 1] pixels (docs/PAPER.md, "PCA lighting")
    "eigval": [0.2175, 0.0188, 0.0045],
    "eigvec": [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
}
EVAL_BATCH_FACTOR = 4  # small in-memory sets: evaluation batches are this many training batches
CPU_EVAL_BATCH = 128   # ... on a CPU at most this many images (or one training batch, if larger)
DEVICE_SHARE = 0.25  # data.on_device=auto: an in-memory set goes to the GPU if it takes at most this share
STATS_SAMPLE = 2000  # image folders: statistics from this many training images (evenly spaced)


class EpochShuffle(Sampler[int]):
    """A permutation that depends only on (seed, epoch), so a run resumed at an epoch boundary
    sees exactly the batches an uninterrupted run would. Lightning calls set_epoch. Under DDP
    Lightning wraps it in its DistributedSamplerWrapper (set_epoch forwarded): every rank draws the
    same (seed, epoch) permutation, the wrapper permutes its positions once more from (seed, epoch)
    (PL_GLOBAL_SEED is `seed`) and gives rank r every W-th of them, so the shards are disjoint,
    cover the set (one padded by a repeat when W does not divide it) and depend on (seed, epoch)
    alone: a resumed DDP run replays them too (tests/reliability/test_ddp.py)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class EvalShard(DistributedSampler):
    """An evaluation sample under DDP: rank r takes images r, r + W, r + 2W, ... in order, each image
    exactly once over the ranks. Lightning would otherwise give evaluation loaders torch's
    DistributedSampler, which pads the last shard with repeats that torchmetrics then counts twice
    (test/acc over 46 images for a 45-image test set on 2 ranks). Being a DistributedSampler,
    Lightning leaves it in place."""

    def __init__(self, n: int, num_replicas: int, rank: int):
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.n = n

    def __iter__(self):
        return iter(range(self.rank, self.n, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))


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
        self._clean_loader: DataLoader | None = None

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
        self.splits = self._draw_splits()
        self.num_train, self.num_val, self.num_test = (len(self.splits.train), len(self.splits.val),
                                                       len(self.splits.test))
        if self.folder is None:  # the samples, held as tensors; the full sets are let go
            full_x, full_y = self.train_x, self.train_y
            self.train_x, self.train_y = full_x[self.splits.train], full_y[self.splits.train]
            self.val_x, self.val_y = full_x[self.splits.val], full_y[self.splits.val]
            self.clean_x, self.clean_y = full_x[self.splits.train_clean], full_y[self.splits.train_clean]
            self.test_x, self.test_y = self.test_x[self.splits.test], self.test_y[self.splits.test]
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

    def _draw_splits(self) -> splits.Splits:
        """The fixed, class-stratified samples (splits.py), after checking that the sizes asked for fit."""
        cfg = self.cfg
        in_memory = self.folder is None
        train_labels = self.train_y if in_memory else self.folder["train"].targets
        test_labels = self.test_y if in_memory else self.folder["test"].targets
        n_train = len(train_labels)
        val = splits.validation_count(cfg.val_size, n_train)
        if val >= n_train:
            raise DataError(f"data.val_size={cfg.val_size:g} holds out {val} of the {n_train} training images of "
                            f"{cfg.name}, leaving none to train on; give a smaller fraction or number of images (0 = none)")
        if cfg.train_subset is not None and cfg.train_subset > n_train - val:
            held = f" less the {val} held out by data.val_size={cfg.val_size:g} (at most {n_train - val})" if val else ""
            raise DataError(f"data.train_subset={cfg.train_subset} is larger than the {n_train} training images "
                            f"of {cfg.name}{held}")
        return splits.make_splits(train_labels, test_labels, val_count=val, train_size=cfg.train_subset,
                                  clean_size=self._train_clean_size_asked(), test_size=cfg.test_subset,
                                  subset_seed=cfg.subset_seed)

    def statistics(self) -> dict:
        """Pixel statistics of the training subset (never val or test images), computed once and
        cached in <paths.data>/stats/."""
        stats = self._dataset_statistics()
        if self.cfg.pca == "imagenet" and self.cfg.augment == "crop_flip_pca":
            if self.in_channels != 3:
                raise DataError(f"data.pca=imagenet needs RGB images but {self.cfg.name} has {self.in_channels} channel(s); "
                                f"use data.pca=dataset (1-D lighting from the pixel variance) or data.augment=crop_flip")
            stats = {**stats, **IMAGENET_PCA}
        return stats

    def _dataset_statistics(self) -> dict:
        # which images, not only how many: the subset depends on data.subset_seed and data.val_size
        key = f"{self.cfg.name}-{self.cfg.root or 'default'}-{splits.fingerprint(self.splits.train)}"
        if self.cfg.name == "synthetic":  # the generated images depend on how many are drawn
            key += f"-{self.cfg.num_train}-{self.cfg.num_classes}-{self.cfg.channels}-{self.cfg.size}"
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
        if self.folder is not None:  # evenly spaced over the sorted subset: every class in proportion
            train = self.folder["train"]
            step = max(1, self.num_train // STATS_SAMPLE)
            images = torch.stack([train[int(i)][0] for i in self.splits.train[::step]])
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
    def _device(self, nbytes: int) -> torch.device:
        """Where an in-memory set of `nbytes` lives: data.on_device=false on the CPU; true on the
        training device, always; auto there when it takes at most a quarter of the device's free
        memory (the rest is for the network), else on the CPU."""
        trainer = getattr(self, "trainer", None)
        target = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        mode = str(self.cfg.on_device).lower()
        if mode == "false":
            return torch.device("cpu")
        if target.type != "cuda":  # the CPU (or an MPS device): no memory of its own to weigh
            return target
        if mode == "auto" and nbytes > DEVICE_SHARE * torch.cuda.mem_get_info(target)[0]:
            return torch.device("cpu")
        return target

    def _to(self, t: torch.Tensor, device: torch.device) -> torch.Tensor:
        try:
            return t.to(device)
        except torch.cuda.OutOfMemoryError:
            raise DataError(f"data.on_device=true: the {self.cfg.name} images ({t.numel() * t.element_size() / 2**30:.1f} "
                            f"GiB) do not fit on {device}; use data.on_device=auto (keeps them on the CPU "
                            "when they do not fit) or false") from None

    def _eval_shard(self, n: int, shard: bool) -> EvalShard | None:
        """Under DDP, a validation loader's share of its n images (train_clean is not sharded: see
        train_clean_dataloader)."""
        trainer = getattr(self, "trainer", None)
        if not shard or trainer is None or trainer.world_size < 2:
            return None
        return EvalShard(n, trainer.world_size, trainer.global_rank)

    def _tensor_loader(self, x, y, shuffle: bool, shard: bool = False) -> DataLoader:
        device = self._device(x.numel() * x.element_size())
        x, y = self._to(x, device), self._to(y, device)
        sampler = EpochShuffle(len(x), self.seed) if shuffle else self._eval_shard(len(x), shard)
        # evaluation keeps no activations for backward: bigger batches, but on a CPU not past
        # 128 images, beyond which activations fall out of cache (alexnet_small: 512 is ~20% slower)
        batch_size = self.cfg.batch_size
        if not shuffle:
            batch_size *= EVAL_BATCH_FACTOR
            if device.type == "cpu":
                batch_size = min(batch_size, max(self.cfg.batch_size, CPU_EVAL_BATCH))
        return DataLoader(range(len(x)), batch_size=batch_size, sampler=sampler, shuffle=False,
                          collate_fn=IndexBatch(x, y), num_workers=0)

    def _folder_loader(self, dataset, shuffle: bool, shard: bool = False) -> DataLoader:
        sampler = EpochShuffle(len(dataset), self.seed) if shuffle else self._eval_shard(len(dataset), shard)
        workers = self.cfg.num_workers
        return DataLoader(dataset, batch_size=self.cfg.batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)

    def _eval_loader(self, split: str, shard: bool = False) -> DataLoader:
        """An evaluation loader (fixed order) over one of the samples: train_clean, val or test
        (`shard`: this rank's share under DDP)."""
        if self.folder is not None:
            source = self.folder["test" if split == "test" else "train"]
            return self._folder_loader(Subset(source, getattr(self.splits, split).tolist()), False, shard)
        x, y = {"train_clean": (self.clean_x, self.clean_y), "val": (self.val_x, self.val_y),
                "test": (self.test_x, self.test_y)}[split]
        return self._tensor_loader(x, y, False, shard)

    def _train_clean_size_asked(self) -> int:
        return self.eval_cfg.train_clean_size if self.eval_cfg is not None else 2000

    def train_clean_size(self) -> int:
        return len(self.splits.train_clean)

    def train_dataloader(self):
        if self.folder is not None:
            return self._folder_loader(Subset(self.folder["train"], self.splits.train.tolist()), shuffle=True)
        return self._tensor_loader(self.train_x, self.train_y, shuffle=True)

    def train_clean_dataloader(self) -> DataLoader:
        """The train_clean sample for the module's every-epoch pass (AlexLabModule.evaluate_train_clean),
        which runs outside Lightning's validation loop. Not sharded under DDP: every rank evaluates
        the whole sample with the same weights, so the counts torchmetrics sums over the ranks are
        the one-device counts times the number of ranks, and the accuracy is exactly the one-device
        value (a padded DistributedSampler would count a few images twice)."""
        if self._clean_loader is None:
            self._clean_loader = self._eval_loader("train_clean")
        return self._clean_loader

    def val_dataloader(self):
        """Lightning's validation loop, every eval.every_n_epochs: the validation split (when
        data.val_size holds one out) and the test set, in the order of `validation_names()`."""
        return [self._eval_loader(name, shard=True) for name in self.validation_names()]

    def validation_names(self) -> list[str]:
        return (["val"] if self.num_val > 0 else []) + ["test"]

    def eval_names(self) -> list[str]:
        """Every evaluated sample: train_clean (every epoch, when not empty), then validation_names()."""
        return (["train_clean"] if self.train_clean_size() > 0 else []) + self.validation_names()
