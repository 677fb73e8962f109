"""The typed schema of every config group, registered in Hydra's ConfigStore, and `validate`.

OmegaConf checks types when Hydra composes (a float field rejects `model.dropout=abc`);
`validate` then checks choices and ranges before anything is built, so a bad override fails
in one line that names the key and what is valid.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import os
from pathlib import Path

import hydra.core.utils
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .run_folder import atomic_write_text, is_rank_zero
from .settings import NAMED_IN_FOLDER, RESULT_NEUTRAL, cache_root, get, ignored


@dataclass
class ModelConfig:
    name: str = "alexnet"          # registered variant: alexnet | alexnet_small | convnet4
    activation: str = "relu"       # relu | tanh | sigmoid (paper: relu, Section 3.1)
    pooling: str = "overlapping"   # overlapping (3/2) | non_overlapping (2/2) (paper: overlapping, 3.4)
    pool_type: str = "max"         # max | avg, same size, stride and padding; avg skips the padding (paper: max, 3.4)
    norm: str = "lrn"              # lrn: LRN after conv1/conv2's activation (paper, 3.3) | batchnorm: BN after every
                                   # conv, before its activation, no conv bias (Ioffe & Szegedy 2015) | none
    dropout: float = 0.5           # drop probability on the hidden FC layers' inputs, in [0, 1) (paper: 0.5, 4.2)
    fc_layers: int = 2             # hidden FC layers: 1 | 2 (paper: 2, fc6 and fc7; convnet4 has none: 2 only)
    fc_width: int = 4096           # units per hidden FC layer at width 1.0, >= 1 (paper 4096; convnet4: 4096 only)
    conv_depth: int = 3            # 3x3 conv layers after conv2: depth-1 of 384 channels, then one of 256, >= 1
                                   # (paper 3: conv3-conv5; convnet4 has no such stack: 3 only)
    groups: int = 1                # 1, or 2 = the paper's two-GPU columns on conv2/4/5
    one_column: bool = False       # the paper's one-column comparison net (3.2 + footnote): no split, half the
                                   # kernels in conv1-conv4, conv5 and FC unchanged; needs groups=2 (paper: false)
    width: float = 1.0             # channel/unit multiplier, > 0 (small variants use 0.125-1)
    init: str = "paper"            # paper: N(0, 0.01) weights | kaiming: He-normal | default: PyTorch's init
    bias_init: float = 1.0         # bias of conv2/4/5 and hidden FC under init=paper, by role: the Variant's
                                   # paper_bias (convnet4: none); BN's shift under norm=batchnorm (paper 1.0, Caffe 0.1)
    lrn_size: int = 5              # n, channels in the window (paper 5); the lrn_* keys act with norm=lrn only
    lrn_alpha: float = 1e-4        # alpha, not divided by n (paper 1e-4)
    lrn_beta: float = 0.75         # beta (paper 0.75)
    lrn_k: float = 2.0             # k (paper 2)
    compile: bool = False          # torch.compile the network
    channels_last: Any = False     # true | false | auto: NHWC memory format; auto = what this machine runs faster
                                   # (precision.py: CPUs, and GPUs with bf16) (paper: n/a)


@dataclass
class DataConfig:
    name: str = "fashion_mnist"    # fashion_mnist | cifar10 | imagefolder | synthetic
    root: Optional[str] = None     # where the data set lives; None = data set's default places
    download: bool = True          # download when not found (torchvision's mirrors)
    augment: str = "crop_flip_pca" # none | crop_flip | crop_flip_pca (paper: crop_flip_pca, 4.1)
    pca_std: float = 0.1           # sigma of the PCA-lighting alphas (paper 0.1)
    pca: str = "dataset"           # dataset: eigen-decomposition of this training set | imagenet: published values
    crop_padding: int = 4          # px of zero padding around small images before random crops
    image_size: int = 0            # model input size in px; 0 = the data set's native size (227 for imagefolder)
    resize: int = 256              # imagefolder: shorter side and centre square before crops (paper 256)
    train_subset: Optional[int] = None  # train on N training images: a fixed class-stratified sample (data/splits.py)
    test_subset: Optional[int] = None   # evaluate on N test images: a fixed class-stratified sample
    val_size: float = 0.0          # validation split held out of the training images, the only data the plateau
                                   # schedule reads: 0 = none, (0, 1) = that fraction, >= 1 = that many images
                                   # (whole); drawn outside data.train_subset, so the training budget is unchanged
    subset_seed: int = 0           # seeds which images form every sample above and train_clean; never `seed`,
                                   # so all arms and seeds of a sweep see the same images; >= 0
    batch_size: int = 128          # images per step (paper 128)
    num_workers: int = 0           # DataLoader workers; in-memory sets need none
    on_device: str = "auto"        # in-memory sets on the training device: auto (if it fits) | true (always, or fail) | false
    # synthetic data (tests, benchmarks)
    num_train: int = 512
    num_test: int = 128
    channels: int = 3
    num_classes: int = 10
    size: int = 32                 # stored image size of synthetic data


@dataclass
class OptimConfig:
    name: str = "sgd"              # sgd (paper)
    lr: float = 0.01               # initial learning rate (paper 0.01)
    momentum: float = 0.9          # (paper 0.9)
    weight_decay: float = 5e-4     # (paper 5e-4)
    nesterov: bool = False
    schedule: str = "plateau"      # none | step | plateau (paper: /10 when val error plateaus) | cosine
    gamma: float = 0.1             # lr factor at each step/plateau (paper 0.1)
    step_epochs: int = 30          # step: epochs between lr drops
    patience: int = 5              # plateau: evaluations without val/acc improvement before a drop
    warmup_epochs: int = 0         # linear warm-up from lr/10 over this many epochs


@dataclass
class EvalConfig:
    every_n_epochs: int = 1        # evaluate val and test every N epochs (and at the last); train_clean: every epoch
    train_clean_size: int = 2000   # training images (a fixed stratified sample of the training subset) evaluated
                                   # every epoch in eval mode, no augmentation: the training error the claims read
    ten_crop: bool = False         # also evaluate test on the paper's 10 patches (test/acc_10crop)
    error_threshold: float = 0.25  # epochs_to_train_error: epochs until the train_clean error falls below this


@dataclass
class TrainerConfig:
    max_epochs: int = 90           # (paper ~90)
    accelerator: str = "auto"      # auto | cpu | gpu | cuda | mps
    devices: Any = 1               # int or "auto"
    strategy: str = "auto"         # auto | ddp
    num_nodes: int = 1
    precision: str = "32-true"     # 32-true | bf16-mixed | 16-mixed | auto: bf16-mixed on a CPU with bf16 in
                                   # hardware (AMX/AVX512-BF16) or a bf16 GPU, else 32-true (precision.py)
    threads: int = 0               # torch CPU threads per run; 0 = torch's default
    deterministic: bool = False    # torch.use_deterministic_algorithms (slower on GPU)
    progress_bar: bool = True      # rich progress bar
    gradient_clip_val: Optional[float] = None
    limit_train_batches: Optional[float] = None
    benchmark: bool = False        # cudnn.benchmark
    fresh: bool = False            # ignore an existing run folder's checkpoint and start again


@dataclass
class WandbConfig:
    enabled: bool = False          # logger=wandb turns it on
    project: str = "alexlab"
    entity: Optional[str] = None
    mode: str = "auto"             # auto (online if logged in, else offline) | online | offline | disabled
    log_checkpoints: bool = False
    tags: list = field(default_factory=list)


@dataclass
class LoggerConfig:
    tensorboard: bool = False
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class LauncherConfig:
    name: str = "local"            # local | gpu_pool | slurm
    n_jobs: int = 1                # trials at once (gpu_pool)
    trials_per_gpu: int = 1        # gpu_pool: k small trials packed on one GPU
    max_retries: int = 1           # retries of a trial that ran out of memory


@dataclass
class PathsConfig:
    runs: str = "runs"             # single runs: <runs>/<experiment>/<job name>
    multirun: str = "multirun"     # sweeps: <multirun>/<sweep>/<experiment>/<job name>
    data: str = "${alexlab.cache:data}"  # downloads and cached statistics: one per user (settings.cache_root)
    run_dir: str = ""              # set by Hydra at run time; blank outside Hydra


@dataclass
class Config:
    name: str = "default"          # experiment name: first folder level of a run
    sweep_name: str = "adhoc"      # sweep name: first folder level of a multirun
    ablation_name: str = "custom"  # set by ablation=<name>: W&B job type and report row
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # extra Lightning callbacks, each `{name: {_target_: <class>, <argument>: <value>, ...}}` and
    # built with hydra.utils.instantiate: +callbacks.lr._target_=pytorch_lightning.callbacks.LearningRateMonitor
    callbacks: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(name="alexlab_schema", node=Config)

# Keys a newer schema replaced: the one line an old command gets names the new key and its values.
RENAMED = {"model.lrn": "model.lrn became model.norm: model.norm=lrn (paper), batchnorm or none "
                        "(model.lrn=false is model.norm=none)"}

# Allowed values of the keys whose values are not someone else's table (the model's toggles and
# data.augment take theirs from the code that builds them: `choices()`).
CHOICES = {
    "model.groups": (1, 2),
    "model.channels_last": ("false", "true", "auto"),
    "data.name": ("fashion_mnist", "cifar10", "imagefolder", "synthetic"),
    "data.on_device": ("auto", "true", "false"),  # compared in lower case: the command line's true is 'True' here
    "data.pca": ("dataset", "imagenet"),
    "optim.name": ("sgd",),
    "optim.schedule": ("none", "step", "plateau", "cosine"),
    "trainer.accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    "trainer.strategy": ("auto", "ddp", "ddp_spawn"),
    "trainer.precision": ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "auto"),
    "logger.wandb.mode": ("auto", "online", "offline", "disabled"),
    "launcher.name": ("local", "gpu_pool", "slurm"),
}

# key: (lowest, highest, whether the lowest itself is allowed, highest itself allowed)
RANGES = {
    "model.dropout": (0.0, 1.0, True, False),
    "model.width": (0.0, 64.0, False, True),
    "model.bias_init": (-10.0, 10.0, True, True),
    "model.lrn_size": (1, 99, True, True),
    "model.fc_width": (1, 65536, True, True),
    "model.conv_depth": (1, 16, True, True),
    "data.pca_std": (0.0, 10.0, True, True),
    "data.crop_padding": (0, 64, True, True),
    "data.image_size": (0, 4096, True, True),
    "data.batch_size": (1, 65536, True, True),
    "data.num_workers": (0, 256, True, True),
    "data.subset_seed": (0, 2**31 - 1, True, True),
    "optim.lr": (0.0, 100.0, False, True),
    "optim.momentum": (0.0, 1.0, True, False),
    "optim.weight_decay": (0.0, 1.0, True, True),
    "optim.gamma": (0.0, 1.0, False, True),
    "optim.step_epochs": (1, 10**6, True, True),
    "optim.patience": (0, 10**6, True, True),
    "optim.warmup_epochs": (0, 10**6, True, True),
    "eval.every_n_epochs": (1, 10**6, True, True),
    "eval.train_clean_size": (0, 10**9, True, True),
    "eval.error_threshold": (0.0, 1.0, False, False),
    "trainer.max_epochs": (1, 10**6, True, True),
    "trainer.gradient_clip_val": (0.0, 1e6, True, True),  # or null (no clipping)
    "seed": (0, 2**32 - 1, True, True),  # what seed_everything and numpy accept
    "trainer.threads": (0, 1024, True, True),
    "trainer.num_nodes": (1, 100000, True, True),
    "launcher.n_jobs": (1, 1024, True, True),
    "launcher.trials_per_gpu": (1, 64, True, True),
    "launcher.max_retries": (0, 100, True, True),
}

POSITIVE_OR_NULL = ("data.train_subset", "data.test_subset")
NULL_OR_IN_RANGE = ("trainer.gradient_clip_val",)  # keys of RANGES that may also be null

# keys that mean something for one data set only (W&B's run config leaves them out elsewhere)
ONLY_FOR = {"synthetic": ("data.num_train", "data.num_test", "data.channels", "data.num_classes", "data.size"),
            "imagefolder": ("data.resize",)}


def inapplicable(cfg) -> list[str]:
    """The keys of ONLY_FOR that do not apply to cfg's data set."""
    return [k for name, keys in ONLY_FOR.items() if name != get(cfg, "data.name") for k in keys]


