"""Local response normalisation exactly as written in the AlexNet paper (Section 3.3).

    b[i] = a[i] / (k + alpha * sum_{j=max(0, i-n//2)}^{min(N-1, i+n//2)} a[j]^2) ** beta

Unlike torch.nn.LocalResponseNorm, alpha is *not* divided by n, and the window is clipped
at the first and last channel instead of averaging in zeros. The window sum is n shifted
slices of the zero-padded squares: exact, and much cheaper on CPU than torch's avg_pool3d.
"""
import torch
import torch.nn.functional as F
from torch import nn


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 2.0) -> torch.Tensor:
    half = size // 2
    sq = x * x
    channels = x.shape[1]
    padded = F.pad(sq, (0, 0, 0, 0, half, half))  # zeros beyond the edges = clipped window
    window = padded[:, 0:channels]
    for offset in range(1, 2 * half + 1):
        window = window + padded[:, offset:offset + channels]
    return x / (k + alpha * window).pow(beta)


class LocalResponseNorm(nn.Module):
    """The paper's LRN; defaults are its values: n=5, alpha=1e-4, beta=0.75, k=2."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        if size < 1:
            raise ValueError(f"LocalResponseNorm size must be >= 1, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
