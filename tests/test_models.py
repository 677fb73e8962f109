import itertools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from alexlab.models import VARIANTS, AlexNet, Variant, build_model, count_parameters, list_variants, register_variant
from alexlab.models.alexnet import NOT_TOGGLES, TOGGLES as MODEL_TOGGLES, resized_variant

# the paper's tricks on and off, every combination
TOGGLES = list(itertools.product(["relu", "tanh"], ["overlapping", "non_overlapping"], ["lrn", "none"], [0.0, 0.5]))
# the questions later work asked, one at a time and in a few combinations (the rest at the paper's values)
LATER = [{"norm": "batchnorm"}, {"pool_type": "avg"}, {"activation": "sigmoid"}, {"fc_layers": 1}, {"fc_width": 512},
         {"conv_depth": 1}, {"conv_depth": 2}, {"conv_depth": 4},
         {"norm": "batchnorm", "pool_type": "avg", "activation": "sigmoid", "pooling": "non_overlapping"},
         {"norm": "batchnorm", "conv_depth": 4, "fc_layers": 1, "fc_width": 1024, "dropout": 0.0}]
RESIZING = ("fc_layers", "fc_width", "conv_depth")  # convnet4 has no layers for these (refused: see below)
# every registered variant at the size it was designed for; small ones also at Fashion-MNIST's 28 px
SIZES = [(name, size) for name in list_variants()
         for size in sorted({VARIANTS[name].image_size} | ({28} if VARIANTS[name].image_size <= 64 else set()))]
LATER_SIZES = [(name, size, later) for name, size in SIZES for later in LATER
               if VARIANTS[name].stack_start is not None or not set(later) & set(RESIZING)]


def tiny_model(name, activation="relu", pooling="overlapping", norm="lrn", dropout=0.5, num_classes=7, in_channels=1,
               image_size=28, **kw):
    cfg = {"name": name, "activation": activation, "pooling": pooling, "norm": norm, "dropout": dropout,
           "width": 0.125, "init": "default", **kw}
    return build_model(cfg, num_classes, in_channels, image_size)


def assert_it_trains(model, in_channels, image_size):
    x, y = torch.randn(4, in_channels, image_size, image_size), torch.randint(0, 7, (4,))
    out = model(x)
    assert out.shape == (4, 7)
    loss = F.cross_entropy(out, y)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {pname}"


