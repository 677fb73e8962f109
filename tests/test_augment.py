"""The paper's augmentation (Section 4.1): crops, flips, PCA lighting, 10-crop test, statistics."""
import json
import math

import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats
from torch import nn

from alexlab.config import DataConfig, EvalConfig, OptimConfig
from alexlab.data import AlexDataModule, BatchTransform, PCALighting, center_crop, crop_flip, pixel_statistics, ten_crop
from alexlab.data.datamodules import IMAGENET_PCA
from alexlab.data.sources import DEBIAN_FASHION_MNIST
from alexlab.errors import DataError
from conftest import compose_cfg, run_cli

P_MIN = 1e-3  # fixed seeds make these deterministic; a biased sampler fails them by many orders of magnitude


def positions(n, c, h, w):
    """Images whose pixel (y, x) of channel k holds k * 1000 + y * w + x: a crop names its offset."""
    grid = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
    return (grid + 1000 * torch.arange(c).reshape(c, 1, 1)).expand(n, c, h, w).contiguous()


def locate(crops, h, w):
    """(offset y, offset x, mirrored) of each crop of `positions` images."""
    mirrored = crops[:, 0, 0, 0] > crops[:, 0, 0, -1]
    top_left = torch.where(mirrored, crops[:, 0, 0, -1], crops[:, 0, 0, 0]).long()
    return top_left // w, top_left % w, mirrored


