"""Every conf/ file composes and validates; bad overrides fail in one line naming the key."""
import pytest
from omegaconf import OmegaConf

from alexlab.config import ConfigError, validate
from conftest import CONF, compose_cfg, run_cli

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "sweep")


def group_options():
    for group in GROUPS:
        for f in sorted((CONF / group).glob("*.yaml")):
            yield group, f.stem


@pytest.mark.parametrize("group,option", list(group_options()))
def test_every_config_file_composes_and_validates(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if option == "imagefolder" or (group == "experiment" and option == "imagenet_paper"):
        overrides.append("data.root=/nonexistent")  # required key; composing does not touch the data
    cfg = compose_cfg(overrides, tmp_path)
    OmegaConf.resolve(cfg)
    validate(cfg)


def test_defaults_are_the_paper_settings(tmp_path):
    cfg = compose_cfg([], tmp_path)
    assert (cfg.model.activation, cfg.model.pooling, cfg.model.lrn, cfg.model.dropout) == ("relu", "overlapping", True, 0.5)
    assert cfg.data.augment == "crop_flip_pca" and cfg.ablation_name == "paper"
    assert (cfg.optim.momentum, cfg.optim.weight_decay) == (0.9, 0.0005)


@pytest.mark.parametrize("ablation,key,value", [("tanh", "model.activation", "tanh"), ("no_lrn", "model.lrn", False),
                                                ("no_overlap", "model.pooling", "non_overlapping"),
                                                ("no_dropout", "model.dropout", 0.0), ("no_augment", "data.augment", "none")])
@pytest.mark.parametrize("experiment", ["fmnist_quick", "cifar10"])
def test_each_ablation_changes_exactly_one_toggle(ablation, key, value, experiment, tmp_path):
    paper = OmegaConf.to_container(compose_cfg([f"experiment={experiment}"], tmp_path), resolve=True)
    ablated = OmegaConf.to_container(compose_cfg([f"experiment={experiment}", f"ablation={ablation}"], tmp_path), resolve=True)

    def flat(d, prefix=""):
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]

    diff = {k: v for k, v in flat(ablated) if dict(flat(paper)).get(k) != v}
    assert diff == {key: value, "ablation_name": ablation}


BAD = [
    ("model.activation=sigmoid", "model.activation", "relu, tanh"),
    ("model.pooling=avg", "model.pooling", "overlapping, non_overlapping"),
    ("model.dropout=1.5", "model.dropout", "[0.0, 1.0)"),
    ("model.dropout=1.0", "model.dropout", "[0.0, 1.0)"),
    ("model.width=0", "model.width", "(0.0"),
    ("model.groups=3", "model.groups", "1, 2"),
    ("data.augment=mixup", "data.augment", "none, crop_flip, crop_flip_pca"),
    ("data.batch_size=0", "data.batch_size", "[1,"),
    ("data.train_subset=-5", "data.train_subset", "positive"),
    ("optim.lr=-1", "optim.lr", "(0.0"),
    ("optim.schedule=linear", "optim.schedule", "plateau"),
    ("trainer.precision=fp8", "trainer.precision", "bf16-mixed"),
    ("model.name=vgg", "model.name", "alexnet_small"),
]


@pytest.mark.parametrize("override,key,valid", BAD)
def test_bad_values_fail_validation_naming_the_key(override, key, valid, tmp_path):
    cfg = compose_cfg([override], tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert message.startswith(key) and valid in message and "\n" not in message


@pytest.mark.slow
@pytest.mark.parametrize("override,needle", [
    ("model.activation=sigmoid", "model.activation='sigmoid' is not valid; choose one of: relu, tanh"),
    ("model.dropout=1.5", "model.dropout=1.5 is out of range"),
    ("model.pooling=avg", "model.pooling='avg' is not valid"),
    ("model.dropout=abc", "model.dropout"),
    ("model.colour=red", "model.colour"),
    ("data=imagenet21k", "choose one of: cifar10, fashion_mnist, imagefolder, synthetic"),
])
def test_cli_bad_override_is_one_line_and_nonzero(override, needle, tmp_path):
    proc = run_cli(["data=synthetic", "trainer.max_epochs=1", override], tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("alexlab: error:") and needle in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("COMPLETED"))
