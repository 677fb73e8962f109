"""Local response normalisation exactly as written in the AlexNet paper (Section 3.3).

    b[i] = a[i] / (k + alpha * sum_{j=max(0, i-n//2)}^{min(N-1, i+n//2)} a[j]^2) ** beta

Unlike torch.nn.LocalResponseNorm, alpha is *not* divided by n, and the window is clipped
at the first and last channel instead of averaging in zeros.

Speed (benchmarks/lrn.py, docs/PERFORMANCE.md): a custom autograd.Function with the gradient
written out, so autograd keeps three tensors instead of a dozen intermediates; the channel
window is summed by in-place shifted slices (exact, unlike a cumulative sum), and d**-beta is
exp(-beta * log d), which on CPU is ~3x cheaper than pow. With s = window sum, d = k + alpha*s,
p = d**-beta, b = a*p:

    dL/da[i] = g[i]*p[i] - 2*alpha*beta * a[i] * sum_{j: i in window(j)} g[j]*a[j]*p[j]/d[j]

and the window is symmetric, so the last sum is the same window sum. Half-precision inputs
(bf16/fp16 autocast) are normalised in float32: in bf16, 2 + 1e-4*s rounds to 2.
"""
import torch
from torch import nn


def _window_sum(t: torch.Tensor, half: int, out: torch.Tensor) -> torch.Tensor:
    """out[:, i] += sum of t[:, j] over channels j in [i-half, i+half] other than i, clipped to [0, N-1]."""
    channels = t.shape[1]
    for offset in range(1, min(half, channels - 1) + 1):
        out[:, offset:] += t[:, :-offset]
        out[:, :-offset] += t[:, offset:]
    return out


class _LRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float):
        half = size // 2
        s = torch.mul(x, x).mul_(alpha)
        d = _window_sum(s, half, s + k)  # k + alpha * (window sum of squares)
        p = torch.log(d).mul_(-beta).exp_()
        ctx.save_for_backward(x, d, p)
        ctx.constants = (half, alpha, beta)
        return x * p

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():  # create_graph=True: d and p carry no graph, so refuse loudly
            raise RuntimeError("alexlab's LocalResponseNorm does not support double backward")
        x, d, p = ctx.saved_tensors
        half, alpha, beta = ctx.constants
        gp = g * p
        t = (gp * x).div_(d)
        t = _window_sum(t, half, t.clone())
        return gp.addcmul_(x, t, value=-2.0 * alpha * beta), None, None, None, None


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 2.0) -> torch.Tensor:
    if x.dtype in (torch.float16, torch.bfloat16):
        with torch.autocast(x.device.type, enabled=False):
            return _LRN.apply(x.float(), size, alpha, beta, k).to(x.dtype)
    return _LRN.apply(x, size, alpha, beta, k)


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