def test_crops_stay_in_range_and_are_uniform_over_positions():
    n, h, w, size = 20_000, 8, 11, 6  # 3 x 6 offsets, each seen ~1,100 times, mirrored or not
    x = positions(n, 2, h, w)
    crops = crop_flip(x, size, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (n, 2, size, size)
    oy, ox, mirrored = locate(crops, h, w)
    assert 0 <= oy.min() and oy.max() == h - size and 0 <= ox.min() and ox.max() == w - size
    # every crop is exactly the window its top-left pixel names (mirrored when it is), in every channel
    steps = torch.arange(size)
    cols = ox[:, None] + steps
    cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    expected = (oy[:, None, None] + steps[None, :, None]) * w + cols[:, None, :]
    expected = expected[:, None].float() + 1000 * torch.arange(2).reshape(1, 2, 1, 1)
    assert torch.equal(crops, expected)
    # uniform over the (h-size+1)(w-size+1) offsets x mirrored: 36 cells, chi-square
    cell = (oy * (w - size + 1) + ox) * 2 + mirrored.long()
    counts = torch.bincount(cell, minlength=(h - size + 1) * (w - size + 1) * 2)
    assert len(counts) == 36 and counts.min() > 0
    assert stats.chisquare(counts.numpy()).pvalue > P_MIN
    assert stats.binomtest(int(mirrored.sum()), n, 0.5).pvalue > P_MIN


def test_batch_transform_crops_are_windows_of_the_zero_padded_standardised_image():
    n, side, pad = 10_000, 8, 2
    image = (torch.arange(side * side).reshape(1, 1, side, side) + 1).to(torch.uint8)
    t = BatchTransform([0.0], [1.0], image_size=side, padding=pad, augment="crop_flip")
    torch.manual_seed(0)
    out = t.train_batch(image.expand(n, 1, side, side))
    padded = t.eval_view(image)[0, 0]  # standardised, then a zero border
    assert torch.allclose(padded, torch.nn.functional.pad(image.float() / 255.0, [pad] * 4)[0, 0], rtol=1e-6, atol=0)
    windows = torch.stack([padded[y:y + side, x:x + side] for y in range(2 * pad + 1) for x in range(2 * pad + 1)])
    windows = torch.cat([windows, windows.flip(-1)])  # 50 candidates: 25 offsets, plain and mirrored
    match = (out[:, 0, None] == windows[None]).flatten(2).all(-1)  # (n, 50)
    assert torch.equal(match.sum(1), torch.ones(n, dtype=torch.long))  # each crop is exactly one candidate
    counts = match.sum(0)
    assert stats.chisquare(counts.numpy()).pvalue > P_MIN
    assert t.eval_batch(image).equal(padded[pad:pad + side, pad:pad + side].reshape(1, 1, side, side))


@pytest.mark.parametrize("stored,padding,size", [(12, 3, 12), (20, 0, 16)])
def test_batch_transform_is_lighting_then_standardisation_then_padded_crop(stored, padding, size):
    # the fused fast path (one multiply-add; uint8 crops first when there is no border) computes
    # exactly the paper's order of operations, drawing the same random numbers
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    t = BatchTransform(mean, std, size, padding, "crop_flip_pca", IMAGENET_PCA["eigval"], IMAGENET_PCA["eigvec"], 0.5)
    x = torch.randint(0, 256, (64, 3, stored, stored), dtype=torch.uint8)
    got = t.train_batch(x, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    lit = t.lighting(x.float() / 255, g)
    standard = (lit - torch.tensor(mean).reshape(1, 3, 1, 1)) / torch.tensor(std).reshape(1, 3, 1, 1)
    want = crop_flip(torch.nn.functional.pad(standard, [padding] * 4), size, generator=g)
    assert got.shape == (64, 3, size, size) and torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, t.train_batch(x, torch.Generator().manual_seed(5)), atol=1e-2)


def test_flips_are_exact_mirror_images():
    x = positions(500, 3, 9, 9)
    plain = crop_flip(x, 5, flip=False, generator=torch.Generator().manual_seed(1))
    flipped = crop_flip(x, 5, flip=True, generator=torch.Generator().manual_seed(1))  # same offsets drawn first
    mirrored = ~(plain == flipped).flatten(1).all(1)
    assert 100 < mirrored.sum() < 400
    assert torch.equal(flipped[mirrored], plain[mirrored].flip(-1))
    assert torch.equal(flipped[~mirrored], plain[~mirrored])


def test_ten_crop_is_four_corners_centre_and_their_mirrors():
    x = positions(2, 3, 12, 14)
    patches = ten_crop(x, 8)
    assert len(patches) == 10 and all(p.shape == (2, 3, 8, 8) for p in patches)
    expected = [x[..., :8, :8], x[..., :8, 6:], x[..., 4:, :8], x[..., 4:, 6:], x[..., 2:10, 3:11]]
    expected += [e.flip(-1) for e in expected]
    # the same ten patches, each once (their order does not matter: the softmax is averaged)
    assert sorted(next(i for i, e in enumerate(expected) if torch.equal(p, e)) for p in patches) == list(range(10))
    assert torch.equal(center_crop(x, 8), expected[4])


def lighting_noise(eigval, eigvec, channels, n=100_000, std=0.1):
    x = torch.rand(n, channels, 2, 3)
    out = PCALighting(eigval, eigvec, std)(x, generator=torch.Generator().manual_seed(0))
    noise = (out - x).double()
    # one draw per image: the same shift on every pixel of an image (float32 rounding aside)
    assert (noise - noise[:, :, :1, :1]).abs().max() < 1e-6
    return noise[:, :, 0, 0]


@pytest.mark.parametrize("pca", ["imagenet", "random"])
def test_pca_lighting_noise_has_mean_zero_and_the_paper_covariance(pca):
    if pca == "imagenet":
        eigval, eigvec = torch.tensor(IMAGENET_PCA["eigval"]), torch.tensor(IMAGENET_PCA["eigvec"])
    else:
        eigvec = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(5)))[0]
        eigval = torch.tensor([0.05, 0.02, 0.004])
    std, n = 0.1, 100_000
    noise = lighting_noise(eigval, eigvec, 3, n, std)
    p, lam = eigvec.double(), eigval.double()
    expected = std**2 * p @ torch.diag(lam**2) @ p.T  # docs/PAPER.md: add P [a1 l1, a2 l2, a3 l3]^T, a ~ N(0, std)
    assert (noise.mean(0).abs() < 5 * expected.diagonal().sqrt() / math.sqrt(n)).all()
    # whitened by the expected transform, the noise is N(0, I): each covariance entry within 5 standard errors
    white = torch.linalg.solve(p @ torch.diag(std * lam), noise.T).T
    assert (torch.cov(white.T) - torch.eye(3, dtype=torch.float64)).abs().max() < 5 * math.sqrt(2 / n)
    assert torch.linalg.matrix_norm(torch.cov(noise.T) - expected) / torch.linalg.matrix_norm(expected) < 0.03


