"""The fixed samples of a data set's images a run uses: the validation split, the training
subset, the train_clean sample and the test subset.

"The first N images" is not a sample: torchvision's ImageFolder lists images class by class, so
on Imagenette or ImageNet it would hold one or two classes. Every sample here is
class-stratified: each class gets its largest-remainder share of the sample (within one image
of its proportional share of the set the sample is drawn from), and which of its images is a
prefix or suffix of a per-class permutation drawn from (data.subset_seed, split, class) alone.
`seed` never enters, so every arm and every seed of a sweep sees the same images (paired), and
taking prefixes makes samples of different sizes nest (a 1,000-image subset lies inside the
5,000-image one whenever no class's allocation shrinks, which largest remainder almost always
guarantees).

Per class of the training set: [ training subset ... | unused | validation ]
                                 [ train_clean ... ]
The validation split is the permutation's suffix and the training subset its prefix, so the two
are disjoint and a training subset keeps its size whatever the validation split holds out.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

TRAIN_STREAM, TEST_STREAM = 0, 1  # the training and test sets draw from separate streams


@dataclass(frozen=True)
class Splits:
    """Sorted int64 indices: `train`, `val` and `train_clean` into the training set (train_clean
    a subset of train, val disjoint from both), `test` into the test set."""
    train: torch.Tensor
    val: torch.Tensor
    train_clean: torch.Tensor
    test: torch.Tensor


def validation_count(val_size: float, num_images: int) -> int:
    """Images data.val_size holds out of `num_images`: 0 -> none, a fraction in (0, 1) -> that
    share rounded (at least one image), >= 1 -> that many."""
    if val_size <= 0:
        return 0
    if val_size < 1:
        return max(1, round(val_size * num_images))
    return int(val_size)


def largest_remainder(counts, n: int) -> np.ndarray:
    """`n` images shared among classes in proportion to `counts`: each class gets the integer part
    of its share n * count / total, and the images left over go to the largest fractional parts
    (ties to the lower class index). So each class is within one image of its share, and no class
    gets more than it has. Integer arithmetic: no float ties."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= n <= total:
        raise ValueError(f"cannot draw {n} of {total} images")
    if total == 0:
        return counts.copy()
    scaled = counts * n
    share = scaled // total
    remainder = scaled - share * total
    left = n - int(share.sum())
    by_remainder = np.lexsort((np.arange(len(counts)), -remainder))  # largest first, then class index
    share[by_remainder[:left]] += 1
    return share


def class_orders(labels, subset_seed: int, stream: int) -> list[np.ndarray]:
    """For each class present in `labels` (in label order): the indices of its images in a random
    order that depends on (subset_seed, stream, class) only."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    members = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1])
    return [idx[np.random.default_rng([subset_seed, stream, int(c)]).permutation(len(idx))]
            for c, idx in zip(classes, members)]


def _sorted(parts) -> torch.Tensor:
    parts = list(parts)
    joined = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(np.sort(joined).astype(np.int64))


def make_splits(train_labels, test_labels, *, val_count: int, train_size: int | None, clean_size: int,
                test_size: int | None, subset_seed: int) -> Splits:
    """The four samples (see the module's docstring). `train_size` None: every training image
    the validation split leaves; `test_size` None: the whole test set. Sizes larger than what is
    there are the caller's to refuse (ValueError here)."""
    orders = class_orders(train_labels, subset_seed, TRAIN_STREAM)
    counts = np.array([len(o) for o in orders], dtype=np.int64)
    val_n = largest_remainder(counts, val_count)
    left = counts - val_n
    train_n = left if train_size is None else largest_remainder(left, train_size)
    clean_n = largest_remainder(train_n, min(clean_size, int(train_n.sum())))
    test_orders = class_orders(test_labels, subset_seed, TEST_STREAM)
    test_counts = np.array([len(o) for o in test_orders], dtype=np.int64)
    test_n = test_counts if test_size is None else largest_remainder(test_counts, min(test_size, int(test_counts.sum())))
    return Splits(train=_sorted(o[:k] for o, k in zip(orders, train_n)),
                  val=_sorted(o[len(o) - k:] for o, k in zip(orders, val_n)),
                  train_clean=_sorted(o[:k] for o, k in zip(orders, clean_n)),
                  test=_sorted(o[:k] for o, k in zip(test_orders, test_n)))


def fingerprint(indices: torch.Tensor) -> str:
    """A short hash of which images an index set holds (cache keys of per-subset statistics)."""
    return hashlib.sha1(indices.numpy().astype("<i8").tobytes()).hexdigest()[:12]
