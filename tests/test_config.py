"""Every conf/ file composes and validates; bad overrides fail in one line naming the key."""
import subprocess
import sys

import pytest
import yaml
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode
from omegaconf import OmegaConf

from alexlab.config import ConfigError, validate
from alexlab.settings import flatten
from conftest import CONF, compose_cfg, run_cli
from hydra_plugins.alexlab_launcher.launcher import REFERENCE_ARM, settings_of, unchanged_arm

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
    if (group, option) == ("ablation", "one_column"):
        overrides.append("model.groups=2")  # it replaces two columns: refused on a one-column preset
    cfg = compose_cfg(overrides, tmp_path)
    OmegaConf.resolve(cfg)
    validate(cfg)


def test_defaults_are_the_paper_settings(tmp_path):
    cfg = compose_cfg([], tmp_path)
    model = cfg.model
    assert (model.activation, model.pooling, model.norm, model.dropout) == ("relu", "overlapping", "lrn", 0.5)
    assert (model.pool_type, model.fc_layers, model.fc_width, model.conv_depth) == ("max", 2, 4096, 3)
    assert cfg.data.augment == "crop_flip_pca" and cfg.ablation_name == "paper"
    assert (cfg.optim.momentum, cfg.optim.weight_decay) == (0.9, 0.0005)


def yaml_settings(path) -> dict:
    """{flattened key: value} a config file sets (its `defaults` list left out)."""
    content = yaml.safe_load(path.read_text()) or {}
    return flatten({k: v for k, v in content.items() if k != "defaults"})


ABLATIONS = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml") if p.stem != REFERENCE_ARM)
PRESETS = ([[]] + [[f"{group}={p.stem}"] for group in ("experiment", "model") for p in sorted((CONF / group).glob("*.yaml"))]
           + [[f"sweep={p.stem}"] for p in sorted((CONF / "sweep").glob("*.yaml"))
              if "defaults" in (yaml.safe_load(p.read_text()) or {})])  # sweep files that choose their own model/data


class Composer:
    """Hydra's own config loader (the one the launcher is given), with the master config and the
    ablation=paper arm of each preset composed once."""

    def __init__(self):
        self.loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
        self.masters, self.papers = {}, {}

    def master(self, preset: list):
        if tuple(preset) not in self.masters:
            self.masters[tuple(preset)] = self.loader.load_configuration("config", preset, RunMode.MULTIRUN)
        return self.masters[tuple(preset)]

    def arm(self, preset: list, ablation: str):
        if ablation == REFERENCE_ARM and tuple(preset) in self.papers:
            return self.papers[tuple(preset)]
        cfg = self.loader.load_sweep_config(self.master(preset), preset + [f"ablation={ablation}"])
        if ablation == REFERENCE_ARM:
            self.papers[tuple(preset)] = cfg
        return cfg


@pytest.fixture(scope="module")
def composer():
    return Composer()


def test_the_ablation_list_has_the_paper_tricks_and_every_file_is_global():
    assert {"tanh", "no_lrn", "no_overlap", "no_dropout", "no_augment", "no_pca", "one_column"} <= set(ABLATIONS)
    assert {"batchnorm", "avg_pool", "sigmoid", "one_fc", "narrow_fc", "fewer_convs", "more_convs"} <= set(ABLATIONS)
    for name in ABLATIONS + [REFERENCE_ARM]:
        text = (CONF / "ablation" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_") and yaml.safe_load(text)["ablation_name"] == name
    assert ["sweep=relu_vs_tanh"] in PRESETS


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p[0] if p else "default")
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_each_ablation_changes_exactly_its_own_keys_or_the_launch_refuses_it(ablation, preset, composer):
    """Against ablation=paper on the same preset, an arm changes exactly what its file sets
    (ablation_name aside); an arm that changes nothing there is refused when a sweep is launched."""
    arm, paper = composer.arm(preset, ablation), composer.arm(preset, REFERENCE_ARM)
    arm_flat, paper_flat = flatten(settings_of(arm)), flatten(settings_of(paper))
    assert set(arm_flat) == set(paper_flat)
    changed = {k: v for k, v in arm_flat.items() if paper_flat[k] != v and k != "ablation_name"}
    sets = {k: v for k, v in yaml_settings(CONF / "ablation" / f"{ablation}.yaml").items() if k != "ablation_name"}
    refusal = unchanged_arm(composer.loader, composer.master(preset), preset + [f"ablation={ablation}"], arm)
    if changed:
        assert changed == sets and refusal is None
    else:
        assert refusal.startswith(f"ablation={ablation} changes nothing in this preset (name={arm.name}")
        assert all(key in refusal for key in sets) and refusal.endswith("leave the arm out of the sweep")


