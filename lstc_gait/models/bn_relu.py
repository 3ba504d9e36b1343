"""Training-mode ``relu(batch_norm(x))`` as one autograd node, for channels_last_3d CPU activations.

Same math as ``F.relu(nn.BatchNorm3d(x))`` in training mode (batch statistics, biased variance
for normalising, unbiased for the running estimate, the module's momentum rule). Why a custom
node: on the project's 2-core CPU a full-resolution activation at batch 16 is 43-86 MB, every
fresh buffer of that size is page-faulted in by the kernel (15-35 ms each, more than the
arithmetic) and the library's BN + ReLU forward and backward allocate four of them and make
about ten passes. Here, in the ``(positions, C)`` view channels_last_3d gives for free:

- statistics: one column sum and one ``x^T x`` matrix product (its diagonal is the sum of squares);
- forward: ``addcmul`` into the output, ReLU in place (one new buffer);
- backward: the ReLU mask applied into one new buffer, two reductions (a sum and a matrix
  product), then ``dx = A*g + B*x + C`` per channel computed in place in that buffer.

The variance uses ``E[x^2] - mean^2`` accumulated by the fp32 matrix product (as the DDP
GlobalBatchNorm does), accurate to ~1e-6 of ``E[x^2]``, ample for batch statistics.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .native import load_kernels


def _rows(x: Tensor) -> Tensor:
    """``(N, C, T, H, W)`` channels_last_3d -> ``(N*T*H*W, C)`` view."""
    return x.permute(0, 2, 3, 4, 1).reshape(-1, x.shape[1])


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _pair_sums(lib, name: str, tensors: tuple[Tensor, ...], p: int, c: int) -> tuple[Tensor, Tensor]:
    """Run a two-sum C reduction; per-thread double partials summed here."""
    threads = max(1, min(torch.get_num_threads(), p))
    first = torch.zeros(threads, c, dtype=torch.float64)
    second = torch.zeros(threads, c, dtype=torch.float64)
    getattr(lib, name)(*map(_ptr, tensors), _ptr(first), _ptr(second), p, c, threads)
    return first.sum(0).float(), second.sum(0).float()


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,  # type: ignore[override]
                stats_out: list) -> Tensor:
        lib = load_kernels()
        x2 = _rows(x)
        p, c = x2.shape
        if lib is not None:
            total, total_sq = _pair_sums(lib, "bnr_stats", (x2,), p, c)
        else:
            total, total_sq = x2.sum(0), torch.mm(x2.t(), x2).diagonal()
        mean = total / p
        var = (total_sq / p - mean * mean).clamp_min_(0.0)
        rstd = torch.rsqrt(var + eps)
        scale = rstd if weight is None else rstd * weight.detach()
        shift = -mean * scale if bias is None else bias.detach() - mean * scale
        if lib is not None:
            y2 = torch.empty_like(x2)
            scale_c, shift_c = scale.contiguous(), shift.contiguous()
            lib.bnr_forward(_ptr(x2), _ptr(y2), _ptr(scale_c), _ptr(shift_c), p, c, torch.get_num_threads())
        else:
            y2 = torch.addcmul(shift, x2, scale).clamp_min_(0.0)
        y = y2.view(x.shape[0], x.shape[2], x.shape[3], x.shape[4], c).permute(0, 4, 1, 2, 3)
        ctx.save_for_backward(x, y, mean, rstd, weight)
        ctx.has_bias = bias is not None
        stats_out.extend([mean, var, p])
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):  # type: ignore[override]
        lib = load_kernels()
        x, y, mean, rstd, weight = ctx.saved_tensors
        x2, y2 = _rows(x), _rows(y)
        g2 = _rows(grad_y.float().contiguous(memory_format=torch.channels_last_3d))
        p, c = x2.shape
        if lib is not None:
            sum_g, sum_gx = _pair_sums(lib, "bnr_backward_reduce", (g2, y2, x2), p, c)
        else:
            gm = torch.ops.aten.threshold_backward(g2, y2, 0)  # ReLU's mask
            sum_g, sum_gx = gm.sum(0), torch.mm(gm.t(), x2).diagonal()
        # With xhat = (x - mean) * rstd:  dgamma = sum(g * xhat),  dbeta = sum(g),
        # dx = gamma * rstd * (g - sum(g) / P - xhat * dgamma / P) = A*g + B*x + C per channel.
        dgamma = rstd * (sum_gx - mean * sum_g)
        gamma = torch.ones_like(rstd) if weight is None else weight.detach()
        a = gamma * rstd
        b = -a * rstd * dgamma / p
        k = -a * sum_g / p - b * mean
        if lib is not None:
            dx2 = torch.empty_like(x2)
            a, b, k = a.contiguous(), b.contiguous(), k.contiguous()
            lib.bnr_backward_dx(_ptr(g2), _ptr(y2), _ptr(x2), _ptr(dx2), _ptr(a), _ptr(b), _ptr(k), p, c,
                                torch.get_num_threads())
        else:
            dx2 = gm.mul_(a).addcmul_(x2, b).add_(k)
        n, _, t, h, w = x.shape
        dx = dx2.view(n, t, h, w, c).permute(0, 4, 1, 2, 3)
        dweight = dgamma if (weight is not None and ctx.needs_input_grad[1]) else None
        dbias = sum_g if (ctx.has_bias and ctx.needs_input_grad[2]) else None
        return dx, dweight, dbias, None, None


def _fusable(bn: nn.Module, x: Tensor) -> bool:
    return (type(bn) is nn.BatchNorm3d and bn.training and x.device.type == "cpu" and x.dtype == torch.float32
            and x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d)
            and not torch.is_autocast_enabled("cpu") and x.numel() > x.shape[1])


def batch_norm_relu(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """``relu(bn(x))``; the fused node in the cases it covers, the library ops otherwise."""
    if not _fusable(bn, x):
        return F.relu(bn(x), inplace=True)
    stats: list = []
    y = _BatchNormReLU.apply(x, bn.weight, bn.bias, bn.eps, stats)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        mean, var, p = stats
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
            bn.running_var.mul_(1 - m).add_(var * (p / max(p - 1, 1)), alpha=m)
    return y
