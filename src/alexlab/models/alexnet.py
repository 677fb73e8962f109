"""The AlexNet family in one file: a variant table, one configurable class, one builder.

Every trick of the paper is a constructor keyword (activation, pooling, norm, dropout, one_column), and so
is every question later work asked of it (pool_type, fc_layers, fc_width, conv_depth, norm=batchnorm), so
a config toggle reaches the network in a straight line: conf/ -> config.ModelConfig -> build_model.
"""
from __future__ import annotations

import fnmatch
import inspect
import math
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from .lrn import LocalResponseNorm
from .pool import MaxPool2d


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
    stack_start: int | None = None  # index of the first layer of the 3x3 stack conv_depth resizes (the paper's
                                    # conv3: conv3-conv5); None = the conv layers are fixed

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
    if variant.stack_start is not None and not stack_is_resizable(variant):  # resized_variant would misplace them
        raise ValueError(f"model variant '{name}': its stack (conv{variant.stack_start + 1} on) must be at least one "
                         "layer, with no LRN inside it and no pool but after its last layer")
    VARIANTS[name] = variant


def stack_is_resizable(variant: Variant) -> bool:
    start, last = variant.stack_start, len(variant.convs) - 1
    return (0 < start <= last and not set(range(start, last)) & set(variant.pool_after)
            and not set(range(start, last + 1)) & set(variant.lrn_after))


def list_variants(pattern: str = "*") -> list[str]:
    return sorted(n for n in VARIANTS if fnmatch.fnmatch(n, pattern))


# The paper's network (Section 3.5, Figure 2). Input 227x227: 55 -> 27 -> 27 -> 13 -> 13 -> 6.
register_variant("alexnet", Variant(
    convs=((96, 11, 4, 0, False), (256, 5, 1, 2, True), (384, 3, 1, 1, False),
           (384, 3, 1, 1, True), (256, 3, 1, 1, True)),
    pool_after=(0, 1, 4), lrn_after=(0, 1), hidden=(4096, 4096),
    padded_pooling=False, image_size=227,
    paper_bias=("conv2", "conv4", "conv5", "fc6", "fc7"),  # Section 5: bias 1 in these, 0 elsewhere
    description="the paper's 227-px net; split columns when groups=2", stack_start=2))

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
ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
POOLING_OVERLAPS = {"overlapping": True, "non_overlapping": False}  # 3/2 pools overlap, 2/2 do not
# Average pools skip the padding in their mean, as max pools do in their max (count_include_pad=False):
# padding then decides the output size only, never a value; with it counted, a border unit of a
# sigmoid or tanh net would be pulled towards 0, which is no neutral value for them.
POOL_TYPES = {"max": MaxPool2d, "avg": partial(nn.AvgPool2d, count_include_pad=False)}
NORMS = ("lrn", "batchnorm", "none")  # see AlexNet: LRN after conv1/2's activation | BN after every conv | neither
FC_LAYER_COUNTS = (1, 2)  # hidden FC layers (the paper: 2)
INITS = ("paper", "kaiming", "default")  # see AlexNet.reset_parameters

# The paper's head and 3x3 stack (Figure 2), the defaults of fc_layers, fc_width and conv_depth.
PAPER_NET = VARIANTS["alexnet"]
FC_LAYERS, FC_WIDTH = len(PAPER_NET.hidden), PAPER_NET.hidden[0]  # 2 hidden layers of 4096 units
CONV_DEPTH = len(PAPER_NET.convs) - PAPER_NET.stack_start         # 3: conv3, conv4, conv5 (384, 384, 256)


def _copied(k: int, count: int, length: int) -> int:
    """Which of a variant's `length` stack (or hidden) layers the k-th of `count` new ones copies, by
    role: the first stays the first, the last the last, and every one between copies the second."""
    if count == length or k == 0:
        return k
    return length - 1 if k == count - 1 else min(1, length - 1)


