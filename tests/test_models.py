import itertools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from alexlab.models import VARIANTS, AlexNet, Variant, build_model, count_parameters, list_variants, register_variant

TOGGLES = list(itertools.product(["relu", "tanh"], ["overlapping", "non_overlapping"], [True, False], [0.0, 0.5]))
# every registered variant at the size it was designed for; small ones also at Fashion-MNIST's 28 px
SIZES = [(name, size) for name in list_variants()
         for size in sorted({VARIANTS[name].image_size} | ({28} if VARIANTS[name].image_size <= 64 else set()))]


def tiny_model(name, activation="relu", pooling="overlapping", lrn=True, dropout=0.5, **kw):
    cfg = {"name": name, "activation": activation, "pooling": pooling, "lrn": lrn, "dropout": dropout,
           "width": 0.125, "init": "default", **kw}
    return build_model(cfg, kw.pop("num_classes", 7), kw.pop("in_channels", 1), kw.pop("image_size", 28))


@pytest.mark.parametrize("name,image_size", SIZES)
@pytest.mark.parametrize("activation,pooling,lrn,dropout", TOGGLES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_variant_and_toggle_trains(name, image_size, activation, pooling, lrn, dropout, in_channels):
    torch.manual_seed(0)
    model = build_model({"name": name, "activation": activation, "pooling": pooling, "lrn": lrn, "dropout": dropout,
                         "width": 0.0625 if image_size > 64 else 0.125, "init": "default"},
                        num_classes=7, in_channels=in_channels, image_size=image_size)
    x, y = torch.randn(4, in_channels, image_size, image_size), torch.randint(0, 7, (4,))
    out = model(x)
    assert out.shape == (4, 7)
    loss = F.cross_entropy(out, y)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {pname}"


@pytest.mark.parametrize("activation,pooling,lrn", list(itertools.product(["relu", "tanh"], ["overlapping", "non_overlapping"], [True, False])))
def test_paper_net_toggles_at_227(activation, pooling, lrn):
    torch.manual_seed(0)
    model = build_model({"name": "alexnet", "activation": activation, "pooling": pooling, "lrn": lrn, "groups": 2,
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
    shapes = [build_model({"name": name, "pooling": p, "width": 0.0625}, 10, 3, size).features(torch.zeros(1, 3, size, size)).shape
              for p in ("overlapping", "non_overlapping")]
    assert shapes[0] == shapes[1]


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
    cfg = {"name": "alexnet_small", "width": 0.5, "lrn": False, "dropout": 0.0}
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