def choices() -> dict[str, tuple]:
    """CHOICES plus the values the model and the augmentation implement, read from their tables.
    (Imported here, when a config is validated, so that the CLI's start and --help need no torch.)"""
    from .data.augment import AUGMENTS
    from .models.alexnet import ACTIVATIONS, FC_LAYER_COUNTS, INITS, NORMS, POOL_TYPES, POOLING_OVERLAPS, list_variants

    return {**CHOICES, "model.name": tuple(list_variants()), "model.activation": tuple(ACTIVATIONS),
            "model.pooling": tuple(POOLING_OVERLAPS), "model.pool_type": tuple(POOL_TYPES), "model.norm": NORMS,
            "model.fc_layers": FC_LAYER_COUNTS, "model.init": INITS, "data.augment": AUGMENTS}


def check_resizable(model) -> None:
    """conv_depth, fc_layers and fc_width resize layers the variant must have (convnet4 has neither
    a 3x3 stack nor hidden FC layers): the model's own rule, `resize_problem`. (Imported here, like
    choices(), so that the CLI's start and --help need no torch.)"""
    from .models.alexnet import VARIANTS, resize_problem

    problem = resize_problem(VARIANTS[model.name], model.conv_depth, model.fc_layers, model.fc_width)
    if problem:
        key, why = problem
        raise ConfigError(f"model.{key}={get(model, key)!r} is not valid for model.name={model.name!r}: {why}")