def test_pca_lighting_on_one_channel_adds_the_variance_times_alpha():
    variance, std, n = 0.09, 0.1, 100_000
    noise = lighting_noise([variance], [[1.0]], 1, n, std)[:, 0]
    assert abs(noise.mean()) < 5 * std * variance / math.sqrt(n)
    assert abs(noise.std() / (std * variance) - 1) < 5 * math.sqrt(1 / (2 * n))
    with pytest.raises(ValueError, match="1 channel"):
        PCALighting([variance], [[1.0]])(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="eigvec"):
        PCALighting([1.0, 2.0, 3.0], [[1.0]])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pca_lighting_and_crops_on_cuda():
    t = BatchTransform([0.5] * 3, [0.25] * 3, 224, 0, "crop_flip_pca", IMAGENET_PCA["eigval"], IMAGENET_PCA["eigvec"]).cuda()
    x = torch.randint(0, 256, (16, 3, 256, 256), dtype=torch.uint8, device="cuda")
    torch.manual_seed(0)
    a = t.train_batch(x)
    torch.manual_seed(0)
    assert a.device.type == "cuda" and a.shape == (16, 3, 224, 224) and torch.equal(a, t.train_batch(x))


def test_same_seed_gives_the_same_augmented_batch():
    t = BatchTransform([0.5] * 3, [0.25] * 3, 32, 4, "crop_flip_pca", IMAGENET_PCA["eigval"], IMAGENET_PCA["eigvec"])
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    batches = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)  # the training loop seeds torch from (seed, step) before augmenting
        batches.append(t.train_batch(x))
    assert torch.equal(batches[0], batches[1]) and not torch.equal(batches[0], batches[2])
    g = [torch.Generator().manual_seed(3) for _ in range(2)]
    assert torch.equal(t.train_batch(x, g[0]), t.train_batch(x, g[1]))


class PoolLinear(nn.Module):
    """Per-pixel features, global average pool, linear: blind to where a pixel is and to mirroring."""

    def __init__(self, channels=3, classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(16, classes))

    def forward(self, x):
        return self.net(x) * 4  # sharper softmax, so a wrongly averaged one would show


def validate_ten_crop(model, x, y, image_size):
    """test/* and test/*_10crop of `model` through AlexLabModule's validation path (Trainer.validate)."""
    import pytorch_lightning as pl

    from alexlab.module import AlexLabModule

    transform = BatchTransform([0.5] * 3, [0.25] * 3, image_size, 0, "none")
    eval_cfg = OmegaConf.structured(EvalConfig(ten_crop=True))
    module = AlexLabModule(model=model, transform=transform, num_classes=10, optim_cfg=OmegaConf.structured(OptimConfig()),
                           eval_cfg=eval_cfg, eval_names=["test"])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    trainer.validate(module, dataloaders=loader, verbose=False)
    return ({k: float(v) for k, v in module.eval_metrics["test"].compute().items()},
            {k: float(v) for k, v in module.ten_crop_metrics.compute().items()})


def test_ten_crop_of_a_position_and_mirror_blind_model_equals_its_single_crop():
    # 4-periodic 30x30 images: every 24x24 window holds each of the 16 phases 36 times, so the
    # ten patches differ pixel by pixel but a pooled model sees the same thing in each.
    gen = torch.Generator().manual_seed(0)
    tiles = torch.randint(0, 256, (96, 3, 4, 4), dtype=torch.uint8, generator=gen)
    x = tiles.repeat(1, 1, 8, 8)[..., :30, :30]
    y = torch.randint(0, 10, (96,), generator=gen)
    assert not torch.equal(ten_crop(x, 24)[0], ten_crop(x, 24)[1])  # the patches really differ
    torch.manual_seed(0)
    single, ten = validate_ten_crop(PoolLinear(), x, y, 24)
    assert 0 < single["acc"] < 1 and 0 < single["acc_top5"] < 1
    assert ten["acc"] == single["acc"] and ten["acc_top5"] == single["acc_top5"]
    assert ten["loss"] == pytest.approx(single["loss"], abs=1e-5)
    # control: a model that sees positions scores the ten patches differently, and the 10-crop
    # score is the one of its softmax averaged over the ten standardised patches
    torch.manual_seed(0)
    seeing = nn.Sequential(nn.Flatten(), nn.Linear(3 * 24 * 24, 10))
    single, ten = validate_ten_crop(seeing, x, y, 24)
    assert abs(ten["loss"] - single["loss"]) > 1e-3
    with torch.no_grad():
        probs = torch.stack([seeing(p).softmax(-1) for p in ten_crop((x.float() / 255 - 0.5) / 0.25, 24)]).mean(0)
    assert ten["loss"] == pytest.approx(float(torch.nn.functional.nll_loss(probs.log(), y)), abs=1e-5)
    assert ten["acc"] == pytest.approx(float((probs.argmax(1) == y).float().mean()))


