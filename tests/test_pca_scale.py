"""PCA lighting's pixel scale: `data.pca=dataset` and `data.pca=imagenet` both give eigenvalues of
the covariance of [0, 1] pixel values, and the lighting shift is added to [0, 1] pixels
(docs/AUGMENTATION.md, "The pixel scale"). The paper's formula on [0, 255] pixels would make the
shift 255x larger; these tests fail if either mode, or the transform, leaves the [0, 1] convention."""
import itertools

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from alexlab.config import DataConfig
from alexlab.data import AlexDataModule, pixel_statistics
from alexlab.data import datamodules
from alexlab.data.datamodules import IMAGENET_PCA

# Every pixel is made of three fair coins a, b, c in {0, 1}: R = 255 a, G = 100 (a + b), B = 50 (a + c).
# On the [0, 1] scale a pixel is MIX @ (a, b, c); each coin has variance 1/4 over a population in
# which the 8 coin combinations are equally frequent, so the covariance is MIX MIX^T / 4 (times
# n / (n - 1) for the unbiased estimate).
MIX = np.array([[255, 0, 0], [100, 100, 0], [50, 0, 50]]) / 255.0
COINS = np.array(list(itertools.product([0, 1], repeat=3)))  # the 8 combinations, rows (a, b, c)


def coin_images(n_images: int = 8) -> torch.Tensor:
    """(n, 3, 4, 4) uint8 images; each holds every coin combination exactly twice."""
    pixels = np.rint(np.concatenate([COINS, COINS]) @ (MIX.T * 255)).astype(np.uint8)  # (16, 3)
    image = torch.from_numpy(pixels.T.reshape(3, 4, 4).copy())
    return image.expand(n_images, 3, 4, 4).contiguous()


def coin_covariance(n_pixels: int) -> np.ndarray:
    return MIX @ MIX.T / 4 * n_pixels / (n_pixels - 1)


def test_pixel_statistics_returns_the_eigenvalues_of_the_covariance_of_0_1_pixels():
    images = coin_images()
    cov = coin_covariance(images[:, 0].numel())
    stats = pixel_statistics(images)
    assert stats["eigval"] == pytest.approx(np.linalg.eigvalsh(cov)[::-1].tolist(), rel=1e-9)
    vectors = np.array(stats["eigvec"])
    assert cov @ vectors == pytest.approx(vectors * np.array(stats["eigval"]), abs=1e-12)  # columns: cov v = lambda v


def test_the_published_imagenet_eigenvalues_are_on_the_0_1_scale():
    # A [0, 1] variable has variance at most 1/4, so three channels' eigenvalues sum to at most 3/4;
    # the [0, 255] covariance's would be 255^2 times larger (the 55.46 often quoted is 0.2175 x 255).
    assert sum(IMAGENET_PCA["eigval"]) <= 3 / 4
    vectors = np.array(IMAGENET_PCA["eigvec"])
    assert vectors.T @ vectors == pytest.approx(np.eye(3), abs=1e-3)  # orthonormal columns


def lighting_transform(pca: str, tmp_path, monkeypatch):
    """AlexDataModule's own BatchTransform for a training set of coin images."""
    images = coin_images()
    labels = torch.zeros(len(images), dtype=torch.long)
    monkeypatch.setattr(datamodules.sources, "make_synthetic",
                        lambda *args, **kwargs: (images, labels, images[:2], labels[:2], ("coin",)))
    cfg = OmegaConf.structured(DataConfig(name="synthetic", augment="crop_flip_pca", pca=pca, pca_std=0.1,
                                          crop_padding=0, channels=3, size=4, num_train=len(images), num_test=2))
    module = AlexDataModule(cfg, data_dir=str(tmp_path))
    module.setup("fit")
    return module.transform, images


@pytest.mark.parametrize("pca", ["dataset", "imagenet"])
def test_the_lighting_shift_is_alpha_times_eigenvalue_along_each_eigenvector_in_0_1_units(pca, tmp_path, monkeypatch):
    transform, images = lighting_transform(pca, tmp_path, monkeypatch)
    if pca == "dataset":
        eigval, eigvec = np.linalg.eigh(coin_covariance(images[:, 0].numel()))
        eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    else:
        eigval, eigvec = np.array(IMAGENET_PCA["eigval"]), np.array(IMAGENET_PCA["eigvec"])
    # one colour per image: crops and flips leave it alone, so each output pixel is (x/255 + shift - mean) / std
    colour = torch.tensor([120, 60, 200], dtype=torch.uint8)
    batch = colour.reshape(1, 3, 1, 1).expand(20_000, 3, 4, 4).contiguous()
    out = transform.train_batch(batch, torch.Generator().manual_seed(0))[:, :, 0, 0].double()
    mean, std = transform.mean.reshape(3).double(), transform.std.reshape(3).double()
    shift = (out * std + mean - colour.double() / 255).numpy()  # in [0, 1] pixel units
    # alpha_i ~ N(0, 0.1): the shift's coordinate along eigenvector i has std 0.1 * eigval_i
    spread = (shift @ eigvec).std(axis=0)
    assert spread == pytest.approx(0.1 * eigval, rel=0.05)
