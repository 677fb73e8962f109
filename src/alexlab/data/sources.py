"""Readers for each data set's real on-disk format, returning uint8 (N, C, H, W) tensors.

fashion_mnist: the original idx files (gzipped or not): data.root, then the Debian package's
  /usr/share/datasets/fashion-mnist, then a torchvision download into paths.data.
cifar10: torchvision's python pickles (cifar-10-batches-py/), or its download.
imagefolder: <root>/train/<class>/*.jpg and <root>/val/<class>/*.jpg (Imagenette, ImageNet),
  decoded per image: shorter side to 256, centre 256x256 (Section 2).
synthetic: class-dependent patterns plus noise, learnable in a few steps (tests, benchmarks).
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (magic 0x00 0x00 type ndim, big-endian sizes, then the data)."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte idx file")
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        if data.size != int(np.prod(shape)):
            raise ValueError(f"holds {data.size} bytes of data, header says {int(np.prod(shape))}")
        return data.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error, zlib.error) as err:  # zlib.error: damaged deflate data
        raise DataError(f"cannot read idx file {path}: {err}; delete it and re-download, "
                        f"or `apt-get install dataset-fashion-mnist`") from None


def check_labels(labels: np.ndarray, num_classes: int, source: Path) -> None:
    """Every label a class index, in [0, num_classes): an out-of-range label would index past the
    classifier's outputs (a CUDA assert or a traceback mid-epoch) long after the file was read."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels in {source} run from {labels.min()} to {labels.max()}, outside [0, {num_classes}) "
                        f"for its {num_classes} classes; the file is damaged or of another data set: delete it and "
                        "re-download")


def _find_idx(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def load_fashion_mnist(root: str | None, download_dir: str, download: bool):
    dirs = [Path(p) for p in (root, DEBIAN_FASHION_MNIST, download_dir) if p]
    dirs += [d / "FashionMNIST" / "raw" for d in list(dirs)]
    if _find_idx(dirs, FASHION_FILES["train"][0]) is None and download:
        try:
            from torchvision.datasets import FashionMNIST
            FashionMNIST(download_dir, train=True, download=True)
            FashionMNIST(download_dir, train=False, download=True)
        except Exception as err:  # offline, mirror down, disk full...
            raise DataError(f"Fashion-MNIST not found in {', '.join(map(str, dirs[:3]))} and the download "
                            f"failed ({type(err).__name__}); `apt-get install dataset-fashion-mnist` or set data.root") from None
    out = []
    for split in ("train", "test"):
        paths = [_find_idx(dirs, stem) for stem in FASHION_FILES[split]]
        if None in paths:
            raise DataError(f"Fashion-MNIST idx files not found in {', '.join(map(str, dirs[:3]))}; "
                            f"`apt-get install dataset-fashion-mnist`, set data.root, or allow data.download=true")
        images, labels = (read_idx(p) for p in paths)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"idx files {paths[0]} and {paths[1]} do not match (images {images.shape}, labels {labels.shape})")
        check_labels(labels, len(FASHION_CLASSES), paths[1])
        out += [torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))]
    return (*out, FASHION_CLASSES)


def _read_cifar_batch(path: Path):
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
        if len(labels) != len(data):
            raise ValueError("labels and images differ in number")
    except Exception as err:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {type(err).__name__}: {err}; "
                        f"delete {path.parent} and re-download (data.download=true)") from None
    check_labels(labels, len(CIFAR10_CLASSES), path)
    return data, labels


def load_cifar10(root: str | None, download_dir: str, download: bool):
    base = Path(root or download_dir)
    folder = base / "cifar-10-batches-py"
    if not folder.is_dir() and download:
        try:
            from torchvision.datasets import CIFAR10
            CIFAR10(str(base), train=True, download=True)
        except Exception as err:
            raise DataError(f"CIFAR-10 not found at {folder} and the download failed ({type(err).__name__}); "
                            f"put torchvision's cifar-10-batches-py there or set data.root") from None
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 not found at {folder}; set data.root to the folder holding "
                        f"cifar-10-batches-py/, or data.download=true")
    train = [_read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = _read_cifar_batch(folder / "test_batch")
    train_x = np.concatenate([b[0] for b in train])
    train_y = np.concatenate([b[1] for b in train])
    return (torch.from_numpy(train_x), torch.from_numpy(train_y),
            torch.from_numpy(test_x), torch.from_numpy(test_y), CIFAR10_CLASSES)


def make_synthetic(num_train: int, num_test: int, channels: int, num_classes: int, size: int, seed: int = 0):
    """Each class a fixed random low-frequency pattern; images = pattern + noise. Learnable."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=g)
    patterns = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def draw(n):
        labels = torch.randint(0, num_classes, (n,), generator=g)
        noise = torch.randn(n, channels, size, size, generator=g) * 0.15
        images = ((patterns[labels] * 0.7 + 0.15 + noise).clamp(0, 1) * 255).to(torch.uint8)
        return images, labels

    train_x, train_y = draw(num_train)
    test_x, test_y = draw(num_test)
    return train_x, train_y, test_x, test_y, tuple(f"class{i}" for i in range(num_classes))


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".JPEG")


class ImageFolderSource(torch.utils.data.Dataset):
    """One split of an image-folder data set, decoded to uint8 (3, resize, resize) tensors."""

    def __init__(self, folder: Path, resize: int = 256, classes: list[str] | None = None):
        from torchvision.datasets import ImageFolder
        from torchvision.transforms import v2

        if not folder.is_dir():
            raise DataError(f"image folder {folder} does not exist; expected <data.root>/train/<class>/*.jpg "
                            f"and <data.root>/val/<class>/*.jpg (e.g. Imagenette)")
        try:
            self.inner = ImageFolder(str(folder), allow_empty=False)
        except (FileNotFoundError, RuntimeError) as err:
            raise DataError(f"image folder {folder} has no images in class sub-folders ({err}); "
                            f"expected {folder}/<class>/*.jpg") from None
        if classes is not None and list(self.inner.classes) != list(classes):
            raise DataError(f"classes in {folder} differ from the training folder's; both need the same sub-folders")
        self.classes = self.inner.classes
        # Section 2: rescale so the shorter side is 256, then take the central 256x256 patch.
        self.transform = v2.Compose([v2.PILToTensor(), v2.Resize(resize, antialias=True), v2.CenterCrop(resize)])
        self.targets = torch.as_tensor(self.inner.targets)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i):
        path, label = self.inner.samples[i]
        try:
            image = self.inner.loader(path).convert("RGB")
        except Exception as err:
            raise DataError(f"cannot decode image {path}: {err}") from None
        return self.transform(image), label