@pytest.mark.parametrize("name,image_size", SIZES)
@pytest.mark.parametrize("activation,pooling,norm,dropout", TOGGLES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_variant_and_toggle_trains(name, image_size, activation, pooling, norm, dropout, in_channels):
    torch.manual_seed(0)
    model = build_model({"name": name, "activation": activation, "pooling": pooling, "norm": norm, "dropout": dropout,
                         "width": 0.0625 if image_size > 64 else 0.125, "init": "default"},
                        num_classes=7, in_channels=in_channels, image_size=image_size)
    assert_it_trains(model, in_channels, image_size)


@pytest.mark.parametrize("name,image_size,later", LATER_SIZES,
                         ids=[f"{n}-{z}-" + ",".join(f"{k}={v}" for k, v in t.items()) for n, z, t in LATER_SIZES])
@pytest.mark.parametrize("init", ["default", "kaiming"])
def test_every_variant_with_each_later_toggle_trains(name, image_size, later, init):
    torch.manual_seed(0)
    model = build_model({"name": name, "width": 0.0625 if image_size > 64 else 0.125, "init": init,
                         "bias_init": 0.1, **later}, num_classes=7, in_channels=3, image_size=image_size)
    assert_it_trains(model, 3, image_size)


@pytest.mark.parametrize("activation,pooling,norm", list(itertools.product(["relu", "tanh"], ["overlapping", "non_overlapping"], ["lrn", "none"])))
def test_paper_net_toggles_at_227(activation, pooling, norm):
    torch.manual_seed(0)
    model = build_model({"name": "alexnet", "activation": activation, "pooling": pooling, "norm": norm, "groups": 2,
                         "width": 0.0625, "init": "paper", "bias_init": 0.1}, 5, 3, 227)
    out = model(torch.randn(2, 3, 227, 227))
    assert out.shape == (2, 5)
    F.cross_entropy(out, torch.tensor([0, 4])).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("groups,expected", [(2, 60_965_224), (1, 62_378_344)])
def test_paper_parameter_counts(groups, expected):
    model = build_model({"name": "alexnet", "groups": groups}, 1000, 3, 227)
    assert count_parameters(model) == expected


def test_paper_feature_map_sizes_at_227():
    model = build_model({"name": "alexnet", "groups": 2, "width": 0.0625}, 10, 3, 227)
    assert dict(model.feature_sizes) == {"conv1": 55, "pool1": 27, "conv2": 27, "pool2": 13, "conv3": 13,
                                         "conv4": 13, "conv5": 13, "pool5": 6}
    full = build_model({"name": "alexnet", "groups": 2}, 1000, 3, 227)
    assert full.num_features == 9216 == full.classifier[2].in_features
    # measured, not only computed: the feature extractor really yields 256 x 6 x 6
    assert model.features(torch.zeros(1, 3, 227, 227)).shape[-2:] == (6, 6)


@pytest.mark.parametrize("name,size", [("alexnet", 227), ("alexnet_small", 28), ("alexnet_small", 32), ("convnet4", 28), ("convnet4", 32)])
def test_pooling_kinds_give_the_same_sizes(name, size):
    shapes = [build_model({"name": name, "pooling": p, "pool_type": t, "width": 0.0625}, 10, 3, size).features(
              torch.zeros(1, 3, size, size)).shape for p in ("overlapping", "non_overlapping") for t in ("max", "avg")]
    assert len(set(shapes)) == 1


@pytest.mark.parametrize("pooling", ["overlapping", "non_overlapping"])
def test_average_pools_have_the_max_pools_geometry_and_leave_the_padding_out_of_the_mean(pooling):
    kinds = {t: [m for m in tiny_model("alexnet_small", pooling=pooling, pool_type=t).features
                 if isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d))] for t in ("max", "avg")}
    assert [type(m) for m in kinds["avg"]] == [torch.nn.AvgPool2d] * 3
    for mx, avg in zip(kinds["max"], kinds["avg"]):
        assert (avg.kernel_size, avg.stride, avg.padding, avg.ceil_mode) == (mx.kernel_size, mx.stride, mx.padding,
                                                                             mx.ceil_mode)
        ones = torch.ones(1, 2, 7, 7)  # an odd size: the padded 3/2 pool and the ceil-mode 2/2 pool overhang it
        assert torch.equal(avg(ones), torch.ones_like(avg(ones)))  # counting the padding would give 4/9 at corners


def test_paper_initialisation():
    model = build_model({"name": "alexnet", "groups": 2, "init": "paper", "bias_init": 1.0}, 1000, 3, 227)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert biases(model)["conv2"] == {1.0}  # which layers: test_paper_bias_goes_to_conv2_conv4_conv5_...
    w = torch.cat([m.weight.flatten() for m in convs + fcs])
    assert abs(float(w.std()) - 0.01) < 5e-4 and abs(float(w.mean())) < 1e-4
    caffe = build_model({"name": "alexnet", "groups": 2, "bias_init": 0.1, "width": 0.0625}, 10, 3, 227)
    assert float([m for m in caffe.features if isinstance(m, torch.nn.Conv2d)][1].bias.mean()) == pytest.approx(0.1)


def test_groups_split_conv2_4_5_only():
    model = build_model({"name": "alexnet", "groups": 2, "width": 0.0625}, 10, 3, 227)
    assert [m.groups for m in model.features if isinstance(m, torch.nn.Conv2d)] == [1, 2, 1, 2, 2]


def test_registry_lists_and_refuses_duplicates():
    assert list_variants() == sorted(VARIANTS) and {"alexnet", "alexnet_small", "convnet4"} <= set(VARIANTS)
    assert list_variants("alexnet*") == ["alexnet", "alexnet_small"]
    with pytest.raises(ValueError, match="already registered"):
        register_variant("alexnet", VARIANTS["alexnet"])


