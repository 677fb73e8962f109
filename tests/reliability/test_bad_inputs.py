"""Bad input: one line naming the key or path and what is valid, exit status 2, and nothing left
that a rerun would take for a finished run. W&B being unreachable is the one fault that is not
an error: training goes on. (Disk full while saving: test_atomic_writes.py.)"""
import pickle
import socket

import pytest
import torch

from conftest import CONF, TINY, write_idx
from faults import cli, finished_markers, one_error_line, tiny

SWEEP_FILES = {  # sweep/<name>.yaml on a search path in tmp_path: the repository's sweeps/ untouched
    "bad_key": "model:\n  colour: red\nhydra:\n  sweeper:\n    params:\n      seed: 0,1\n",
    "bad_param": "hydra:\n  sweeper:\n    params:\n      model.colour: red,blue\n",
    "bad_type": "model:\n  dropout: high\nhydra:\n  sweeper:\n    params:\n      seed: 0,1\n",
    "bad_value": "hydra:\n  sweeper:\n    params:\n      model.dropout: 0.5,1.5\n",
    "not_yaml": "hydra:\n  sweeper:\n    params:\n      seed: [0, 1\n",
}

# id: (multirun, arguments, what the line says); {tmp} is the test's folder, {name} a prepared one
def choices(group: str) -> str:
    """What Hydra's error lists for an unknown option of `group`: every file of the group, sorted."""
    return "choose one of: " + ", ".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))