BAD = [
    ("model.activation=gelu", "model.activation", "relu, tanh, sigmoid"),
    ("model.pooling=avg", "model.pooling", "overlapping, non_overlapping"),
    ("model.pool_type=min", "model.pool_type", "max, avg"),
    ("model.norm=layernorm", "model.norm", "lrn, batchnorm, none"),
    ("model.fc_layers=3", "model.fc_layers", "1, 2"),
    ("model.fc_width=0", "model.fc_width", "[1, 65536]"),
    ("model.conv_depth=0", "model.conv_depth", "[1, 16]"),
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
    ("model.one_column=true", "model.one_column", "it needs model.groups=2 (experiment=imagenet_paper has it)"),
]


@pytest.mark.parametrize("override,key,valid", BAD)
def test_bad_values_fail_validation_naming_the_key(override, key, valid, tmp_path):
    cfg = compose_cfg([override], tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert message.startswith(key) and valid in message and "\n" not in message


@pytest.mark.parametrize("override,message", [
    ("model.conv_depth=2", "model.conv_depth=2 is not valid for model.name='convnet4': it has no stack of 3x3 conv "
                           "layers to resize (leave it at 3; alexnet, alexnet_small have one)"),
    ("model.fc_layers=1", "model.fc_layers=1 is not valid for model.name='convnet4': it has no hidden FC layers, its "
                          "convs feed the classifier (leave it at 2; alexnet, alexnet_small have them)"),
    ("model.fc_width=1024", "model.fc_width=1024 is not valid for model.name='convnet4'"),
])
def test_resizing_layers_convnet4_does_not_have_is_refused_in_one_line(override, message, tmp_path):
    cfg = compose_cfg(["model=convnet4", override], tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    validate(compose_cfg(["model=convnet4", "model.norm=batchnorm", "model.pool_type=avg",
                          "model.activation=sigmoid"], tmp_path))  # these apply to every variant


@pytest.mark.slow
@pytest.mark.parametrize("override,needle", [
    ("model.activation=gelu", "model.activation='gelu' is not valid; choose one of: relu, tanh, sigmoid"),
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


def test_the_schema_defaults_of_the_model_are_the_networks_own_defaults():
    """The paper's values live in AlexNet's signature; config.ModelConfig states them for Hydra (it
    cannot import the network: the CLI would load torch to print --help). They must agree."""
    import inspect

    from alexlab.config import ModelConfig
    from alexlab.models.alexnet import TOGGLES, AlexNet

    network = {k: p.default for k, p in inspect.signature(AlexNet).parameters.items() if k in TOGGLES}
    schema = {k: getattr(ModelConfig(), k) for k in TOGGLES}
    assert schema == network


def test_help_lists_every_toggle_arm_sweep_and_preset_with_examples():
    proc = subprocess.run([sys.executable, "-m", "alexlab.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    from alexlab.config import HELP_TOGGLES
    for key in HELP_TOGGLES:
        assert f"{key}=" in text, key
    for group in ("ablation", "sweep", "experiment", "model", "data"):
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in text, group
    assert "model.activation=     relu | tanh | sigmoid   (default relu)" in text
    assert "model.norm=           lrn | batchnorm | none   (default lrn)" in text
    assert text.count("alexlab-train ") >= 4 and "install=bash" in text and len(text.splitlines()) < 60


def test_the_folder_name_leaves_out_every_result_neutral_key_but_the_numerics_ones():
    from alexlab.settings import NAMED_IN_FOLDER, RESULT_NEUTRAL, ignored

    cfg = compose_cfg(return_hydra=True)
    excluded = list(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert {"trainer.threads", "paths.data", "logger.wandb.mode", "launcher.n_jobs", "experiment", "name"} <= set(excluded)
    assert not set(NAMED_IN_FOLDER) & set(excluded)
    assert all(ignored(k, RESULT_NEUTRAL) or k in ("experiment", "sweep", "launcher", "logger", "name", "hydra.verbose")
               for k in excluded)


def test_downloads_and_statistics_go_to_one_cache_folder_per_user(monkeypatch, tmp_path):
    monkeypatch.setenv("ALEXLAB_CACHE_DIR", str(tmp_path / "cache"))
    assert compose_cfg().paths.data == str(tmp_path / "cache" / "data")
    monkeypatch.delenv("ALEXLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compose_cfg().paths.data == str(tmp_path / "xdg" / "alexlab" / "data")


def test_wandb_gets_only_the_keys_that_apply_and_groups_by_sweep_and_experiment():
    from alexlab.wandb_logger import group_name, plain_config

    real = plain_config(compose_cfg(["experiment=fmnist_quick"]))
    assert "num_train" not in real["data"] and "resize" not in real["data"] and real["data"]["name"] == "fashion_mnist"
    synthetic = plain_config(compose_cfg(["data=synthetic"]))
    assert synthetic["data"]["num_train"] == 512
    cfg = compose_cfg(["experiment=fmnist_quick", "sweep=one_at_a_time"])
    assert group_name(cfg, multirun=True) == "one_at_a_time-fmnist_quick"
    assert group_name(cfg, multirun=False) == "fmnist_quick"


def test_the_progress_bar_counts_epochs_from_one():
    from types import SimpleNamespace

    from alexlab.train import ProgressBar

    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=25)
    assert bar._get_train_description(0) == "Epoch 1/25"
