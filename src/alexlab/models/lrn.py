"""Local response normalisation exactly as written in the AlexNet paper (Section 3.3).

    b[i] = a[i] / (k + alpha * sum_{j=max(0, i-n//2)}^{min(N-1, i+n//2)} a[j]^2) ** beta

Unlike torch.nn.LocalResponseNorm, alpha is *not* divided by n, and the window is clipped
at the first and last channel instead of averaging in zeros.

Speed (benchmarks/lrn.py, docs/PERFORMANCE.md): an autograd.Function with the gradient written
out. With d = k + alpha * (window sum of a^2), p = d**-beta, b = a*p, and a symmetric window,

    dL/da[i] = g[i]*p[i] - 2*alpha*beta * a[i] * (window sum of g*a*p/d)[i]

It saves only its input (which the ReLU before it keeps anyway) and recomputes d and p in the
backward pass. Float32 and bfloat16 CPU tensors, NCHW or channels_last, go through a fused C
kernel (lrn_cpu.c: one pass each way, built on first use with the system's C compiler;
ALEXLAB_LRN_KERNEL=torch turns it off); it computes in float32 and keeps the input's dtype and
memory format. Everything else takes the PyTorch version below, which on a CPU works through the
batch in slices of ~0.5 MB that stay in cache (fresh pages cost more than the arithmetic here).
Its window is summed by shifted slices (exact, unlike a cumulative sum), and d**-beta is
exp(-beta * log d), ~3x cheaper than pow on a CPU. Half-precision inputs (bf16/fp16 autocast)
are normalised in float32 on either path: in bf16, 2 + 1e-4*s rounds to 2. On a GPU use
model.compile=true, which fuses the dozen elementwise passes.
"""
import torch
from torch import nn

from . import lrn_cpu

CHUNK = 131072  # elements per CPU slice (at least one image)


def _window_sum(t: torch.Tensor, half: int, out: torch.Tensor) -> torch.Tensor:
    """out[:, i] += sum of t[:, j] over channels j in [i-half, i+half] other than i, clipped to [0, N-1]."""
    channels = t.shape[1]
    for offset in range(1, min(half, channels - 1) + 1):
        out[:, offset:].add_(t[:, :-offset])  # (not `+=`, which also copies the view onto itself)
        out[:, :-offset].add_(t[:, offset:])
    return out


def _denominator(x: torch.Tensor, half: int, alpha: float, k: float) -> torch.Tensor:
    s = torch.mul(x, x).mul_(alpha)
    return _window_sum(s, half, s + k)  # k + alpha * (window sum of squares)


def _slices(x: torch.Tensor):
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return [slice(None)]
    step = max(1, CHUNK // max(1, x[0].numel()))
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


class _LRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float):
        half = size // 2
        ctx.save_for_backward(x)
        ctx.constants = (half, alpha, beta, k)
        ctx.fused = lrn_cpu.usable(x)  # backward takes the same path (a bf16 x must not reach the ops below)
        if ctx.fused:
            return lrn_cpu.forward(x, half, alpha, beta, k)
        y = torch.empty_like(x)
        for part in _slices(x):
            xs = x[part]
            p = _denominator(xs, half, alpha, k).log_().mul_(-beta).exp_()
            torch.mul(xs, p, out=y[part])
        return y

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():  # create_graph=True: the pieces below carry no graph, so refuse loudly
            raise RuntimeError("alexlab's LocalResponseNorm does not support double backward")
        (x,) = ctx.saved_tensors
        half, alpha, beta, k = ctx.constants
        if ctx.fused:
            return lrn_cpu.backward(x, g, half, alpha, beta, k), None, None, None, None
        dx = torch.empty_like(x)
        for part in _slices(x):
            xs, gs = x[part], g[part]
            d = _denominator(xs, half, alpha, k)
            gp = torch.log(d).mul_(-beta).exp_().mul_(gs)  # g * p
            t = torch.mul(gp, xs).div_(d)
            torch.addcmul(gp, xs, _window_sum(t, half, t.clone()), value=-2.0 * alpha * beta, out=dx[part])
        return dx, None, None, None, None


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 2.0) -> torch.Tensor:
    if x.dtype in (torch.float16, torch.bfloat16) and not lrn_cpu.usable(x):  # (the kernel reads bf16 itself)
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