def check_keys(node, name: str) -> None:
    """A key added with `+` that the schema lacks (`+model.dropuot=0.3`) would be ignored silently."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    known = [f.name for f in dataclasses.fields(schema)]
    for key, value in node.items_ex(resolve=False):
        if key not in known:
            if f"{name}.{key}" in RENAMED:
                raise ConfigError(RENAMED[f"{name}.{key}"])
            raise ConfigError(f"{name}.{key} is not a key of {name}; valid keys: {', '.join(known)}")
        if isinstance(value, DictConfig):
            check_keys(value, f"{name}.{key}")


def check_top_level(cfg: DictConfig) -> None:
    """`+seeds=3` would add a key nothing reads (and train seed 0 under another folder name)."""
    known = [f.name for f in dataclasses.fields(Config)]
    for key in cfg.keys():
        if key not in known and key != "hydra":
            raise ConfigError(f"{key} is not a key of alexlab's config; valid top-level keys: {', '.join(known)} "
                              "(a sweep over seeds is -m 'seed=0,1,2'; extra callbacks go under +callbacks.<name>)")


def check_callbacks(callbacks) -> None:
    for name, spec in callbacks.items():
        if not isinstance(spec, DictConfig) or "_target_" not in spec:
            raise ConfigError(f"callbacks.{name} is not valid; give its class as "
                              f"+callbacks.{name}._target_=<module>.<Callback class> (and its arguments beside it)")


def validate(cfg) -> None:
    """Raise ConfigError (one line: key, value, what is valid) for the first bad value."""
    if isinstance(cfg, DictConfig):
        check_top_level(cfg)
        for section in ("model", "data", "optim", "eval", "trainer", "logger", "launcher", "paths"):
            check_keys(cfg[section], section)
        check_callbacks(cfg.callbacks)
    for key, valid in choices().items():
        value = get(cfg, key)
        if str(value).lower() not in {str(v).lower() for v in valid}:  # the command line's true is 'True' in a str field
            shown = ", ".join(str(v) for v in valid)
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {shown}")
    for key, (lo, hi, lo_ok, hi_ok) in RANGES.items():
        value = get(cfg, key)
        if value is None and key in NULL_OR_IN_RANGE:
            continue
        ok = (lo < value or (lo_ok and value == lo)) and (value < hi or (hi_ok and value == hi))
        if not ok:
            interval = f"{'[' if lo_ok else '('}{lo}, {hi}{']' if hi_ok else ')'}"
            raise ConfigError(f"{key}={value!r} is out of range; valid: {interval}")
    for key in POSITIVE_OR_NULL:
        value = get(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key}={value!r} is not valid; give a positive number of images or null")
    check_validation_split(cfg.data.val_size, cfg.optim.schedule)
    check_batch_limit(get(cfg, "trainer.limit_train_batches"))
    if cfg.model.groups == 2 and cfg.model.name == "convnet4":
        raise ConfigError("model.groups=2 is not valid for model.name='convnet4'; it has no split columns (use 1)")
    check_resizable(cfg.model)
    if cfg.model.one_column and cfg.model.groups != 2:
        raise ConfigError("model.one_column=true replaces the paper's two columns: it needs model.groups=2 "
                          "(experiment=imagenet_paper has it)")
    if not valid_devices(cfg.trainer.devices, cfg.trainer.accelerator):
        raise ConfigError(f"trainer.devices={cfg.trainer.devices!r} is not valid; give a count (1, 2, ...), -1 or auto "
                          "for every device, or GPU indices ([0, 1] or '0,1')")
    if str(cfg.data.on_device).lower() == "true" and cfg.data.name == "imagefolder":
        raise ConfigError("data.on_device=true is not valid for data.name='imagefolder': its images are decoded per "
                          "batch by workers; only fashion_mnist, cifar10 and synthetic are held in memory (use auto)")
    if cfg.data.name == "synthetic":
        for key in ONLY_FOR["synthetic"]:
            if get(cfg, key) < 1:
                raise ConfigError(f"{key}={get(cfg, key)!r} is not valid; give a positive integer")


PLATEAU_WITHOUT_VALIDATION = ("optim.schedule=plateau needs a validation split to watch, and data.val_size=0 holds "
                              "none out; set data.val_size (a fraction such as 0.1, or a number of images) or choose "
                              "optim.schedule=cosine, step or none")


def check_validation_split(val_size: float, schedule: str) -> None:
    """data.val_size is 0, a fraction in (0, 1) or a whole number of images; the plateau schedule
    needs one (it must never watch the test set). Whether the split leaves training images is
    checked when the data set is loaded (its size is known then)."""
    if val_size < 0 or (val_size >= 1 and val_size != int(val_size)):
        raise ConfigError(f"data.val_size={val_size!r} is not valid; give 0 (no validation split), a fraction in "
                          "(0, 1) of the training images, or a whole number of images >= 1")
    if schedule == "plateau" and val_size == 0:
        raise ConfigError(PLATEAU_WITHOUT_VALIDATION)


def check_batch_limit(value) -> None:
    """trainer.limit_train_batches as Lightning reads it: null (every batch), a fraction in (0, 1]
    of the batches, or a whole number above 1 of batches (0 would train nothing and still be
    marked completed; a negative number left the run "running")."""
    if value is None or 0 < value <= 1 or (value > 1 and value == int(value)):
        return
    raise ConfigError(f"trainer.limit_train_batches={value!r} is not valid; give a fraction in (0, 1] of the "
                      "training batches, a whole number of batches above 1, or null (all of them)")


def valid_devices(devices, accelerator: str = "auto") -> bool:
    """What Lightning's `devices` accepts: a count, -1/auto (all), GPU indices as a list or 'i,j' string."""
    if isinstance(devices, bool):
        return False
    if isinstance(devices, int):
        return devices >= 1 or devices == -1
    if isinstance(devices, str) and devices.strip() in ("auto", "-1"):
        return True
    if accelerator == "cpu":  # CPU processes are counted, not indexed
        return False
    if isinstance(devices, str):
        return all(p.strip().isdigit() for p in devices.split(","))
    try:
        return len(devices) > 0 and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
    except TypeError:
        return False


