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
    train_idx = dm.splits.train.numpy()
    assert np.array_equal(dm.train_x[:, 0].numpy(), read_idx(fmnist_root / "train-images-idx3-ubyte.gz")[train_idx])
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (32, 1, 28, 28)
    (test,) = dm.val_dataloader()  # no validation split asked for: test only
    assert len(dm.train_clean_dataloader().dataset) == 16 and len(test.dataset) == 32


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


# -- fixed samples: class-stratified, seeded by data.subset_seed alone ----------------------------
TRAIN_PER_CLASS, TEST_PER_CLASS = (9, 6, 12, 5), (5, 4, 6, 3)  # unequal, listed class by class
SAMPLES = ["data.train_subset=16", "data.val_size=8", "eval.train_clean_size=10", "data.test_subset=9"]


def class_sorted_image_folder(root):
    """An image folder as torchvision's ImageFolder lists Imagenette: train/<class>/*.png, class by class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", TEST_PER_CLASS)):
        for c, n in enumerate(per_class):
            (root / split / f"n0{c}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(root / split / f"n0{c}" / f"{i}.png")
    return ["data=imagefolder", f"data.root={root}", "data.resize=32", "data.image_size=32", "data.crop_padding=0",
            "data.num_workers=0", "data.batch_size=4"]


def class_sorted_idx_files(root):
    """Fashion-MNIST's idx format with the labels sorted, as a class-sorted set would be."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", TRAIN_PER_CLASS), ("t10k", TEST_PER_CLASS)):
        labels = np.repeat(np.arange(len(per_class)), per_class)
        write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (len(labels), 28, 28)))
        write_idx(root / f"{split}-labels-idx1-ubyte", labels)
    return ["data=fashion_mnist", f"data.root={root}", "data.download=false"]


CLASS_SORTED = {"imagefolder": class_sorted_image_folder, "fashion_mnist": class_sorted_idx_files}


def built(overrides, tmp_path):
    """The datamodule `alexlab-train <overrides>` trains on (train.build: the real path)."""
    from alexlab.train import build
    from conftest import compose_cfg

    dm, _, _ = build(compose_cfg(["model.width=0.125", *overrides], tmp_path))
    return dm


def classes_seen(loader) -> np.ndarray:
    labels = torch.cat([y for _, y in loader]).numpy()
    return np.bincount(labels, minlength=len(TRAIN_PER_CLASS))


def largest_share_ok(counts, parent_counts, size):
    """Each class within one image of its share size * count / total of the set it is drawn from."""
    share = size * np.asarray(parent_counts) / np.sum(parent_counts)
    return counts.sum() == size and bool(np.all(np.abs(counts - share) <= 1)) and bool(np.all(counts > 0))


@pytest.mark.parametrize("kind", list(CLASS_SORTED))
def test_a_class_sorted_data_set_gives_stratified_disjoint_samples(kind, tmp_path):
    dm = built(CLASS_SORTED[kind](tmp_path / kind) + SAMPLES, tmp_path)
    s = dm.splits
    val = classes_seen(dm.val_dataloader()[0])
    train = classes_seen(dm.train_dataloader())
    clean = classes_seen(dm.train_clean_dataloader())
    test = classes_seen(dm.val_dataloader()[1])
    assert largest_share_ok(val, TRAIN_PER_CLASS, 8)
    assert largest_share_ok(train, np.array(TRAIN_PER_CLASS) - val, 16)  # drawn from what val leaves
    assert largest_share_ok(clean, train, 10)  # drawn from the training subset
    assert largest_share_ok(test, TEST_PER_CLASS, 9)
    assert (dm.num_train, dm.num_val, dm.train_clean_size(), dm.num_test) == (16, 8, 10, 9)  # the budget is the subset
    assert not set(s.val.tolist()) & set(s.train.tolist()) and set(s.train_clean.tolist()) <= set(s.train.tolist())
    for part in (s.train, s.val, s.train_clean, s.test):
        assert part.tolist() == sorted(part.tolist())


def test_every_seed_and_ablation_arm_sees_the_same_images_and_subset_seed_draws_others(tmp_path):
    base = class_sorted_image_folder(tmp_path / "folder") + SAMPLES

    def samples(*more):
        s = built(base + list(more), tmp_path).splits
        return [part.tolist() for part in (s.train, s.val, s.train_clean, s.test)]

    paper = samples("seed=0")
    for arm in (["seed=1"], ["ablation=no_augment"], ["ablation=no_dropout", "seed=1"]):
        assert samples(*arm) == paper, arm
    assert samples("data.subset_seed=1") != paper


def test_samples_of_different_sizes_nest(tmp_path):
    folder = class_sorted_image_folder(tmp_path / "folder")
    small = built(folder + ["data.train_subset=8", "data.val_size=4"], tmp_path).splits
    large = built(folder + ["data.train_subset=16", "data.val_size=4"], tmp_path).splits
    assert set(small.train.tolist()) < set(large.train.tolist()) and small.val.tolist() == large.val.tolist()


@pytest.mark.parametrize("value", [-1, 2.5])
def test_a_bad_val_size_is_one_line_naming_the_key(value, tmp_path):
    from alexlab.config import validate
    from alexlab.errors import ConfigError
    from conftest import compose_cfg

    with pytest.raises(ConfigError, match=r"^data\.val_size=.* is not valid; give 0 \(no validation split\), "
                                          r"a fraction in \(0, 1\) .*whole number of images"):
        validate(compose_cfg([f"data.val_size={value}"], tmp_path))


def test_a_val_size_that_leaves_no_training_images_is_one_line(tmp_path, fmnist_root):
    with pytest.raises(DataError, match=r"^data\.val_size=64 holds out 64 of the 64 training images .*leaving none") as err:
        datamodule(tmp_path, name="fashion_mnist", root=str(fmnist_root), val_size=64)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"^data\.train_subset=60 is larger than the 64 training images of fashion_mnist "
                                        r"less the 6 held out by data\.val_size=0\.1 \(at most 58\)"):
        datamodule(tmp_path, name="fashion_mnist", root=str(fmnist_root), val_size=0.1, train_subset=60)


def test_largest_remainder_gives_each_class_its_share_within_one_image_and_never_more_than_it_has():
    from fractions import Fraction

    from alexlab.data.splits import largest_remainder

    rng = np.random.default_rng(1)
    for _ in range(300):
        counts = rng.integers(0, 40, rng.integers(1, 12))
        if counts.sum() == 0:
            continue
        n = int(rng.integers(0, counts.sum() + 1))
        got = largest_remainder(counts, n)
        shares = [Fraction(int(c) * n, int(counts.sum())) for c in counts]  # exact, independent of the float path
        assert got.sum() == n and np.all(got <= counts)
        assert all(abs(g - s) < 1 for g, s in zip(got.tolist(), shares)), (counts, n, got)
        assert all(g in (s.numerator // s.denominator, -(-s.numerator // s.denominator)) for g, s in zip(got.tolist(), shares))
