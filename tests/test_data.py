"""Loaders read each data set's real on-disk format; missing or broken data fails in one line."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from alexlab.config import DataConfig, EvalConfig
from alexlab.data import AlexDataModule
from alexlab.data.sources import DEBIAN_FASHION_MNIST, read_idx
from alexlab.errors import DataError
from conftest import write_idx


def datamodule(tmp_path, **overrides):
    cfg = OmegaConf.structured(DataConfig(download=False, **overrides))
    dm = AlexDataModule(cfg, OmegaConf.structured(EvalConfig(train_clean_size=16)), seed=0, data_dir=str(tmp_path / "data"))
    dm.setup("fit")
    return dm


def test_idx_reader_round_trip(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (True, False):
        assert np.array_equal(read_idx(write_idx(tmp_path / f"x{gz}", data, gz=gz)), data)


def test_fashion_mnist_from_idx_files(fmnist_root, tmp_path):
    dm = datamodule(tmp_path, name="fashion_mnist", root=str(fmnist_root), train_subset=40, batch_size=32)
    assert dm.train_x.shape == (40, 1, 28, 28) and dm.train_x.dtype == torch.uint8
    assert dm.test_x.shape == (32, 1, 28, 28) and dm.num_classes == 10 and dm.image_size == 28
    assert np.array_equal(dm.train_x[:, 0].numpy(), read_idx(fmnist_root / "train-images-idx3-ubyte.gz")[:40])
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (32, 1, 28, 28)
    clean, test = dm.val_dataloader()
    assert len(clean.dataset) == 16 and len(test.dataset) == 32


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST and __import__("os").path.isdir(DEBIAN_FASHION_MNIST)), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_package(tmp_path):
    dm = datamodule(tmp_path, name="fashion_mnist", train_subset=100, test_subset=50)
    assert len(dm.train_x) == 100 and len(dm.test_x) == 50 and dm.classes[0] == "T-shirt/top"


def test_cifar10_from_torchvision_pickles(cifar_root, tmp_path):
    dm = datamodule(tmp_path, name="cifar10", root=str(cifar_root))
    assert dm.train_x.shape == (40, 3, 32, 32) and dm.test_x.shape == (10, 3, 32, 32)
    assert dm.num_classes == 10 and dm.in_channels == 3


def test_imagefolder_resized_to_256_and_cropped_to_227(imagefolder_root, tmp_path):
    dm = datamodule(tmp_path, name="imagefolder", root=str(imagefolder_root), image_size=227, crop_padding=0,
                    batch_size=4, augment="crop_flip")
    assert dm.num_classes == 2 and dm.num_train == 6 and dm.num_test == 4
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 256, 256) and x.dtype == torch.uint8
    assert dm.transform.train_batch(x).shape == (4, 3, 227, 227)
    assert dm.transform.eval_batch(x).shape == (4, 3, 227, 227)


@pytest.mark.parametrize("name,needle", [("fashion_mnist", "apt-get install dataset-fashion-mnist"),
                                         ("cifar10", "cifar-10-batches-py"), ("imagefolder", "train/<class>")])
def test_missing_data_names_the_path_and_the_remedy(name, needle, tmp_path):
    missing = tmp_path / "nowhere"
    import alexlab.data.sources as sources
    old, sources.DEBIAN_FASHION_MNIST = sources.DEBIAN_FASHION_MNIST, str(missing / "debian")
    try:
        with pytest.raises(DataError) as err:
            datamodule(tmp_path, name=name, root=str(missing))
    finally:
        sources.DEBIAN_FASHION_MNIST = old
    assert str(missing) in str(err.value) and needle in str(err.value) and "\n" not in str(err.value)


def test_corrupt_idx_and_pickle_are_named(fmnist_root, cifar_root, tmp_path):
    bad = fmnist_root / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read idx file .*train-images-idx3-ubyte.gz"):
        datamodule(tmp_path, name="fashion_mnist", root=str(fmnist_root))
    (cifar_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        datamodule(tmp_path, name="cifar10", root=str(cifar_root))


def test_empty_imagefolder_and_oversized_subset(tmp_path, fmnist_root):
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        datamodule(tmp_path, name="imagefolder", root=str(tmp_path / "empty"))
    with pytest.raises(DataError, match="data.train_subset=1000 is larger than the 64 training images"):
        datamodule(tmp_path, name="fashion_mnist", root=str(fmnist_root), train_subset=1000)


def test_epoch_shuffle_depends_on_seed_and_epoch_only(tmp_path):
    dm = datamodule(tmp_path, name="synthetic", num_train=50, batch_size=10)

    def order(epoch):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return torch.cat([y for _, y in loader]).tolist()

    assert order(3) == order(3) and order(3) != order(4)
    assert sorted(order(3)) == sorted(dm.train_y.tolist())  # a permutation: every image once