def conf_dir() -> str:
    """conf/ inside an installed wheel, else the repository's conf/ (editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"alexlab's conf/ folder not found beside {here}")


def schema_keys(schema=Config, prefix: str = "") -> list[str]:
    """Every leaf key of the schema, dotted ('model.lrn', 'logger.wandb.mode', ...)."""
    keys = []
    for f in dataclasses.fields(schema):
        kind = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(kind):
            keys += schema_keys(type(kind), f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


# config groups that say where/how a run executes (the experiment is the folder's parent level)
GROUPS_NOT_IN_NAME = ("experiment", "sweep", "launcher", "logger")


def folder_name_excludes() -> list[str]:
    """Command-line overrides left out of a run's folder name: the groups above, `name` (the folder's
    parent level), Hydra's verbosity, and every result-neutral key except those NAMED_IN_FOLDER.
    conf/config.yaml's hydra.job.config.override_dirname.exclude_keys reads this list."""
    neutral = [k for k in schema_keys() if ignored(k, RESULT_NEUTRAL) and k not in NAMED_IN_FOLDER]
    return [*GROUPS_NOT_IN_NAME, "name", "hydra.verbose", *neutral]


# the toggles --help lists, the paper's tricks first
HELP_TOGGLES = ("model.activation", "model.pooling", "model.norm", "model.dropout", "data.augment", "model.groups",
                "model.one_column", "model.pool_type", "model.fc_layers", "model.fc_width", "model.conv_depth",
                "model.width", "model.init", "data.train_subset", "data.val_size",
                "eval.ten_crop", "optim.lr", "optim.schedule", "trainer.max_epochs", "seed")