def resize_problem(spec: Variant, conv_depth: int, fc_layers: int, fc_width: int) -> tuple[str, str] | None:
    """(toggle, why) when a toggle asks to resize layers this variant does not have, else None."""
    if spec.stack_start is None and conv_depth != CONV_DEPTH:
        having = ", ".join(n for n in list_variants() if VARIANTS[n].stack_start is not None)
        return "conv_depth", (f"it has no stack of 3x3 conv layers to resize (leave it at {CONV_DEPTH}; "
                              f"{having} have one)")
    for key, value, paper in (("fc_layers", fc_layers, FC_LAYERS), ("fc_width", fc_width, FC_WIDTH)):
        if not spec.hidden and value != paper:
            having = ", ".join(n for n in list_variants() if VARIANTS[n].hidden)
            return key, (f"it has no hidden FC layers, its convs feed the classifier (leave it at {paper}; "
                         f"{having} have them)")
    return None


def resized_variant(spec: Variant, conv_depth: int = CONV_DEPTH, fc_layers: int = FC_LAYERS,
                    fc_width: int = FC_WIDTH) -> Variant:
    """spec with `conv_depth` layers in its 3x3 stack and `fc_layers` hidden FC layers of `fc_width`
    units (at width 1); a toggle at the paper's value keeps the variant's own layers (for alexnet and
    alexnet_small, the paper's). Stack layer k of d: the first keeps conv3's role (reads both columns,
    bias 0), the last has conv5's 256 channels, those between are conv4s (384, split, bias 1): depth d
    is d-1 layers of 384 then one of 256 (depth 1: one unsplit 256), and the last pool follows the
    last conv. The paper's bias 1 goes by role: each new layer gets that of the layer it copies."""
    problem = resize_problem(spec, conv_depth, fc_layers, fc_width)
    if problem:
        value = {"conv_depth": conv_depth, "fc_layers": fc_layers, "fc_width": fc_width}[problem[0]]
        raise ValueError(f"{problem[0]}={value} is not valid for this variant: {problem[1]}")
    origin = list(range(len(spec.convs)))  # new layer -> index (in spec.layer_names()) of the layer it copies
    convs, pool_after, hidden = spec.convs, spec.pool_after, spec.hidden
    if conv_depth != CONV_DEPTH:
        start, last = spec.stack_start, len(spec.convs) - 1
        copies = [start + _copied(k, conv_depth, last - start + 1) for k in range(conv_depth)]
        convs = spec.convs[:start] + tuple((spec.convs[last][0] if k == conv_depth - 1 else spec.convs[c][0],)
                                           + spec.convs[c][1:] for k, c in enumerate(copies))
        origin = origin[:start] + copies
        last_pool = (len(convs) - 1,) if last in spec.pool_after else ()
        pool_after = tuple(i for i in spec.pool_after if i < start) + last_pool
    if (fc_layers, fc_width) != (FC_LAYERS, FC_WIDTH):
        hidden = (fc_width,) * fc_layers
    origin += [len(spec.convs) + _copied(j, len(hidden), len(spec.hidden)) for j in range(len(hidden))]
    resized = replace(spec, convs=convs, pool_after=pool_after, hidden=hidden)
    old, new = spec.layer_names(), resized.layer_names()
    return replace(resized, paper_bias=tuple(new[i] for i, o in enumerate(origin) if old[o] in spec.paper_bias))


def _scaled(channels: int, width: float, multiple: int) -> int:
    return max(multiple, int(round(channels * width / multiple)) * multiple)


def _pool_maker(pool_type: str, overlapping: bool, padded: bool):
    """Both pool types at the same size, stride and padding (so the same output sizes, _pool_out)."""
    kind = POOL_TYPES[pool_type]
    if overlapping:
        return lambda: kind(3, 2, padding=int(padded))
    return lambda: kind(2, 2, ceil_mode=padded)