def test_num_classes_override_and_unknown_variant():
    model = build_model({"name": "convnet4", "width": 0.25}, 3, 1, 28)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(ValueError, match="model.name='vgg'.*alexnet_small"):
        build_model({"name": "vgg"}, 10, 3, 32)


def test_dropout_toggle_reaches_the_network():
    off = build_model({"name": "alexnet_small", "dropout": 0.0, "width": 0.125}, 10, 1, 28)
    on = build_model({"name": "alexnet_small", "dropout": 0.3, "width": 0.125}, 10, 1, 28)
    drops = lambda m: [d.p for d in m.modules() if isinstance(d, torch.nn.Dropout)]
    assert drops(off) == [0.0, 0.0] and drops(on) == [0.3, 0.3]
    x = torch.randn(8, 1, 28, 28)
    on.eval()
    assert torch.equal(on(x), on(x))  # eval: deterministic


def test_kaiming_init_keeps_the_signal_alive_where_pytorch_default_starves_it():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    cfg = {"name": "alexnet_small", "width": 0.5, "norm": "none", "dropout": 0.0}
    he = build_model({**cfg, "init": "kaiming"}, 10, 3, 32).eval()
    default = build_model({**cfg, "init": "default"}, 10, 3, 32).eval()
    feats = lambda m: m.classifier[:-1](m.features(x))  # the last hidden layer's output
    assert 0.1 < float(feats(he).std()) < 10
    assert float(feats(default).std()) < 0.05 * float(feats(he).std())
    last = he.classifier[-1]
    assert abs(float(last.weight.std()) - 0.01) < 2e-3 and float(last.bias.abs().sum()) == 0


def biases(model) -> dict:
    """{layer: the set of its bias values}, layers named as in the paper (conv1.., fc6..)."""
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    names = [f"conv{i + 1}" for i in range(len(convs))] + [f"fc{len(convs) + i + 1}" for i in range(len(fcs))]
    return {name: set(m.bias.tolist()) for name, m in zip(names, convs + fcs)}


@pytest.mark.parametrize("name,size", [("alexnet", 227), ("alexnet_small", 32)])
@pytest.mark.parametrize("one_column", [False, True])
def test_paper_bias_goes_to_conv2_conv4_conv5_and_the_hidden_fc_layers(name, size, one_column):
    groups = 1 if one_column else 2
    model = build_model({"name": name, "groups": groups, "one_column": one_column, "width": 0.0625,
                         "init": "paper", "bias_init": 0.5}, 10, 3, size)
    assert biases(model) == {"conv1": {0.0}, "conv2": {0.5}, "conv3": {0.0}, "conv4": {0.5}, "conv5": {0.5},
                             "fc6": {0.5}, "fc7": {0.5}, "fc8": {0.0}}


def test_convnet4_under_the_paper_init_has_every_bias_zero():
    # cuda-convnet's layers-18pct initialises every bias at 0; bias 1 by layer index gave its conv2 1.0
    model = build_model({"name": "convnet4", "init": "paper", "bias_init": 1.0}, 10, 3, 32)
    assert biases(model) == {"conv1": {0.0}, "conv2": {0.0}, "conv3": {0.0}, "fc4": {0.0}}


def test_a_variant_naming_a_layer_it_lacks_for_the_paper_bias_is_refused():
    with pytest.raises(ValueError, match="paper_bias names conv6, which it does not have"):
        register_variant("alexnet_typo", replace(VARIANTS["alexnet"], paper_bias=("conv2", "conv6")))
    assert "alexnet_typo" not in VARIANTS