HELP_TAKES = {"data.train_subset": "a number of images | null (all)",
              "data.val_size": "0 | a fraction in (0, 1) | a number of images", "seed": "an integer"}


def toggle_help() -> str:
    """--help's toggle lines: key, what it takes (from the allowed values and ranges), and the
    schema's default, which is the paper's value."""
    allowed, lines = choices(), []
    for key in HELP_TOGGLES:
        default = get(Config(), key)
        if key in allowed:
            takes = " | ".join(str(v) for v in allowed[key])
        elif key in HELP_TAKES:
            takes = HELP_TAKES[key]
        elif key in RANGES:
            lo, hi, lo_ok, hi_ok = RANGES[key]
            takes = f"{'[' if lo_ok else '('}{lo}, {hi}{']' if hi_ok else ')'}"
        else:
            takes = "true | false"
        lines.append(f"  {key + '=':<22}{takes}   (default {str(default).lower() if isinstance(default, bool) else default})")
    return "\n".join(lines)


FOLDER_NAME_BYTES = 255  # what common file systems allow for one name


def job_name(override_dirname: str) -> str:
    """A run's folder name from its command-line overrides: 'ablation=tanh,seed=3' (or 'default').
    A name too long for a file system keeps its first whole overrides and ends in '~' and a hash of
    all of them: stable (the same command finds the same folder) and distinct."""
    name = override_dirname.replace("/", "_").replace(os.sep, "_") or "default"
    if len(name.encode()) <= FOLDER_NAME_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    head = name.encode()[:FOLDER_NAME_BYTES - len(digest) - 1].decode(errors="ignore")
    head = head.rsplit(",", 1)[0] if "," in head else head
    return f"{head}~{digest}"


