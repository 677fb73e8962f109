"""The paper's augmentation on whole batches, on whatever device the batch is on (Section 4.1).

Images arrive as uint8 (N, C, H, W) in their stored size (28/32 px small sets, 256x256 for
image folders). `BatchTransform` turns them into normalised float batches:
  train: [0, 1] -> PCA lighting -> per-channel standardisation -> zero-pad -> random crop + flip
  eval:  [0, 1] -> standardisation -> zero-pad ("view"), then a centre crop or the 10 patches.
Standardisation uses the training set's per-channel mean and std (the paper subtracts the
per-pixel mean image and does not divide). Padding after standardisation means the border is
the data set's mean colour. One-channel images get the 1-D form of PCA lighting: eigval = the
pixel variance, eigvec = [[1]]. Randomness comes from torch's global generator of the batch's
device (which the training loop reseeds each epoch) unless a generator is passed.
docs/AUGMENTATION.md says what each `data.augment` value does per data set.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

AUGMENTS = ("none", "crop_flip", "crop_flip_pca")  # data.augment


def crop_flip(x: torch.Tensor, size: int, flip: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image uniform random `size`x`size` crops of (N, C, H, W), each mirrored with p=0.5,
    in one gather (no Python loop over images)."""
    n, _, h, w = x.shape
    if size > h or size > w:
        raise ValueError(f"crop size {size} is larger than the {h}x{w} images")
    device = x.device
    oy = torch.randint(0, h - size + 1, (n,), device=device, generator=generator)
    ox = torch.randint(0, w - size + 1, (n,), device=device, generator=generator)
    steps = torch.arange(size, device=device)
    rows = oy[:, None] + steps                                            # (N, size)
    cols = ox[:, None] + steps                                            # (N, size)
    if flip:
        mirrored = torch.rand(n, device=device, generator=generator) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, size, size, C)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def ten_crop(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The paper's 10 test patches: four corners and the centre, and their mirror images."""
    h, w = x.shape[-2:]
    corners = [x[..., :size, :size], x[..., :size, w - size:], x[..., h - size:, :size],
               x[..., h - size:, w - size:], center_crop(x, size)]
    return corners + [c.flip(-1) for c in corners]


class PCALighting(nn.Module):
    """Add eigvec @ (alpha * eigval) to every pixel of an image, alpha ~ N(0, std) drawn per
    image per call (paper: std 0.1). `eigval` (C,), `eigvec` (C, C) with eigenvectors as columns,
    both of the covariance of [0, 1] pixel values. Works on (N, C, H, W) on any device."""

    def __init__(self, eigval, eigvec, std: float = 0.1):
        super().__init__()
        if eigval is None or eigvec is None:
            raise ValueError("PCALighting needs eigval and eigvec (pixel_statistics of the training set)")
        eigval = torch.as_tensor(eigval, dtype=torch.float32).reshape(-1)
        eigvec = torch.as_tensor(eigvec, dtype=torch.float32)
        if eigvec.shape != (eigval.numel(), eigval.numel()):
            raise ValueError(f"PCALighting: eigvec has shape {tuple(eigvec.shape)}, expected "
                             f"({eigval.numel()}, {eigval.numel()}) for {eigval.numel()} eigenvalue(s)")
        self.register_buffer("eigval", eigval)
        self.register_buffer("eigvec", eigvec)
        self.std = std

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.std == 0:
            return x
        channels = self.eigval.numel()
        if x.shape[1] != channels:
            raise ValueError(f"PCALighting has {channels} channel(s) but the batch has {x.shape[1]}")
        alpha = torch.randn(x.shape[0], channels, device=x.device, generator=generator) * self.std
        # shift_n = sum_i alpha_ni * eigval_i * eigvec[:, i]; its covariance is std^2 P diag(eigval^2) P^T
        shift = (alpha * self.eigval.to(x.device)) @ self.eigvec.to(x.device).T  # (N, C)
        return x + shift.to(x.dtype)[:, :, None, None]


class BatchTransform(nn.Module):
    """uint8 stored images -> normalised model inputs, per `data.augment` (none | crop_flip | crop_flip_pca).

    Its statistics are buffers, so they move to the training device with the LightningModule
    and are saved in its checkpoints."""

    def __init__(self, mean, std, image_size: int, padding: int, augment: str = "crop_flip",
                 eigval=None, eigvec=None, pca_std: float = 0.1):
        super().__init__()
        if augment not in AUGMENTS:
            raise ValueError(f"augment={augment!r} is not valid; choose one of: {', '.join(AUGMENTS)}")
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.image_size, self.padding, self.augment = image_size, padding, augment
        self.lighting = PCALighting(eigval, eigvec, pca_std) if augment == "crop_flip_pca" else None
        if self.lighting is not None and self.lighting.eigval.numel() != self.mean.numel():
            raise ValueError(f"PCA lighting has {self.lighting.eigval.numel()} channel(s) but the images have "
                             f"{self.mean.numel()}")

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, [self.padding] * 4) if self.padding else x

    def train_batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.augment == "none":
            return center_crop(self.eval_view(x), self.image_size)
        x = x.float() / 255.0
        if self.lighting is not None:  # before standardisation: eigen-values are of [0, 1] pixels
            x = self.lighting(x, generator)
        x = self._pad((x - self.mean) / self.std)
        return crop_flip(x, self.image_size, generator=generator)

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised and padded, uncropped: `center_crop` or `ten_crop` it."""
        return self._pad(self._standardise(x))

    def eval_batch(self, x: torch.Tensor) -> torch.Tensor:
        return center_crop(self.eval_view(x), self.image_size)
