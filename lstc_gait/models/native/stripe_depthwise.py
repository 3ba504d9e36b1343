"""Stripe-local depthwise conv3d on CPU through the C kernels, with autograd.

Same values as the PyTorch formulation in ``lstc_gait.models.lstc.stripe_depthwise_conv3d``
(tests/test_native.py checks outputs and both gradients), computed where the data lies: the
kernels clip every tap at its stripe's edges, so the stripes are never copied into the batch axis
and back (four full-size copies per training step), and the weight gradient is a register-blocked
loop instead of the library's generic depthwise backward, the slowest op of an LSTC training step
on CPU (docs/performance.md). The C code runs on ``torch.get_num_threads()`` OpenMP threads;
ctypes releases the GIL for the call.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .buffers import empty_channels_last
from .build import load_kernels
from .call_args import channels_last_kernel, kernel_gradient, pointer, thread_count

_CL = torch.channels_last_3d


def native_stripe_depthwise_available(x: Tensor, weight: Tensor) -> bool:
    """True when the C kernels can run this call (CPU float32, odd kernel, kernels built)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 5 and weight.dim() == 5 and weight.shape[1] == 1 and weight.shape[0] == x.shape[1]
            and all(k % 2 == 1 for k in weight.shape[2:]) and load_kernels() is not None)


def _geometry(x: Tensor, weight: Tensor, num_stripes: int) -> tuple[int, ...]:
    n, c, t, h_total, w = x.shape
    k_t, k_h, k_w = weight.shape[2:]
    h = max(1, h_total // num_stripes)
    return n, t, h_total, w, c, k_t, k_h, k_w, num_stripes, h


class _StripeDepthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, num_stripes: int) -> Tensor:  # type: ignore[override]
        lib = load_kernels()
        xc = x.contiguous(memory_format=_CL)
        k = channels_last_kernel(weight)
        y = empty_channels_last(xc.shape)
        geo = _geometry(xc, weight, num_stripes)
        lib.sdw_forward(pointer(xc), pointer(k), pointer(y), *geo, thread_count(geo[0] * geo[1]))
        ctx.save_for_backward(xc, weight)
        ctx.num_stripes = num_stripes
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):  # type: ignore[override]
        lib = load_kernels()
        xc, weight = ctx.saved_tensors
        g = grad_y.to(torch.float32).contiguous(memory_format=_CL)
        geo = _geometry(xc, weight, ctx.num_stripes)
        threads = thread_count(geo[0] * geo[1])
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # The transpose of this conv is the same conv with the kernel flipped in T, H and W.
            k = channels_last_kernel(weight.flip((2, 3, 4)))
            grad_x = empty_channels_last(xc.shape)
            lib.sdw_forward(pointer(g), pointer(k), pointer(grad_x), *geo, threads)
        if ctx.needs_input_grad[1]:
            grad_w = kernel_gradient(
                lambda acc, scratch, n: lib.sdw_backward_weight(pointer(xc), pointer(g), acc, scratch, *geo, n),
                weight, threads)
        return grad_x, grad_w, None


def native_stripe_depthwise_conv3d(x: Tensor, weight: Tensor, num_stripes: int) -> Tensor:
    """Stripe-local 'same' depthwise conv3d of ``x`` (N, C, T, H, W) with ``weight`` (C, 1, kT, kH, kW).

    Output in channels_last_3d memory. Callers check :func:`native_stripe_depthwise_available` first.
    """
    return _StripeDepthwise.apply(x, weight, int(num_stripes))
