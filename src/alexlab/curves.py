"""Readings of a run's per-epoch curves that the run's summary and the report both take.

The speed claims (ReLU vs tanh, dropout's slower convergence) are read from the training
error *in eval mode* (`train_clean/acc`: no dropout, no augmentation, a fixed sample of the
training images). The as-trained `train/acc` is depressed by dropout and augmentation
themselves, so a trick that regularises would look "slower" whether or not it learns slower.
"""
from __future__ import annotations

import math
from typing import Iterable

TRAIN_ERROR_COLUMN = "train_clean/acc"


def epochs_to_error(points: Iterable[tuple[float, float | None]], threshold: float) -> float | None:
    """Epochs of training until the training error first falls below `threshold`.

    `points` are (epoch, accuracy) pairs as metrics.csv holds them: the row of epoch e (0-based)
    was measured after e + 1 epochs of training. Between two evaluated epochs the error is
    interpolated linearly, so the result is a fraction of an epoch (the paper's Figure 1 reads a
    curve, and whole epochs would tie most paired runs). A run already below the threshold at
    its first evaluation gives that evaluation's epoch count. None: never below it (the time is
    then censored at the number of epochs trained)."""
    seen = sorted((float(e) + 1.0, 1.0 - float(a)) for e, a in points
                  if a is not None and not (isinstance(a, float) and math.isnan(a)))
    for i, (x, err) in enumerate(seen):
        if err < threshold:
            if i == 0:
                return x
            x0, err0 = seen[i - 1]
            return x0 + (err0 - threshold) / (err0 - err) * (x - x0)
    return None
