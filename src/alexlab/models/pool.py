"""Max pooling that is fast on a CPU in NCHW, with the same numbers as torch's.

PyTorch's CPU max pool is vectorised along the channels only when they are contiguous
(channels_last); in NCHW it walks each window element by element, and on this project's 2-core
machine the fmnist_quick net's three pools took half as long as its five convolutions' forward
pass. Here a CPU NCHW input is pooled in channels_last (a copy each way; forward and backward ~3x
faster in all at batch 32, benchmarks/pool.py) and the gradient is routed back by torch's own NCHW backward from
the indices of that pass. A max pool only compares and copies, so the output, the indices and
the gradient equal torch's NCHW results exactly, ties included (tests/test_models.py checks),
and the run is the same run: only faster.
"""
import torch
import torch.nn.functional as F
from torch import nn


class _ChannelsLastMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, indices = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel_size, stride, padding,
                                  dilation, ceil_mode, return_indices=True)
        indices = indices.contiguous()  # a position within each (image, channel) plane, whatever the layout
        ctx.save_for_backward(x, indices)
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        return y.contiguous()

    @staticmethod
    def backward(ctx, g):
        x, indices = ctx.saved_tensors
        dx = torch.ops.aten.max_pool2d_with_indices_backward(g.contiguous(), x, *map(_pair, ctx.args[:4]),
                                                             ctx.args[4], indices)
        return dx, None, None, None, None, None


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def takes_fast_path(x: torch.Tensor) -> bool:
    """A CPU batch in NCHW (channels_last input is already fast), outside torch.compile's tracing."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.is_floating_point() and x.is_contiguous()
            and not x.is_contiguous(memory_format=torch.channels_last) and not torch.compiler.is_compiling())


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d, computed in channels_last for a CPU NCHW input (same output and gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices or not takes_fast_path(x):
            return super().forward(x)
        args = (self.kernel_size, self.stride if self.stride is not None else self.kernel_size, self.padding,
                self.dilation, self.ceil_mode)
        if not (torch.is_grad_enabled() and x.requires_grad):  # evaluation: no indices to keep
            return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), *args).contiguous()
        return _ChannelsLastMaxPool.apply(x, *args)
