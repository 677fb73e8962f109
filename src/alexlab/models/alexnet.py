"""The AlexNet family in one file: a variant table, one configurable class, one builder.

Every trick of the paper is a constructor keyword (activation, pooling, lrn, dropout, one_column), so a
config toggle reaches the network in a straight line: conf/ -> config.ModelConfig -> build_model.
"""
from __future__ import annotations

import fnmatch
import inspect
import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from .lrn import LocalResponseNorm


@dataclass(frozen=True)
class Variant:
    """Topology of one family member; channel and unit counts are at width 1.0."""
    convs: tuple[tuple[int, int, int, int, bool], ...]  # (out channels, kernel, stride, padding, split in two columns)
    pool_after: tuple[int, ...]  # conv indices followed by max pooling
    lrn_after: tuple[int, ...]   # conv indices followed by LRN (after the activation, before the pool)
    hidden: tuple[int, ...]      # hidden fully connected layers, each preceded by dropout
    padded_pooling: bool         # small inputs: pad the 3/2 pool and ceil the 2/2 pool so both give the same size
    image_size: int              # the input size the variant was designed for
    paper_bias: tuple[str, ...]  # layers (see layer_names) whose bias is `bias_init` under init=paper, by role
    description: str

    def layer_names(self) -> tuple[str, ...]:
        """conv1..convN, then the hidden FC layers fc<N+1>.. (the classifier is never listed)."""
        n = len(self.convs)
        return tuple(f"conv{i + 1}" for i in range(n)) + tuple(f"fc{n + j + 1}" for j in range(len(self.hidden)))


# fmt: off
VARIANTS: dict[str, Variant] = {}


def register_variant(name: str, variant: Variant) -> None:
    if name in VARIANTS:
        raise ValueError(f"model variant '{name}' is already registered")
    unknown = sorted(set(variant.paper_bias) - set(variant.layer_names()))
    if unknown:  # a misspelt layer would silently keep bias 0
        raise ValueError(f"model variant '{name}': paper_bias names {', '.join(unknown)}, which it does not have; "
                         f"its layers: {', '.join(variant.layer_names())}")
    VARIANTS[name] = variant


def list_variants(pattern: str = "*") -> list[str]:
    return sorted(n for n in VARIANTS if fnmatch.fnmatch(n, pattern))


# The paper's network (Section 3.5, Figure 2). Input 227x227: 55 -> 27 -> 27 -> 13 -> 13 -> 6.
register_variant("alexnet", Variant(
    convs=((96, 11, 4, 0, False), (256, 5, 1, 2, True), (384, 3, 1, 1, False),
           (384, 3, 1, 1, True), (256, 3, 1, 1, True)),
    pool_after=(0, 1, 4), lrn_after=(0, 1), hidden=(4096, 4096),
    padded_pooling=False, image_size=227,
    paper_bias=("conv2", "conv4", "conv5", "fc6", "fc7"),  # Section 5: bias 1 in these, 0 elsewhere
    description="the paper's 227-px net; split columns when groups=2"))

# Same 5-conv/3-FC topology for 28-32 px inputs: conv1 5x5 stride 1 (an 11x11/4 conv would
# leave 6x6 maps), pools padded so 32 -> 16 -> 8 -> 4 (28 -> 14 -> 7 -> 4).
register_variant("alexnet_small", replace(
    VARIANTS["alexnet"], convs=((96, 5, 1, 2, False),) + VARIANTS["alexnet"].convs[1:],
    padded_pooling=True, image_size=32,
    description="AlexNet topology for 28-32 px images (5x5 stride-1 conv1)"))

# cuda-convnet's CIFAR-10 net "layers-18pct": three 5x5 convs (32, 32, 64), 3/2 pools and
# response normalisation, then one softmax layer; cuda-convnet reports about 18% test error with
# response normalisation and about 19% without. Zero biases, as layers-18pct initialises them.
# Not the net of the paper's CIFAR-10 LRN figure (13% -> 11% test error): that one is the
# layers-11pct family (two conv layers, then locally connected layers, 24-px crops + flips,
# several test views). Used here for Figure 1 (ReLU vs tanh, sweep=relu_vs_tanh).
register_variant("convnet4", Variant(
    convs=((32, 5, 1, 2, False), (32, 5, 1, 2, False), (64, 5, 1, 2, False)),
    pool_after=(0, 1, 2), lrn_after=(0, 1), hidden=(),
    padded_pooling=True, image_size=32, paper_bias=(),
    description="cuda-convnet's layers-18pct: 3 conv + 1 FC (~18% CIFAR-10 test error with LRN, ~19% without)"))
# fmt: on


def one_column_variant(spec: Variant) -> Variant:
    """The net the paper compares its two columns with (Section 3.2 and its footnote): one column,
    no split, half the kernels in every conv layer but the last. The last conv layer and the FC
    layers keep the two-column sizes, so both nets have about the same number of parameters."""
    if not any(split for *_, split in spec.convs):
        raise ValueError("one_column replaces a variant's two columns, and this one has none (no split conv layer)")
    last = len(spec.convs) - 1
    convs = tuple((out if i == last else out // 2, kernel, stride, padding, False)
                  for i, (out, kernel, stride, padding, _) in enumerate(spec.convs))
    return replace(spec, convs=convs, description=f"{spec.description}; one column, half the kernels in conv1-conv{last}")


def _pool_out(size: int, overlapping: bool, padded: bool) -> int:
    if overlapping:
        return (size + 2 * int(padded) - 3) // 2 + 1
    return math.ceil(size / 2) if padded else size // 2


# The values each toggle takes and what each builds: config.validate's allowed values come from here.
ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "tanh": nn.Tanh}
POOLING_OVERLAPS = {"overlapping": True, "non_overlapping": False}  # 3/2 pools overlap, 2/2 do not
INITS = ("paper", "kaiming", "default")  # see AlexNet.reset_parameters


