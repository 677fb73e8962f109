import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
FMNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")

# tiny, fast settings for any run a test starts
TINY = ["data=synthetic", "data.num_train=96", "data.num_test=48", "data.batch_size=32", "model.width=0.125",
        "eval.train_clean_size=32", "trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.threads=1",
        "trainer.accelerator=cpu", "model.init=default", "optim.lr=0.02"]


def compose_cfg(overrides=(), tmp_path: Path | None = None, return_hydra: bool = False):
    """The config `alexlab-train <overrides>` would run, composed in-process (no training)."""
    import alexlab.config  # noqa: F401  registers the schema and resolvers

    extra = []
    if tmp_path is not None:
        extra = [f"paths.runs={tmp_path / 'runs'}", f"paths.multirun={tmp_path / 'multirun'}",
                 f"paths.data={tmp_path / 'data'}", f"paths.run_dir={tmp_path / 'run'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides) + extra, return_hydra_config=return_hydra)


def run_cli(args, tmp_path: Path, timeout=300, env=None, check=False):
    """`alexlab-train` in a subprocess with paths inside tmp_path."""
    cmd = [sys.executable, "-m", "alexlab.cli", *args, f"paths.runs={tmp_path / 'runs'}",
           f"paths.multirun={tmp_path / 'multirun'}", f"paths.data={tmp_path / 'data'}"]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def tiny():
    return list(TINY)


@pytest.fixture(autouse=True)
def no_hydra_state_between_tests():
    """alexlab-train run in-process (`-m` especially) leaves Hydra's singletons set (mode MULTIRUN,
    say): a later test's direct `run(cfg)` would think it is a sweep trial (W&B group, ledger).
    Clear them after every test."""
    yield
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def write_idx(path: Path, array, gz=True) -> Path:
    """An idx file as Fashion-MNIST ships it: 0 0 0x08 ndim, big-endian sizes, uint8 data."""
    import gzip
    import struct

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    raw = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


@pytest.fixture
def fmnist_root(tmp_path):
    """A tiny Fashion-MNIST in the real idx format: 64 train, 32 test images."""
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    for split, n in (("train", 64), ("t10k", 32)):
        write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return root


@pytest.fixture
def cifar_root(tmp_path):
    """A tiny CIFAR-10 in torchvision's on-disk format (cifar-10-batches-py pickles)."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", 8) for i in range(1, 6)] + [("test_batch", 10)]:
        entry = {"batch_label": name, "labels": rng.integers(0, 10, n).tolist(),
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    return folder.parent


@pytest.fixture
def imagefolder_root(tmp_path):
    """Imagenette-style train/<class>/*.png and val/<class>/*.png of odd sizes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imagenette"
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("n01440764", "n02102040"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(200, 300)), int(rng.integers(260, 340))
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root