if not OmegaConf.has_resolver("alexlab.job_name"):
    OmegaConf.register_new_resolver("alexlab.job_name", job_name)
if not OmegaConf.has_resolver("alexlab.cache"):
    OmegaConf.register_new_resolver("alexlab.cache", lambda sub: str(cache_root() / sub))
if not OmegaConf.has_resolver("alexlab.toggle_help"):
    OmegaConf.register_new_resolver("alexlab.toggle_help", toggle_help)
if not OmegaConf.has_resolver("alexlab.folder_name_excludes"):
    OmegaConf.register_new_resolver("alexlab.folder_name_excludes", folder_name_excludes)


def save_hydra_record(cfg, filename: str, output_dir: Path) -> None:
    """Hydra's .hydra/<filename>, written whole or not at all (Hydra's own writer opens the file and
    writes into it: a kill or a full disk mid-write would leave half a YAML file); a failed write is
    one line naming the file. By rank 0 alone: a SLURM job's other tasks run the same job."""
    if not is_rank_zero():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / filename, OmegaConf.to_yaml(cfg))


# Hydra's run_job looks _save_config up in hydra.core.utils at each call, so every job of every
# launcher (single runs, local, gpu_pool and submitit children: all import this module) writes
# through the one above; tests/reliability/test_atomic_writes.py fails if Hydra stops calling it.
if hasattr(hydra.core.utils, "_save_config"):
    hydra.core.utils._save_config = save_hydra_record