BAD = {
    "unknown toggle value": (False, ["model.activation=gelu"],
                             ["model.activation='gelu' is not valid; choose one of: relu, tanh, sigmoid"]),
    "unknown pooling": (False, ["model.pooling=avg"], ["model.pooling='avg' is not valid", "overlapping, non_overlapping"]),
    "wrong type (float)": (False, ["model.dropout=abc"], ["model.dropout: Value 'abc'", "converted to Float"]),
    "wrong type (bool)": (False, ["model.one_column=maybe"], ["model.one_column: Value 'maybe' is not a valid bool"]),
    "wrong type (int)": (False, ["seed=abc"], ["seed: Value 'abc'", "converted to Integer"]),
    "negative seed": (False, ["seed=-1"], ["seed=-1 is out of range; valid: [0, 4294967295]"]),
    "seed above 2**32-1": (False, ["seed=4294967296"], ["seed=4294967296 is out of range; valid: [0, 4294967295]"]),
    "negative batch limit": (False, ["trainer.limit_train_batches=-1"],
                             ["trainer.limit_train_batches=-1.0 is not valid; give a fraction in (0, 1]",
                              "a whole number of batches above 1, or null"]),
    "zero batch limit": (False, ["trainer.limit_train_batches=0"], ["trainer.limit_train_batches=0.0 is not valid"]),
    "batch limit between whole numbers": (False, ["trainer.limit_train_batches=2.5"],
                                          ["trainer.limit_train_batches=2.5 is not valid"]),
    "batch fraction that leaves no batch": (False, ["trainer.limit_train_batches=0.01"],
                                            ["0.01", "limit_train_batches"]),
    "negative gradient clip": (False, ["trainer.gradient_clip_val=-1"],
                               ["trainer.gradient_clip_val=-1.0 is out of range; valid: [0.0, 1000000.0]"]),
    "unknown config group option": (False, ["data=imagenet21k"],
                                    ["data/imagenet21k", "choose one of: cifar10, fashion_mnist, imagefolder, synthetic"]),
    "unknown ablation": (False, ["ablation=no_relu"], ["ablation/no_relu", choices("ablation")]),
    "unknown key": (False, ["model.colour=red"], ["model.colour", "valid keys: name, activation, pooling"]),
    "unknown key added with +": (False, ["+model.dropuot=0.3"], ["model.dropuot is not a key of model", "dropout"]),
    "a key a newer schema renamed": (False, ["model.lrn=false"],
                                     ["model.lrn became model.norm", "model.lrn=false is model.norm=none"]),
    "unknown top-level key added with +": (False, ["+seeds=3"],
                                           ["seeds is not a key of alexlab's config", "-m 'seed=0,1,2'"]),
    "unknown top-level key swept with +": (True, ["+seeds=0,1,2"],
                                           ["seeds is not a key of alexlab's config", "no trial was started"]),
    "callback without a class": (False, ["+callbacks.timer.duration=1"],
                                 ["callbacks.timer is not valid", "+callbacks.timer._target_="]),
    "callback that is not one": (False, ["+callbacks.x._target_=collections.OrderedDict"],
                                 ["callbacks.x: collections.OrderedDict is not a Lightning Callback"]),
    "on_device=true on an image folder": (False, ["data=imagefolder", "data.root={tmp}", "data.on_device=true"],
                                          ["data.on_device=true is not valid for data.name='imagefolder'"]),
    "batch 0": (False, ["data.batch_size=0"], ["data.batch_size=0 is out of range; valid: [1, 65536]"]),
    "width 0": (False, ["model.width=0"], ["model.width=0.0 is out of range; valid: (0.0, 64.0]"]),
    "negative width": (False, ["model.width=-1"], ["model.width=-1.0 is out of range; valid: (0.0, 64.0]"]),
    "dropout 1.0": (False, ["model.dropout=1.0"], ["model.dropout=1.0 is out of range; valid: [0.0, 1.0)"]),
    "negative lr": (False, ["optim.lr=-0.1"], ["optim.lr=-0.1 is out of range; valid: (0.0, 100.0]"]),
    "zero epochs": (False, ["trainer.max_epochs=0"], ["trainer.max_epochs=0 is out of range"]),
    "unknown model name": (False, ["model.name=vgg"], ["model.name='vgg' is not valid; choose one of:", "alexnet_small"]),
    "groups=2 on convnet4": (False, ["model.name=convnet4", "model.groups=2"], ["model.groups=2 is not valid for"]),
    "devices not a count": (False, ["trainer.devices=abc"], ["trainer.devices='abc' is not valid; give a count"]),
    "train_subset larger than the data set": (False, ["data.train_subset=1000"],
                                              ["data.train_subset=1000 is larger than the 96 training images"]),
    "image_size larger than the images": (False, ["data.image_size=64"], ["data.image_size=64 is larger than the 32-px"]),
    "ImageNet PCA on grey images": (False, ["data.channels=1", "data.pca=imagenet"],
                                    ["data.pca=imagenet needs RGB images", "data.pca=dataset"]),
    "missing data folder": (False, ["data=cifar10", "data.root={tmp}/nowhere", "data.download=false"],
                            ["CIFAR-10 not found at {tmp}/nowhere/cifar-10-batches-py", "set data.root"]),
    "missing image folder": (False, ["data=imagefolder", "data.root={tmp}/nowhere"],
                             ["image folder {tmp}/nowhere/train does not exist", "train/<class>/*.jpg"]),
    "corrupt idx file": (False, ["data=fashion_mnist", "data.root={fmnist_root}", "data.download=false"],
                         ["cannot read idx file {fmnist_root}/train-images-idx3-ubyte.gz", "re-download"]),
    "damaged gzip data in an idx file": (False, ["data=fashion_mnist", "data.root={fmnist_root}", "data.download=false"],
                                         ["cannot read idx file {fmnist_root}/train-images-idx3-ubyte.gz: Error -3 "
                                          "while decompressing data: invalid block type", "re-download"]),
    "label out of range in an idx file": (False, ["data=fashion_mnist", "data.root={fmnist_root}",
                                                  "data.download=false"],
                                          ["labels in {fmnist_root}/t10k-labels-idx1-ubyte.gz run from 0 to 12, "
                                           "outside [0, 10)", "re-download"]),
    "label out of range in a CIFAR batch": (False, ["data=cifar10", "data.root={cifar_root}", "data.download=false"],
                                            ["labels in {cifar_root}/cifar-10-batches-py/data_batch_2 run from -1 to",
                                             "outside [0, 10)"]),
    "undecodable image read by a DataLoader worker": (False, ["data=imagefolder", "data.root={image_root}",
                                                              "data.resize=32", "data.image_size=28",
                                                              "data.num_workers=1", "optim.schedule=none"],
                                                      ["cannot decode image {image_root}/val/n02102040/zz_bad.png"]),
    "corrupt CIFAR pickle": (False, ["data=cifar10", "data.root={cifar_root}", "data.download=false"],
                             ["cannot read CIFAR-10 batch {cifar_root}/cifar-10-batches-py/data_batch_3", "re-download"]),
    "empty ImageFolder": (False, ["data=imagefolder", "data.root={empty_root}"],
                          ["image folder {empty_root}/train has no images", "expected {empty_root}/train/<class>/*.jpg"]),
    "unwritable output folder": (False, ["paths.runs={tmp}/a_file/runs"],
                                 ["cannot write {tmp}/a_file/runs/", "(Not a directory)", "writable folders"]),
    "CUDA requested with no GPU": (False, ["trainer.accelerator=gpu"],
                                   ["trainer.accelerator=gpu but no CUDA device is visible", "trainer.accelerator=cpu"]),
    "DDP inside a multirun": (True, ["trainer=ddp", "seed=0,1"],
                              ["trainer.strategy=ddp", "launcher=gpu_pool", "launcher=slurm", "drop -m"]),
    "unknown sweep": (True, ["sweep=nosuch"], ["sweep/nosuch", choices("sweep")]),
    "invalid value in one arm": (True, ["model.dropout=0.5,1.5"],
                                 ["trial ", "model.dropout=1.5 is out of range", "no trial was started"]),
    "sweep file: unknown key": (True, ["{sweeps}", "sweep=bad_key"], ["model.colour", "valid keys:"]),
    "sweep file: unknown swept key": (True, ["{sweeps}", "sweep=bad_param"], ["model.colour", "valid keys:"]),
    "sweep file: wrong type": (True, ["{sweeps}", "sweep=bad_type"], ["model.dropout: Value 'high'", "Float"]),
    "sweep file: value out of range": (True, ["{sweeps}", "sweep=bad_value"],
                                       ["model.dropout=1.5 is out of range; valid: [0.0, 1.0)", "no trial was started"]),
    "sweep file: not YAML": (True, ["{sweeps}", "sweep=not_yaml"], ["{sweeps_dir}/sweep/not_yaml.yaml (line ",
                                                                    "is not valid YAML"]),
}


