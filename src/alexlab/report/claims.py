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
more row of CLAIMS.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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


CLAIMS = (
    Claim("relu_speed", "tanh", "epochs_ratio", +1, "3.1",
          "ReLU reaches 25% training error faster than tanh",
          "6x faster (CIFAR-10, four-layer CNN, Figure 1)", 6.0, "6x",
          "Mishkin et al.: tanh top-1 acc 0.401 vs ReLU 0.470 (CaffeNet, 128 px)", None, delta=1.25),
    Claim("columns_error", "one_column", "test_error", +1, "3.2",
          "two columns (kernels split over two GPUs) lower test error",
          "+1.7 pt top-1, +1.2 pt top-5 vs one column with half the kernels", 1.7, "+1.7 pt", delta=1.0),
    Claim("lrn_error", "no_lrn", "test_error", +1, "3.3",
          "LRN lowers test error",
          "+1.4 pt top-1 without it (ImageNet); the CIFAR-10 figure (13% without vs 11% with) is for "
          "cuda-convnet's layers-11pct net (locally connected layers, crops, multi-view test), not the "
          "layers-18pct family that model=convnet4 follows", 1.4, "+1.4 pt",
          "VGG A vs A-LRN 29.6 vs 29.7 top-1; Mishkin et al. no LRN 0.471 vs 0.470 acc: no gain", -0.1, delta=1.0),
    Claim("overlap_error", "no_overlap", "test_error", +1, "3.4",
          "overlapping 3/2 pooling lowers test error",
          "+0.4 pt top-1 with 2/2 pooling", 0.4, "+0.4 pt",
          "Mishkin et al.: 2/2 pooling 0.484 vs 3/2 0.471 acc (2/2 better)", -1.3, delta=1.0),
    Claim("overlap_gap", "no_overlap", "gap", +1, "3.4",
          "overlapping pooling makes the net slightly harder to overfit",
          "'slightly more difficult to overfit' (no figure)", None, "> 0 (words)", delta=1.0),
    Claim("dropout_gap", "no_dropout", "gap", +1, "4.2",
          "without dropout the net overfits substantially",
          "'substantial overfitting' (no figure)", None, "> 0 (words)",
          "Mishkin et al.: dropout 0.3 beats 0.5 by 2.6 pt acc (short schedule)", None, delta=1.0),
    Claim("dropout_speed", "no_dropout", "epochs_ratio", -1, "4.2",
          "dropout roughly doubles the iterations needed to converge",
          "about 2x (read here: epochs to the eval-mode training-error threshold, no_dropout/paper = 0.5)",
          0.5, "0.5x", delta=1.25),
    Claim("augment_gap", "no_augment", "gap", +1, "4.1",
          "without data augmentation the net overfits substantially",
          "'substantial overfitting' (no figure)", None, "> 0 (words)", delta=1.0),
    Claim("augment_error", "no_augment", "test_error", +1, "4.1",
          "augmentation (crops, flips and PCA lighting together) lowers test error",
          "no figure for the three together; the paper says the net overfits substantially without "
          "augmentation", None, "> 0 (words)", delta=1.0),
    Claim("pca_error", "no_pca", "test_error", +1, "4.1",
          "PCA lighting lowers test error (crops and flips kept in both arms)",
          "PCA lighting alone: >= 1 pt top-1 (ImageNet)", 1.0, ">= +1 pt", delta=1.0),
    Claim("ten_crop_error", "paper", "ten_crop_gain", +1, "4.1",
          "averaging the softmax over 10 patches lowers test error (same runs, paired by run)",
          "39.0 -> 37.5 top-1, 18.3 -> 17.0 top-5 (ILSVRC-2010 test)", 1.5, "+1.5 pt", delta=1.0),
    # The questions the paper leaves open (docs/PAPER.md, "What later work found"): each arm against
    # the paper net in its own sweep (sweep=norm, pool_type, activation_speed, fc, conv_depth), so
    # they form their own Holm families. BN's smaller benefit of dropout is the batchnorm x
    # no_dropout interaction of sweep=norm_dropout's factorial, reported among its terms.
    Claim("bn_error", "batchnorm", "test_error", -1, "later",
          "batch normalisation in place of LRN lowers test error",
          "not in the paper", None, "–",
          "Ioffe & Szegedy (2015): BN replaced LRN and dropout in later nets", None, delta=1.0),
    Claim("bn_speed", "batchnorm", "epochs_ratio", -1, "later",
          "batch normalisation reaches the training-error threshold in fewer epochs",
          "not in the paper", None, "–",
          "Ioffe & Szegedy (2015): the same accuracy in 14x fewer steps (Inception, ImageNet, higher lr)",
          None, delta=1.25),
    Claim("avg_pool_error", "avg_pool", "test_error", +1, "later",
          "max pooling lowers test error compared with average pooling",
          "max pooling, no comparison", None, "–", delta=1.0),
    Claim("sigmoid_speed", "sigmoid", "epochs_ratio", +1, "later",
          "the sigmoid reaches the training-error threshold more slowly than ReLU",
          "Figure 1 compares ReLU with tanh only", None, "–",
          "Glorot & Bengio (2010): deep sigmoid nets train slowly (saturating top layer)", None, delta=1.25),
    Claim("sigmoid_error", "sigmoid", "test_error", +1, "later",
          "ReLU lowers test error compared with the sigmoid",
          "not in the paper", None, "–", delta=1.0),
    Claim("one_fc_error", "one_fc", "test_error", +1, "later",
          "two hidden FC layers lower test error compared with one",
          "two 4096-unit layers, no comparison", None, "–", delta=1.0),
    Claim("one_fc_gap", "one_fc", "gap", -1, "later",
          "one hidden FC layer (fewer parameters) overfits less",
          "not in the paper", None, "–", delta=1.0),
    Claim("narrow_fc_error", "narrow_fc", "test_error", +1, "later",
          "4096-unit FC layers lower test error compared with 1024-unit ones",
          "4096 units, no comparison", None, "–", delta=1.0),
    Claim("narrow_fc_gap", "narrow_fc", "gap", -1, "later",
          "narrower FC layers (fewer parameters) overfit less",
          "not in the paper", None, "–", delta=1.0),
    Claim("fewer_convs_error", "fewer_convs", "test_error", +1, "7",
          "removing a middle conv layer raises test error",
          "about +2 pt top-1 for removing any middle conv layer (Section 7)", 2.0, "+2 pt", delta=1.0),
    Claim("more_convs_error", "more_convs", "test_error", -1, "later",
          "a fourth 3x3 conv layer lowers test error",
          "no figure for adding a layer", None, "–",
          "VGG (2014): deeper stacks of 3x3 convolutions lowered error", None, delta=1.0),
)

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
