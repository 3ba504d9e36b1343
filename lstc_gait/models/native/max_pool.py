"""2x2 spatial max-pool (``F.max_pool3d(x, (1, 2, 2))`` values and gradients) through the C kernels.

One pass each way on channels_last_3d data, no index tensor (the backward recomputes the window's
maximum from the saved input) and no zero-filled gradient buffer; the library op stores int64
indices and zero-fills the full-size input gradient before scattering into it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .buffers import empty_channels_last
from .build import load_kernels
from .call_args import pointer, thread_count

_CL = torch.channels_last_3d


def native_max_pool_available(x: Tensor) -> bool:
    """True for CPU float32 (N, C, T, H, W) input with H, W >= 2 and the kernels built."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 5 and x.shape[3] >= 2
            and x.shape[4] >= 2 and load_kernels() is not None)


def _args(x: Tensor) -> tuple[int, int, int, int, int]:
    n, c, t, h, w = x.shape
    return n * t, h, w, c, thread_count(n * t)


class _MaxPool2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        xc = x.contiguous(memory_format=_CL)
        n, c, t, h, w = x.shape
        y = empty_channels_last((n, c, t, h // 2, w // 2))
        load_kernels().maxpool2_forward(pointer(xc), pointer(y), *_args(xc))
        ctx.save_for_backward(xc)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):  # type: ignore[override]
        (xc,) = ctx.saved_tensors
        g = grad_y.float().contiguous(memory_format=_CL)
        gx = empty_channels_last(xc.shape)
        load_kernels().maxpool2_backward(pointer(xc), pointer(g), pointer(gx), *_args(xc))
        return gx


def native_max_pool_hw2(x: Tensor) -> Tensor:
    """Differentiable 2x2 spatial max-pool, channels_last_3d output; check availability first."""
    return _MaxPool2.apply(x)