def conv_parameters(out, inp, kernel, groups=1):
    return out * (inp // groups) * kernel * kernel + out


def fc_parameters(out, inp):
    return out * inp + out


def test_the_one_column_net_at_227_px_and_1000_classes_has_59_798_312_parameters():
    # Section 3.2 and its footnote: one column with half the kernels in conv1-conv4; conv5 (256) and
    # the FC layers keep the two-column sizes. Counted by hand, layer by layer:
    expected = (conv_parameters(48, 3, 11) + conv_parameters(128, 48, 5) + conv_parameters(192, 128, 3)
                + conv_parameters(192, 192, 3) + conv_parameters(256, 192, 3)
                + fc_parameters(4096, 256 * 6 * 6) + fc_parameters(4096, 4096) + fc_parameters(1000, 4096))
    assert expected == 59_798_312
    model = build_model({"name": "alexnet", "groups": 2, "one_column": True}, 1000, 3, 227)
    assert count_parameters(model) == expected
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.groups) for c in convs] == [(48, 1), (128, 1), (192, 1), (192, 1), (256, 1)]
    assert model.num_features == 9216 and model(torch.zeros(1, 3, 227, 227)).shape == (1, 1000)


def test_the_one_column_net_halves_the_kernels_at_any_width_and_trains():
    torch.manual_seed(0)
    two = tiny_model("alexnet_small", groups=2, in_channels=3, image_size=32)
    one = tiny_model("alexnet_small", groups=2, one_column=True, in_channels=3, image_size=32)
    widths = lambda m: [c.out_channels for c in m.features if isinstance(c, torch.nn.Conv2d)]
    assert widths(one) == [w // 2 for w in widths(two)[:4]] + widths(two)[4:]
    F.cross_entropy(one(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in one.parameters())


def test_one_column_on_a_variant_without_columns_is_refused():
    with pytest.raises(ValueError, match="one_column replaces a variant's two columns, and this one has none"):
        build_model({"name": "convnet4", "one_column": True}, 10, 3, 32)


# ------------------------------------------------------------------ the toggles later work asked for
def convs_of(model):
    return [m for m in model.features if isinstance(m, torch.nn.Conv2d)]


# The 227-px paper net with two columns, layer by layer (Figure 2): what each resizing toggle changes
PAPER_CONVS = (conv_parameters(96, 3, 11) + conv_parameters(256, 96, 5, 2) + conv_parameters(384, 256, 3)
               + conv_parameters(384, 384, 3, 2) + conv_parameters(256, 384, 3, 2))
PAPER_HEAD = fc_parameters(4096, 256 * 6 * 6) + fc_parameters(4096, 4096) + fc_parameters(1000, 4096)
FIRST_TWO = conv_parameters(96, 3, 11) + conv_parameters(256, 96, 5, 2)
RESIZED_COUNTS = [
    ({"fc_layers": 1}, PAPER_CONVS + fc_parameters(4096, 9216) + fc_parameters(1000, 4096)),
    ({"fc_width": 2048},
     PAPER_CONVS + fc_parameters(2048, 9216) + fc_parameters(2048, 2048) + fc_parameters(1000, 2048)),
    ({"fc_layers": 1, "fc_width": 1024}, PAPER_CONVS + fc_parameters(1024, 9216) + fc_parameters(1000, 1024)),
    ({"conv_depth": 1}, FIRST_TWO + conv_parameters(256, 256, 3) + PAPER_HEAD),
    ({"conv_depth": 2}, FIRST_TWO + conv_parameters(384, 256, 3) + conv_parameters(256, 384, 3, 2) + PAPER_HEAD),
    ({"conv_depth": 4}, PAPER_CONVS + conv_parameters(384, 384, 3, 2) + PAPER_HEAD),  # one more conv4, same shape
    # BN: each conv loses its bias (out) and gains a scale and a shift (2 out)
    ({"norm": "batchnorm"}, PAPER_CONVS + PAPER_HEAD + (96 + 256 + 384 + 384 + 256)),
    ({"norm": "none"}, PAPER_CONVS + PAPER_HEAD),
    ({"pool_type": "avg"}, PAPER_CONVS + PAPER_HEAD),
    ({"activation": "sigmoid"}, PAPER_CONVS + PAPER_HEAD),
]


def test_the_layer_by_layer_count_of_the_paper_net_is_its_published_count():
    assert PAPER_CONVS + PAPER_HEAD == 60_965_224


@pytest.mark.parametrize("toggles,expected", RESIZED_COUNTS, ids=lambda t: str(t) if isinstance(t, dict) else "")
def test_each_later_toggle_gives_the_hand_counted_parameters_of_the_227_px_net(toggles, expected):
    assert count_parameters(build_model({"name": "alexnet", "groups": 2, **toggles}, 1000, 3, 227)) == expected


def test_the_default_net_keeps_its_checkpoint_layout():
    # a checkpoint written before these toggles existed has exactly these keys, in this order
    expected = [f"features.{i}.{p}" for i in (0, 4, 8, 10, 12) for p in ("weight", "bias")] + \
               [f"classifier.{i}.{p}" for i in (2, 5, 7) for p in ("weight", "bias")]
    model = build_model({"name": "alexnet", "groups": 2, "width": 0.0625}, 10, 3, 227)
    assert list(model.state_dict()) == expected == [name for name, _ in model.named_parameters()]


@pytest.mark.parametrize("name", ["alexnet", "alexnet_small", "convnet4"])
def test_the_paper_values_of_the_resizing_toggles_give_each_variant_back_unchanged(name):
    assert resized_variant(VARIANTS[name]) == VARIANTS[name]


@pytest.mark.parametrize("depth,layers", [
    (1, [(256, 1)]), (2, [(384, 1), (256, 2)]), (3, [(384, 1), (384, 2), (256, 2)]),
    (4, [(384, 1), (384, 2), (384, 2), (256, 2)]), (5, [(384, 1), (384, 2), (384, 2), (384, 2), (256, 2)])])
def test_conv_depth_is_d_minus_1_layers_of_384_then_one_of_256_with_the_pool_after_the_last(depth, layers):
    # the first 3x3 layer reads both columns (the paper's conv3); the others stay in their column
    model = build_model({"name": "alexnet", "groups": 2, "conv_depth": depth}, 10, 3, 227)
    assert [(c.out_channels, c.groups) for c in convs_of(model)] == [(96, 1), (256, 2)] + layers
    last = 2 + depth
    assert model.feature_sizes[-2:] == [(f"conv{last}", 13), (f"pool{last}", 6)] and model.num_features == 9216
    assert isinstance(model.features[-1], torch.nn.MaxPool2d) and isinstance(model.features[-3], torch.nn.Conv2d)
    narrow = build_model({"name": "alexnet", "groups": 2, "conv_depth": depth, "width": 0.0625}, 10, 3, 227)
    assert narrow.features(torch.zeros(1, 3, 227, 227)).shape == (1, 16, 6, 6)  # measured, not only computed


@pytest.mark.parametrize("toggles,paper_bias", [
    ({"conv_depth": 1}, {"conv2"}),  # the single 3x3 layer is the first, conv3's role: bias 0
    ({"conv_depth": 2}, {"conv2", "conv4"}),
    ({"conv_depth": 4}, {"conv2", "conv4", "conv5", "conv6"}),
    ({"fc_layers": 1}, {"conv2", "conv4", "conv5"}),
])
def test_the_paper_bias_goes_by_role_when_layers_are_added_or_removed(toggles, paper_bias):
    model = build_model({"name": "alexnet", "groups": 2, "width": 0.0625, "init": "paper", "bias_init": 0.5,
                         **toggles}, 10, 3, 227)
    got = biases(model)
    n = len(convs_of(model))
    hidden = [f"fc{n + 1 + j}" for j in range(len(got) - n - 1)]
    assert {k for k, v in got.items() if v == {0.5}} == paper_bias | set(hidden)  # every hidden FC layer: bias 1
    assert all(v == {0.0} for k, v in got.items() if k not in paper_bias | set(hidden))


def test_fc_width_and_layers_shape_the_head_and_model_width_scales_fc_width():
    model = build_model({"name": "alexnet_small", "fc_layers": 1, "fc_width": 1024, "width": 0.25}, 10, 1, 28)
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    drops = [m for m in model.classifier if isinstance(m, torch.nn.Dropout)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 * 4 * 4, 256), (256, 10)]
    assert len(drops) == 1  # dropout precedes each hidden FC layer


@pytest.mark.parametrize("toggle", [{"conv_depth": 2}, {"fc_layers": 1}, {"fc_width": 1024}])
def test_convnet4_refuses_to_resize_layers_it_does_not_have(toggle):
    (key, value), = toggle.items()
    with pytest.raises(ValueError, match=f"{key}={value} is not valid for this variant: it has no"):
        build_model({"name": "convnet4", **toggle}, 10, 3, 32)


@pytest.mark.parametrize("name,size", [("alexnet", 227), ("alexnet_small", 28), ("convnet4", 32)])
def test_batchnorm_follows_every_conv_before_its_activation_in_place_of_lrn(name, size):
    model = build_model({"name": name, "norm": "batchnorm", "width": 0.0625}, 10, 3, size)
    layers = list(model.features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.Conv2d)]
    for i in convs:
        bn, act = layers[i + 1], layers[i + 2]
        assert isinstance(bn, torch.nn.BatchNorm2d) and bn.num_features == layers[i].out_channels
        assert isinstance(act, torch.nn.ReLU) and layers[i].bias is None  # BN's shift replaces the conv's bias
    assert not any(type(m).__name__ == "LocalResponseNorm" for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.classifier)  # the FC layers are left as they are
    lrn = build_model({"name": name, "width": 0.0625}, 10, 3, size)
    assert sum(type(m).__name__ == "LocalResponseNorm" for m in lrn.modules()) == len(VARIANTS[name].lrn_after)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lrn.modules())