def test_pixel_statistics_on_a_known_covariance():
    # R = G = v in {50, 250}, B = w in {100, 140}, the four colours equally often: covariance
    # [[a, a, 0], [a, a, 0], [0, 0, b]], a = (100/255)^2, b = (20/255)^2 (population); eigen:
    # 2a along (1, 1, 0)/sqrt 2, b along (0, 0, 1), 0 along (1, -1, 0)/sqrt 2.
    colours = torch.tensor([[50, 50, 100], [50, 50, 140], [250, 250, 100], [250, 250, 140]], dtype=torch.uint8)
    images = colours[torch.arange(4 * 250) % 4].reshape(250, 4, 3).permute(0, 2, 1).reshape(250, 3, 2, 2)
    s = pixel_statistics(images)
    count = 1000
    unbiased = count / (count - 1)
    a, b = (100 / 255) ** 2 * unbiased, (20 / 255) ** 2 * unbiased
    assert s["mean"] == pytest.approx([150 / 255, 150 / 255, 120 / 255], abs=1e-12)
    assert s["std"] == pytest.approx([math.sqrt(a), math.sqrt(a), math.sqrt(b)], abs=1e-12)
    assert s["eigval"] == pytest.approx([2 * a, b, 0.0], abs=1e-12)
    vec = torch.tensor(s["eigvec"])
    for i, want in enumerate(([1, 1, 0], [0, 0, 1], [1, -1, 0])):
        want = torch.tensor(want, dtype=torch.float32) / torch.tensor(want, dtype=torch.float32).norm()
        assert abs(float(vec[:, i] @ want)) == pytest.approx(1.0, abs=1e-6)  # up to sign
    gray = pixel_statistics(images[:, :1])
    assert gray["eigval"] == pytest.approx([a], abs=1e-12) and gray["eigvec"] == [[1.0]]


def synthetic(tmp_path, **overrides):
    cfg = OmegaConf.structured(DataConfig(name="synthetic", num_train=64, num_test=16, download=False, **overrides))
    dm = AlexDataModule(cfg, OmegaConf.structured(EvalConfig(train_clean_size=8)), data_dir=str(tmp_path / "data"))
    dm.setup("fit")
    return dm