def prepare(tmp_path, request) -> dict:
    """The folders a case names: broken data sets in their real formats, a file where a folder should be."""
    names = {"tmp": str(tmp_path)}
    (tmp_path / "a_file").write_text("not a folder\n")
    sweeps = tmp_path / "search" / "sweep"
    sweeps.mkdir(parents=True)
    for name, body in SWEEP_FILES.items():
        (sweeps / f"{name}.yaml").write_text(f"# @package _global_\nsweep_name: {name}\n" + body)
    names.update(sweeps_dir=str(sweeps.parent), sweeps=f"hydra.searchpath=[file://{sweeps.parent}]")
    return names


def fill(items, names):
    return [item.format(**names) for item in items]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_it_and_leaves_nothing_finished(case, tmp_path, request):
    multirun, args, needles = BAD[case]
    if case == "CUDA requested with no GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    names = prepare(tmp_path, request)
    if "corrupt idx" in case:
        root = request.getfixturevalue("fmnist_root")
        bad = root / "train-images-idx3-ubyte.gz"
        bad.write_bytes(bad.read_bytes()[:100])
        names["fmnist_root"] = str(root)
    if "damaged gzip" in case:  # the first deflate block's header made invalid: zlib.error, not a short file
        root = request.getfixturevalue("fmnist_root")
        bad = root / "train-images-idx3-ubyte.gz"
        data = bytearray(bad.read_bytes())
        start = data.index(0, 10) + 1 if data[3] & 0x08 else 10  # after the gzip header (and its file name)
        data[start] = 0xFF  # block type 11: reserved
        bad.write_bytes(bytes(data))
        names["fmnist_root"] = str(root)
    if "label out of range in an idx" in case:
        root = request.getfixturevalue("fmnist_root")
        write_idx(root / "t10k-labels-idx1-ubyte", [0] * 31 + [12])
        names["fmnist_root"] = str(root)
    if "label out of range in a CIFAR" in case:
        root = request.getfixturevalue("cifar_root")
        path = root / "cifar-10-batches-py" / "data_batch_2"
        entry = pickle.loads(path.read_bytes())
        entry["labels"][0] = -1
        path.write_bytes(pickle.dumps(entry))
        names["cifar_root"] = str(root)
    if "DataLoader worker" in case:  # a validation image only: the training statistics never read it
        root = request.getfixturevalue("imagefolder_root")
        (root / "val" / "n02102040" / "zz_bad.png").write_bytes(b"not an image")
        names["image_root"] = str(root)
    if "CIFAR pickle" in case:
        root = request.getfixturevalue("cifar_root")
        (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
        names["cifar_root"] = str(root)
    if "empty ImageFolder" in case:
        for split in ("train", "val"):
            (tmp_path / "empty" / split / "n01440764").mkdir(parents=True)
        names["empty_root"] = str(tmp_path / "empty")

    code, out, err = cli(tiny(*fill(args, names)), tmp_path, multirun=multirun)
    assert code == 2, out[-2000:] + err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("alexlab: error: "), err[-3000:]
    for needle in fill(needles, names):
        assert needle in lines[0], (needle, lines[0])
    assert finished_markers(tmp_path) == []


@pytest.mark.parametrize("case", ["unwritable sweep folder", "corrupt sweep ledger", "sweep ledger of another shape"])
def test_sweep_folder_faults_are_one_line(case, tmp_path):
    (tmp_path / "a_file").write_text("not a folder\n")
    args = tiny("seed=0,1")
    if case == "unwritable sweep folder":
        args.append(f"paths.multirun={tmp_path / 'a_file' / 'multirun'}")
        needle = f"alexlab: error: cannot write {tmp_path / 'a_file' / 'multirun'}"
    elif case == "corrupt sweep ledger":
        ledger = tmp_path / "multirun" / "adhoc" / "default" / "sweep_ledger.json"
        ledger.parent.mkdir(parents=True)
        ledger.write_text('{"trials": {"seed=0": {"sta')  # cut short (not by alexlab: it renames whole files)
        needle = f"alexlab: error: sweep ledger {ledger} is not valid JSON; delete it"
    else:  # JSON, but not what a ledger holds (was a KeyError traceback)
        ledger = tmp_path / "multirun" / "adhoc" / "default" / "sweep_ledger.json"
        ledger.parent.mkdir(parents=True)
        ledger.write_text("{}\n")
        needle = f"alexlab: error: sweep ledger {ledger} is JSON but not a ledger"
    code, _, err = cli(args, tmp_path, multirun=True)
    assert code == 2 and finished_markers(tmp_path) == []
    assert needle in err, err
    one_error_line(err)


def test_wandb_unreachable_is_not_an_error_training_goes_on(tmp_path, monkeypatch):
    import wandb

    from alexlab import wandb_logger

    with socket.socket() as s:  # a local port nobody listens on: refused at once, no network used
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RESUME",
                 "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / sub))
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef" * 2 + "01234567")  # looks logged in: tries online
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setattr(wandb_logger, "ONLINE_FAILED", False)
    wandb.teardown()  # W&B reads its variables once per process
    try:
        code, out, err = cli([*TINY, "logger=wandb", "logger.wandb.mode=online"], tmp_path)
    finally:
        wandb.teardown()
    assert code == 0, err[-3000:]
    (done,) = list((tmp_path / "runs").rglob("COMPLETED"))
    run_dir = done.parent
    warnings = [line for line in err.splitlines() if line.startswith("alexlab: warning:")]
    assert len(warnings) == 1 and "W&B online start failed" in warnings[0] and "logging offline" in warnings[0]
    assert "alexlab: error" not in err and len((run_dir / "metrics.csv").read_text().splitlines()) == 3
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # kept for `wandb sync`