def _scaled(channels: int, width: float, multiple: int) -> int:
    return max(multiple, int(round(channels * width / multiple)) * multiple)


class AlexNet(nn.Module):
    def __init__(self, variant: str | Variant = "alexnet", num_classes: int = 1000, in_channels: int = 3,
                 image_size: int | None = None, activation: str = "relu", pooling: str = "overlapping",
                 lrn: bool = True, dropout: float = 0.5, groups: int = 1, width: float = 1.0,
                 init: str = "paper", bias_init: float = 1.0, lrn_size: int = 5, lrn_alpha: float = 1e-4,
                 lrn_beta: float = 0.75, lrn_k: float = 2.0, one_column: bool = False):
        super().__init__()
        spec = VARIANTS[variant] if isinstance(variant, str) else variant
        if one_column:  # the single column replaces the two: `groups` no longer applies
            spec, groups = one_column_variant(spec), 1
        image_size = image_size or spec.image_size
        act = ACTIVATIONS[activation]
        self.activation = activation
        overlapping = POOLING_OVERLAPS[pooling]
        if spec.padded_pooling:
            pool = (lambda: nn.MaxPool2d(3, 2, padding=1)) if overlapping else (lambda: nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            pool = (lambda: nn.MaxPool2d(3, 2)) if overlapping else (lambda: nn.MaxPool2d(2, 2))

        layers: list[nn.Module] = []
        self.feature_sizes: list[tuple[str, int]] = []  # (layer name, spatial size) for docs and tests
        self.bias_one: list[nn.Module] = []  # the variant's paper_bias layers (bias `bias_init` under init=paper)
        names = spec.layer_names()
        channels, size = in_channels, image_size
        for i, (out, kernel, stride, padding, split) in enumerate(spec.convs):
            out = _scaled(out, width, groups)
            conv = nn.Conv2d(channels, out, kernel, stride, padding, groups=groups if split else 1)
            layers += [conv, act()]
            if names[i] in spec.paper_bias:
                self.bias_one.append(conv)
            size = (size + 2 * padding - kernel) // stride + 1
            self.feature_sizes.append((names[i], size))
            if lrn and i in spec.lrn_after:
                layers.append(LocalResponseNorm(lrn_size, lrn_alpha, lrn_beta, lrn_k))
            if i in spec.pool_after:
                layers.append(pool())
                size = _pool_out(size, overlapping, spec.padded_pooling)
                self.feature_sizes.append((f"pool{i + 1}", size))
            channels = out
        if size < 1:
            raise ValueError(f"image_size={image_size} is too small for model variant {variant!r}")
        self.features = nn.Sequential(*layers)

        head: list[nn.Module] = [nn.Flatten()]
        units = channels * size * size
        self.num_features = units
        for j, hidden in enumerate(spec.hidden):
            hidden = _scaled(hidden, width, 1)
            fc = nn.Linear(units, hidden)
            if names[len(spec.convs) + j] in spec.paper_bias:
                self.bias_one.append(fc)
            head += [nn.Dropout(dropout), fc, act()]
            units = hidden
        if not spec.hidden:  # convnet4: the toggle drops the FC layer's inputs
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(units, num_classes))
        self.classifier = nn.Sequential(*head)
        self.reset_parameters(init, bias_init)

    def reset_parameters(self, init: str, bias_init: float) -> None:
        """'paper': N(0, 0.01) weights, bias `bias_init` in the variant's paper_bias layers (the
        paper's conv2/4/5 and hidden FC; none in convnet4), 0 elsewhere (Section 5; Caffe used 0.1
        because 1 can stall). 'kaiming': He-normal weights for the
        activation, zero biases (classifier N(0, 0.01)): the signal keeps its scale through all
        layers, so short runs learn from the first step. 'default': PyTorch's own init (shrinks the signal ~6x in
        variance per ReLU layer, so deep nets without normalisation start slowly)."""
        if init == "default":
            return
        for m in self.modules():
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            if init == "kaiming" and m is not self.classifier[-1]:
                nn.init.kaiming_normal_(m.weight, nonlinearity=self.activation)
                nn.init.zeros_(m.bias)
            elif init == "kaiming":  # near-uniform first predictions: no large early gradients
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            else:
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, bias_init if any(m is b for b in self.bias_one) else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# the keywords a model config sets (the rest of AlexNet's signature comes from the data set)
TOGGLES = tuple(p for p in inspect.signature(AlexNet).parameters
                if p not in ("variant", "num_classes", "in_channels", "image_size"))


def build_model(model_cfg, num_classes: int, in_channels: int, image_size: int) -> AlexNet:
    """Build a family member from a model config (DictConfig or dict; see config.ModelConfig). Keys
    the config does not set take AlexNet's own defaults, which are the paper's values."""
    name = model_cfg.get("name", "alexnet")
    if name not in VARIANTS:
        raise ValueError(f"model.name='{name}' is not a registered variant; choose one of: {', '.join(list_variants())}")
    kwargs = {key: model_cfg[key] for key in TOGGLES if key in model_cfg}
    return AlexNet(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