def test_statistics_are_cached_per_data_set_and_reused(tmp_path):
    first = synthetic(tmp_path)
    files = list((tmp_path / "data" / "stats").glob("synthetic-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == first.stats
    planted = {**first.stats, "mean": [0.25, 0.5, 0.75]}
    files[0].write_text(json.dumps(planted))
    again = synthetic(tmp_path)
    assert again.stats == planted and again.transform.mean.flatten().tolist() == [0.25, 0.5, 0.75]
    files[0].write_text("{not json")
    assert synthetic(tmp_path).stats == first.stats  # a damaged cache is recomputed
    synthetic(tmp_path, train_subset=32)
    synthetic(tmp_path, channels=1)
    assert len(list((tmp_path / "data" / "stats").glob("*.json"))) == 3  # keyed by subset and channels


def test_statistics_are_keyed_by_which_images_train_not_only_how_many(tmp_path):
    stats = tmp_path / "data" / "stats"
    first = synthetic(tmp_path, train_subset=32)
    other_images = synthetic(tmp_path, train_subset=32, subset_seed=1)  # 32 images too, others
    assert other_images.splits.train.tolist() != first.splits.train.tolist()
    assert len(list(stats.glob("*.json"))) == 2 and other_images.stats != first.stats
    synthetic(tmp_path, train_subset=32, val_size=8)  # val drawn first: the 32 differ again
    assert len(list(stats.glob("*.json"))) == 3
    assert synthetic(tmp_path, train_subset=32, subset_seed=1).stats == other_images.stats  # the same images: cached


CASES = {  # data set -> overrides for `alexlab-train`, tiny
    "synthetic_rgb": ["data=synthetic", "data.num_train=64", "data.num_test=16"],
    "synthetic_gray": ["data=synthetic", "data.num_train=64", "data.num_test=16", "data.channels=1"],
    "fashion_mnist": ["data=fashion_mnist", "data.train_subset=256", "data.test_subset=32"],
    "cifar10": ["data=cifar10"],
    "imagefolder": ["data=imagefolder", "model=alexnet", "data.num_workers=0"],
    "imagefolder_dataset_pca": ["data=imagefolder", "model=alexnet", "data.num_workers=0", "data.pca=dataset"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_crop_flip_pca_works_on_every_data_set(case, tmp_path, request):
    from alexlab.models import build_model

    overrides = CASES[case] + ["data.augment=crop_flip_pca", "data.batch_size=8", "model.width=0.125",
                               "data.download=false", "data.val_size=0"]  # the fixtures hold < 5,000 images
    if case == "fashion_mnist" and not __import__("os").path.isdir(DEBIAN_FASHION_MNIST):
        overrides.append(f"data.root={request.getfixturevalue('fmnist_root')}")
    if case == "cifar10":
        overrides.append(f"data.root={request.getfixturevalue('cifar_root')}")
    if case.startswith("imagefolder"):
        overrides.append(f"data.root={request.getfixturevalue('imagefolder_root')}")
    cfg = compose_cfg(overrides, tmp_path)
    dm = AlexDataModule(cfg.data, cfg.eval, data_dir=cfg.paths.data)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    c, size = dm.in_channels, dm.image_size
    assert size == (227 if case.startswith("imagefolder") else x.shape[-1])
    lighting = dm.transform.lighting
    assert lighting is not None and lighting.eigval.numel() == c and lighting.eigval.min() >= 0
    assert lighting.eigval.max() > 0  # not a silent no-op
    if cfg.data.pca == "imagenet":
        assert lighting.eigval.tolist() == pytest.approx(IMAGENET_PCA["eigval"])
    shifted = lighting(x.float() / 255) - x.float() / 255
    assert shifted.abs().amin(dim=(1, 2, 3)).min() > 0  # every image gets its own lighting shift
    torch.manual_seed(0)
    batch = dm.transform.train_batch(x)
    assert batch.shape == (len(x), c, size, size) and batch.dtype == torch.float32 and batch.isfinite().all()
    net = build_model(cfg.model, dm.num_classes, c, size).eval()
    with torch.no_grad():
        assert net(batch).shape == (len(x), dm.num_classes)
    assert dm.transform.eval_batch(x).shape == (len(x), c, size, size)


@pytest.mark.parametrize("data", ["synthetic", "fashion_mnist"])
def test_imagenet_pca_on_one_channel_data_fails_with_the_documented_message(data, tmp_path, fmnist_root):
    base = [f"data={data}", "data.channels=1", f"data.root={fmnist_root}", "data.pca=imagenet",
            "data.val_size=0"]  # the fixture holds 64 images, fewer than the 5,000 of Fashion-MNIST's split
    cfg = compose_cfg(base + ["data.augment=crop_flip_pca"], tmp_path)
    with pytest.raises(DataError, match=r"^data\.pca=imagenet needs RGB images but .* has 1 channel\(s\); use data\.pca=dataset"):
        AlexDataModule(cfg.data, cfg.eval, data_dir=cfg.paths.data).setup("fit")
    cfg = compose_cfg(base + ["data.augment=crop_flip"], tmp_path)
    AlexDataModule(cfg.data, cfg.eval, data_dir=cfg.paths.data).setup("fit")  # unused PCA values: no error


@pytest.mark.slow
def test_cli_ten_crop_columns_and_the_one_channel_imagenet_pca_error(tmp_path, tiny):
    import csv

    tiny = [o for o in tiny if not o.startswith("trainer.max_epochs=")] + ["trainer.max_epochs=1"]
    proc = run_cli(tiny + ["eval=ten_crop", "data.augment=crop_flip_pca", "name=tc"], tmp_path, check=True)
    (metrics,) = (tmp_path / "runs" / "tc").glob("*/metrics.csv")
    row = next(csv.DictReader(metrics.open()))
    for key in ("test/acc", "test/acc_10crop", "test/acc_top5_10crop", "test/loss_10crop"):
        assert 0 <= float(row[key]) < math.inf, (key, proc.stdout[-2000:])
    proc = run_cli(tiny + ["data.channels=1", "data.pca=imagenet"], tmp_path)
    assert proc.returncode == 2
    assert "alexlab: error: data.pca=imagenet needs RGB images but synthetic has 1 channel(s)" in proc.stderr