class AlexNet(nn.Module):
    def __init__(self, variant: str | Variant = "alexnet", num_classes: int = 1000, in_channels: int = 3,
                 image_size: int | None = None, activation: str = "relu", pooling: str = "overlapping",
                 pool_type: str = "max", norm: str = "lrn", dropout: float = 0.5, fc_layers: int = FC_LAYERS,
                 fc_width: int = FC_WIDTH, conv_depth: int = CONV_DEPTH, groups: int = 1, width: float = 1.0,
                 init: str = "paper", bias_init: float = 1.0, lrn_size: int = 5, lrn_alpha: float = 1e-4,
                 lrn_beta: float = 0.75, lrn_k: float = 2.0, one_column: bool = False):
        super().__init__()
        spec = resized_variant(VARIANTS[variant] if isinstance(variant, str) else variant, conv_depth, fc_layers,
                               fc_width)
        if one_column:  # the single column replaces the two: `groups` no longer applies
            spec, groups = one_column_variant(spec), 1
        image_size = image_size or spec.image_size
        act = ACTIVATIONS[activation]
        self.activation = activation
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not valid; choose one of: {', '.join(NORMS)}")
        overlapping = POOLING_OVERLAPS[pooling]
        pool = _pool_maker(pool_type, overlapping, spec.padded_pooling)

        layers: list[nn.Module] = []
        self.feature_sizes: list[tuple[str, int]] = []  # (layer name, spatial size) for docs and tests
        self.bias_one: list[nn.Module] = []  # the variant's paper_bias layers (bias `bias_init` under init=paper)
        names = spec.layer_names()
        channels, size = in_channels, image_size
        for i, (out, kernel, stride, padding, split) in enumerate(spec.convs):
            out = _scaled(out, width, groups)
            # Ioffe & Szegedy: normalise the conv's output before the nonlinearity; BN's shift then does the
            # bias's work (a bias before it would be subtracted away with the mean), so the conv has none
            conv = nn.Conv2d(channels, out, kernel, stride, padding, groups=groups if split else 1,
                             bias=norm != "batchnorm")
            layers.append(conv)
            shifted = conv  # the module whose bias (or BN shift) is the layer's bias
            if norm == "batchnorm":
                shifted = nn.BatchNorm2d(out)
                layers.append(shifted)
            layers.append(act())
            if names[i] in spec.paper_bias:
                self.bias_one.append(shifted)
            size = (size + 2 * padding - kernel) // stride + 1
            self.feature_sizes.append((names[i], size))
            if norm == "lrn" and i in spec.lrn_after:
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
        because 1 can stall). 'kaiming': He-normal weights for the activation (gain sqrt 2 for relu,
        5/3 tanh, 1 sigmoid), zero biases (classifier N(0, 0.01)): the signal keeps its scale through
        all layers, so short runs learn from the first step. 'default': PyTorch's own init (shrinks the
        signal ~6x in variance per ReLU layer, so deep nets without normalisation start slowly).
        Under norm=batchnorm each BN starts at scale 1 and, as its shift stands for its conv's bias,
        at the bias that conv would have had (bias_init in the paper's layers under 'paper', else 0)."""
        if init == "default":
            return
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.constant_(m.bias, self.initial_bias(m, init, bias_init))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                if init == "kaiming" and m is not self.classifier[-1]:
                    nn.init.kaiming_normal_(m.weight, nonlinearity=self.activation)
                else:  # paper; and kaiming's classifier: near-uniform first predictions, no large early gradients
                    nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.constant_(m.bias, self.initial_bias(m, init, bias_init))

    def initial_bias(self, module: nn.Module, init: str, bias_init: float) -> float:
        return bias_init if init == "paper" and any(module is b for b in self.bias_one) else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# the keywords a model config sets (the rest of AlexNet's signature comes from the data set)
TOGGLES = tuple(p for p in inspect.signature(AlexNet).parameters
                if p not in ("variant", "num_classes", "in_channels", "image_size"))
# the model config's other keys: the variant, and how train.py runs the network (never what it computes)
NOT_TOGGLES = ("name", "compile", "channels_last")


def build_model(model_cfg, num_classes: int, in_channels: int, image_size: int) -> AlexNet:
    """Build a family member from a model config (DictConfig or dict; see config.ModelConfig). Keys
    the config does not set take AlexNet's own defaults, which are the paper's values; a key that is
    neither a toggle nor one of NOT_TOGGLES (a stale `lrn`, now `norm`) is refused, never ignored."""
    name = model_cfg.get("name", "alexnet")
    if name not in VARIANTS:
        raise ValueError(f"model.name='{name}' is not a registered variant; choose one of: {', '.join(list_variants())}")
    unknown = sorted(set(model_cfg) - set(TOGGLES) - set(NOT_TOGGLES))
    if unknown:
        raise ValueError(f"model.{unknown[0]} is not a model key; valid keys: {', '.join(NOT_TOGGLES + TOGGLES)}")
    kwargs = {key: model_cfg[key] for key in TOGGLES if key in model_cfg}
    return AlexNet(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
