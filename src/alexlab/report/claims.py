"""The paper's claims that an ablation arm can test, with the paper's figure and later evidence.

Effects are ablation minus paper (the arm without the trick minus the arm with every trick), in
the units of METRICS: percentage points of error or gap, or a ratio of epochs. A metric with
`minus` is read within the same runs instead (10-patch testing: single-view error minus 10-patch
error of each `paper` run). A claim's `direction` is the sign the paper predicts for that effect
(+1: removing the trick makes the metric larger). `paper_value`/`later_value` restate the
figures in the effect's own units where the source gives a number (None where it only gives
words, or gives no figure for what this arm changes). `delta` is the smallest effect of interest,
in the same units (pt, or a ratio > 1 for "x"): an interval inside +-delta reads "no effect larger
than +-delta" (`alexlab-report --delta <claim>=<value>` replaces it).

A claim names an arm (conf/ablation/<arm>.yaml), not a sweep: whichever design compares that arm's
toggle value with the paper's answers it. One-at-a-time compares the arm itself; a levels sweep the
level the arm's file sets (sweep=dropout's p = 0 vs 0.5 answers dropout_gap and dropout_speed;
sweep=augment's none vs crop_flip_pca answers augment_gap and augment_error, crop_flip vs
crop_flip_pca answers pca_error); a factorial the main effect of that toggle. A new claim is one
more row of claims.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Metric:
    column: str       # column of the per-run frame
    label: str
    unit: str         # "pt" (x100 for display), "epochs", "x" (ratio, tested on the log scale)
    reading: str      # which epoch the value is read at
    best_of: str | None = None  # the same quantity read at the best epoch (shown beside, never judged)
    minus: str | None = None    # within-run effect: column - minus of the same run (no second arm)
    sides: tuple[str, str] = ("paper", "ablation")  # what the two means are, for tables
    needs: str = ""   # what a within-run effect needs, said when it could not be read


METRICS = {
    "test_error": Metric("test_error", "test error", "pt", "final epoch", "test_error_best"),
    "gap": Metric("gap", "gap (train_clean acc - test acc)", "pt", "final epoch", "gap_best"),
    "test_error_best": Metric("test_error_best", "best test error", "pt", "best epoch"),
    "gap_best": Metric("gap_best", "gap at the best epoch", "pt", "best epoch"),
    "best_epoch": Metric("best_epoch", "best epoch (0-based)", "epochs", "best epoch"),
    "epochs_ratio": Metric("epochs_to_error", "epochs to the training-error threshold (eval mode)", "x",
                           "train_clean error first below the threshold"),
    "ten_crop_gain": Metric("test_error", "test error, single view - 10 patches", "pt", "final epoch",
                            minus="test_error_10crop", sides=("single view", "10 patches"),
                            needs="completed `paper` run logged test/acc_10crop (eval.ten_crop=true)"),
}


@dataclass(frozen=True)
class Claim:
    id: str
    ablation: str      # conf/ablation/<name>.yaml (for a within-run metric: the arm whose runs are read)
    metric: str        # key of METRICS
    direction: int     # +1 or -1: the sign of (ablation - paper) the paper predicts
    section: str
    claim: str
    paper: str         # the paper's figure, as it states it
    paper_value: float | None
    short: str = ""    # the paper's figure in the effect's units, for the console
    later: str = ""    # later evidence, as published
    later_value: float | None = None
    delta: float = field(kw_only=True)  # smallest effect of interest: pt, or a ratio > 1 for unit "x"
    # a second arm: the claim is about the interaction ablation x interaction in a factorial (how much larger
    # the effect of one change is when the other is made too), never about either arm alone
    interaction: str = field(default="", kw_only=True)


def load_claims(path: Path = Path(__file__).with_name("claims.yaml")) -> tuple[Claim, ...]:
    """The claims table: claims.yaml beside this file, one row per claim, in the report's order."""
    return tuple(Claim(**row) for row in yaml.safe_load(path.read_text()))


CLAIMS = load_claims()

TRICKS = {  # ablation arm -> what it removes, for headings; the order is the report's order of arms
    "tanh": "ReLU -> tanh (Section 3.1)",
    "one_column": "one column with half the kernels per conv layer instead of two (Section 3.2)",
    "no_lrn": "no local response normalisation (Section 3.3)",
    "no_overlap": "2/2 instead of overlapping 3/2 pooling (Section 3.4)",
    "no_dropout": "no dropout (Section 4.2)",
    "no_augment": "no crops, flips or PCA lighting (Section 4.1)",
    "no_pca": "no PCA lighting, crops and flips kept (Section 4.1)",
    "batchnorm": "batch normalisation after every conv in place of LRN (later work)",
    "avg_pool": "average instead of max pooling (later work)",
    "sigmoid": "ReLU -> sigmoid (later work)",
    "one_fc": "one hidden FC layer instead of two (later work)",
    "narrow_fc": "1024-unit instead of 4096-unit hidden FC layers (later work)",
    "fewer_convs": "two 3x3 conv layers after conv2 instead of three (Section 7)",
    "more_convs": "four 3x3 conv layers after conv2 instead of three (later work)",
}
