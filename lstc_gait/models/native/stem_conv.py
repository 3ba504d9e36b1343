"""The stem convolution (one input channel -> C channels, 'same' padding) through the C kernels.

With a single input channel PyTorch cannot tell channels_last_3d from the default layout, so the
library convolution answers in the default layout and a full-size copy (forward, and again for
the gradient) is needed before the channels_last_3d model; oneDNN is also slow on a 1-channel
input. The C kernel writes channels_last_3d directly, broadcasting each input value over the
output channels, and at inference applies the folded BN's bias and the ReLU while each row is in
L1. tests/test_native.py compares values and gradients with ``F.conv3d``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .buffers import empty_channels_last
from .build import load_kernels
from .call_args import channels_last_kernel, kernel_gradient, pointer, thread_count

_CL = torch.channels_last_3d


def native_stem_available(x: Tensor, weight: Tensor, padding, stride, dilation, groups: int) -> bool:
    """True for a stride-1, 'same'-padded, single-input-channel CPU float32 conv with odd kernels."""
    pad = [padding] * 3 if isinstance(padding, int) else list(padding)
    ones = (1, 1, 1)
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 5 and x.shape[1] == 1 and weight.dim() == 5 and weight.shape[1] == 1 and groups == 1
            and tuple(stride) == ones and tuple(dilation) == ones
            and all(k % 2 == 1 and p == k // 2 for k, p in zip(weight.shape[2:], pad, strict=True))
            and load_kernels() is not None)


def _geometry(x: Tensor, weight: Tensor) -> tuple[int, ...]:
    n, _, t, h, w = x.shape
    return (n, t, h, w, weight.shape[0], *weight.shape[2:])


def _threads(x: Tensor) -> int:
    return thread_count(x.shape[0] * x.shape[2])


def stem_forward(x: Tensor, weight: Tensor, bias: Tensor | None = None, relu: bool = False) -> Tensor:
    """``conv3d(x, weight, bias, padding=k//2)`` (+ ReLU), channels_last_3d output; no autograd."""
    lib = load_kernels()
    xc = x.contiguous()  # (N, 1, T, H, W): the same memory in either layout
    k = channels_last_kernel(weight)
    b = None if bias is None else bias.detach().float().contiguous()
    n, _, t, h, w = x.shape
    y = empty_channels_last((n, weight.shape[0], t, h, w))
    lib.stem_forward(pointer(xc), pointer(k), pointer(b), int(relu), pointer(y), *_geometry(x, weight), _threads(x))
    return y


class _StemConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, padding: tuple[int, int, int]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return stem_forward(x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        g = grad_y.float().contiguous(memory_format=_CL)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:  # the data rarely needs a gradient: the library is fine here
            grad_x = torch.nn.grad.conv3d_input(x.shape, weight, g, padding=ctx.padding)
        if ctx.needs_input_grad[1]:
            lib = load_kernels()
            xc = x.contiguous()
            geo = _geometry(x, weight)
            grad_w = kernel_gradient(
                lambda acc, scratch, threads: lib.stem_backward_weight(pointer(xc), pointer(g), acc, scratch, *geo,
                                                                       threads),
                weight, _threads(x))
        return grad_x, grad_w, None


def native_stem_conv3d(x: Tensor, weight: Tensor) -> Tensor:
    """Differentiable ``F.conv3d(x, weight, padding=k//2)`` for ``x`` (N, 1, T, H, W), channels_last_3d out.

    Callers check :func:`native_stem_available` first.
    """
    padding = tuple(k // 2 for k in weight.shape[2:])
    return _StemConv.apply(x, weight, padding)


__all__ = ["native_stem_available", "native_stem_conv3d", "stem_forward"]