@pytest.mark.parametrize("init,shift", [("paper", 0.5), ("kaiming", 0.0)])
def test_under_batchnorm_the_paper_bias_becomes_the_shift_of_the_bn_after_those_convs(init, shift):
    model = build_model({"name": "alexnet", "groups": 2, "norm": "batchnorm", "width": 0.0625, "init": init,
                         "bias_init": 0.5}, 10, 3, 227)
    bns = [m for m in model.features if isinstance(m, torch.nn.BatchNorm2d)]
    assert [set(bn.bias.tolist()) for bn in bns] == [{0.0}, {shift}, {0.0}, {shift}, {shift}]  # conv2, conv4, conv5
    assert all(set(bn.weight.tolist()) == {1.0} for bn in bns)
    fcs = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [set(m.bias.tolist()) for m in fcs] == [{shift}, {shift}, {0.0}]


def test_batchnorm_normalises_each_channel_over_the_batch_in_training_and_uses_running_statistics_in_eval():
    torch.manual_seed(0)
    model = build_model({"name": "alexnet_small", "norm": "batchnorm", "width": 0.25, "init": "kaiming"}, 10, 1, 28)
    x = torch.randn(16, 1, 28, 28) * 3 + 5
    conv, bn = model.features[0], model.features[1]
    normalised = bn(conv(x))
    assert normalised.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (normalised.var(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
    model.eval()
    assert torch.equal(model(x[:1]), model(x[:1])) and bn.num_batches_tracked == 1


@pytest.mark.parametrize("activation,gain", [("relu", 2 ** 0.5), ("tanh", 5 / 3), ("sigmoid", 1.0)])
def test_kaiming_init_scales_the_weights_by_each_activations_gain(activation, gain):
    torch.manual_seed(0)
    model = build_model({"name": "alexnet_small", "activation": activation, "init": "kaiming", "width": 0.5}, 10, 3, 32)
    conv3 = convs_of(model)[2]  # 192 x 128 x 3 x 3: 221,184 weights
    fan_in = conv3.weight[0].numel()
    assert float(conv3.weight.std()) == pytest.approx(gain / fan_in ** 0.5, rel=0.01)


def test_sigmoid_is_an_activation_of_the_family():
    model = tiny_model("alexnet_small", activation="sigmoid")
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in model.modules()) == 5 + 2 and \
        not any(isinstance(m, torch.nn.ReLU) for m in model.modules())


def test_a_model_key_that_is_no_toggle_is_refused_not_ignored():
    # model.lrn became model.norm: a stale key must not silently build the default net
    with pytest.raises(ValueError, match="model.lrn is not a model key; valid keys: name, .*norm"):
        build_model({"name": "alexnet_small", "lrn": False}, 10, 1, 28)


def test_the_schema_holds_every_toggle_of_the_network_and_nothing_it_ignores():
    import dataclasses

    from alexlab.config import ModelConfig

    assert {f.name for f in dataclasses.fields(ModelConfig)} == set(MODEL_TOGGLES) | set(NOT_TOGGLES)


def test_a_variant_whose_stack_cannot_be_resized_is_refused():
    with pytest.raises(ValueError, match="its stack .* must be at least one layer, with no LRN inside it"):
        register_variant("alexnet_lrn_in_stack", replace(VARIANTS["alexnet"], lrn_after=(0, 1, 3)))
    with pytest.raises(ValueError, match="no pool but after its last layer"):
        register_variant("alexnet_pool_in_stack", replace(VARIANTS["alexnet"], pool_after=(0, 1, 3, 4)))
    assert "alexnet_lrn_in_stack" not in VARIANTS and "alexnet_pool_in_stack" not in VARIANTS


POOL_GEOMETRIES = {"overlapping 3/2": dict(kernel_size=3, stride=2), "overlapping padded": dict(kernel_size=3, stride=2,
                   padding=1), "non_overlapping 2/2": dict(kernel_size=2, stride=2),
                   "non_overlapping ceil": dict(kernel_size=2, stride=2, ceil_mode=True)}


@pytest.mark.parametrize("geometry", POOL_GEOMETRIES)
@pytest.mark.parametrize("shape", [(8, 24, 28, 28), (8, 64, 7, 7), (3, 5, 9, 11)])
def test_the_cpu_max_pool_gives_torchs_output_indices_and_gradient_exactly_ties_included(geometry, shape):
    """alexlab's MaxPool2d pools a CPU NCHW batch in channels_last: the same numbers as torch's NCHW
    pool, on ReLU outputs rounded to 0.1 (many windows tie, at 0 and elsewhere), in training and
    in evaluation, and its output keeps the input's layout."""
    from alexlab.models.pool import MaxPool2d, takes_fast_path

    kw = POOL_GEOMETRIES[geometry]
    ours, theirs = MaxPool2d(**kw), torch.nn.MaxPool2d(**kw)
    torch.manual_seed(0)
    x = torch.relu(torch.randn(shape)).round(decimals=1)
    assert takes_fast_path(x) and (x == 0).float().mean() > 0.4
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = ours(a), theirs(b)
    assert torch.equal(out_a, out_b) and out_a.is_contiguous()
    g = torch.randn_like(out_b)
    out_a.backward(g)
    out_b.backward(g)
    assert torch.equal(a.grad, b.grad)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    # what the backward pass rests on: torch's channels_last pool names the same positions as its NCHW pool
    kw = {"padding": 0, "ceil_mode": False, **kw}
    _, want = F.max_pool2d(x, return_indices=True, **kw)
    _, got = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), return_indices=True, **kw)
    assert torch.equal(got, want)


def test_the_cpu_max_pool_leaves_channels_last_batches_to_torch():
    from alexlab.models.pool import takes_fast_path

    x = torch.randn(4, 8, 10, 10)
    assert takes_fast_path(x)
    assert not takes_fast_path(x.contiguous(memory_format=torch.channels_last))
    assert not takes_fast_path(x[:, :, ::2])  # not contiguous: torch's own path
    assert not takes_fast_path(torch.randn(8, 10, 10))  # an unbatched map


def test_the_networks_max_pools_are_alexlabs():
    from alexlab.models.pool import MaxPool2d

    pools = [m for m in tiny_model("alexnet_small").modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert pools and all(isinstance(m, MaxPool2d) for m in pools)
