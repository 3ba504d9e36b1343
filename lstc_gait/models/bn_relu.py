"""Training-mode ``cat([relu(bn_i(x_i)), ...])`` as one autograd node, for channels_last_3d CPU activations.

Same math as ``torch.cat([F.relu(bn(x)) for bn, x in branches], dim=1)`` with ``nn.BatchNorm3d``
in training mode (batch statistics, biased variance for normalising, unbiased for the running
estimate, the module's momentum rule); a branch may also be a ready tensor, copied into place.
A single branch is plain ``relu(bn(x))``.

Why: on the project's 2-core CPU a full-resolution activation at batch 16 is 43-86 MB and the
library's BN, ReLU, concatenation and their backward make about ten passes over it and allocate
five such buffers (each page-faulted in by the kernel). Here, with the C kernels of
``native/batch_norm_relu.c`` on the ``(positions, C)`` view channels_last_3d gives for free:

- forward: one pass for the per-channel sum and sum of squares (shifted by the first row, so
  ``|mean| >> std`` does not cancel), one pass writing
  ``relu(x * scale + shift)`` straight into the branch's channel slice of the concatenated output;
- backward: one pass for ``sum(g)`` and ``sum(g * x)`` over positions where the ReLU passed (the
  mask is recomputed from ``x``, so the output is not kept), one pass writing ``dx = A*g + B*x + C``.

Sums are accumulated in double. Without the C kernels (or for
other devices, dtypes, autocast, or BatchNorm subclasses such as the DDP GlobalBatchNorm) the
library ops run instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .native import load_kernels
from .native.buffers import empty_channels_last
from .native.call_args import pointer, thread_count

BranchOutput = Tensor | tuple[nn.modules.batchnorm._BatchNorm, Tensor]
_CL = torch.channels_last_3d


def _rows(x: Tensor) -> Tensor:
    """``(N, C, T, H, W)`` channels_last_3d -> ``(N*T*H*W, C)`` view."""
    return x.permute(0, 2, 3, 4, 1).reshape(-1, x.shape[1])


def _sums(lib, name: str, args: tuple, p: int, c: int) -> tuple[Tensor, Tensor]:
    """A two-sum C reduction; its per-thread double partials are added here (result in float64)."""
    threads = thread_count(p)
    first = torch.zeros(threads, c, dtype=torch.float64)
    second = torch.zeros(threads, c, dtype=torch.float64)
    getattr(lib, name)(*args, pointer(first), pointer(second), p, c, threads)
    return first.sum(0), second.sum(0)


class _BatchNormReLUConcat(torch.autograd.Function):
    """Inputs: per branch either ``(x, weight, bias)`` (kind "bn") or ``(t,)`` (kind "copy")."""

    @staticmethod
    def forward(ctx, kinds: tuple[str, ...], eps: tuple[float, ...], stats_out: list,  # type: ignore[override]
                *tensors: Tensor | None) -> Tensor:
        lib = load_kernels()
        groups, i = [], 0
        for kind in kinds:
            width = 3 if kind == "bn" else 1
            groups.append(tensors[i:i + width])
            i += width
        ref = groups[0][0]
        n, _, t, h, w = ref.shape
        widths = [g[0].shape[1] for g in groups]
        total = sum(widths)
        out = empty_channels_last((n, total, t, h, w))
        out2 = _rows(out)
        p = out2.shape[0]
        saved, meta, offset = [], [], 0
        for kind, group, c, e in zip(kinds, groups, widths, eps, strict=True):
            if kind == "copy":
                out2[:, offset:offset + c].copy_(_rows(group[0].contiguous(memory_format=_CL)))
                meta.append(None)
            else:
                x, weight, bias = group
                x2 = _rows(x)
                ref = x2[0].contiguous()  # sums of x - ref: no cancellation when |mean| >> std
                total_x, total_sq = _sums(lib, "bnr_stats", (pointer(x2), pointer(ref)), p, c)
                shifted_mean = total_x / p
                var = (total_sq / p - shifted_mean * shifted_mean).clamp_min_(0.0).float()
                mean = (ref.double() + shifted_mean).float()
                rstd = torch.rsqrt(var + e)
                scale = (rstd if weight is None else rstd * weight.detach()).contiguous()
                shift = (-mean * scale if bias is None else bias.detach() - mean * scale).contiguous()
                lib.bnr_forward(pointer(x2), pointer(out2, offset), total, pointer(scale), pointer(shift), p, c, thread_count(p))
                saved += [x, weight if weight is not None else torch.ones_like(rstd), ref, shifted_mean, rstd, scale,
                          shift]
                meta.append((weight is not None, bias is not None))
                stats_out.append((mean, var, p))
            offset += c
        ctx.save_for_backward(*saved)
        ctx.kinds, ctx.widths, ctx.meta = kinds, widths, meta
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        lib = load_kernels()
        g2 = _rows(grad_out.float().contiguous(memory_format=_CL))
        p, total = g2.shape
        saved = list(ctx.saved_tensors)
        grads: list[Tensor | None] = []
        offset = 0
        for kind, c, meta in zip(ctx.kinds, ctx.widths, ctx.meta, strict=True):
            if kind == "copy":
                n, t, h, w = _frame_shape(grad_out)
                grads.append(g2[:, offset:offset + c].reshape(n, t, h, w, c).permute(0, 4, 1, 2, 3))
                offset += c
                continue
            x, gamma, ref, shifted_mean, rstd, scale, shift = saved[:7]
            del saved[:7]
            x2 = _rows(x)
            sum_g, sum_gxr = _sums(lib, "bnr_backward_reduce",
                                   (pointer(g2, offset), total, pointer(x2), pointer(ref), pointer(scale), pointer(shift)), p, c)
            # With xhat = (x - mean) * rstd:  dgamma = sum(g * xhat),  dbeta = sum(g),
            # dx = gamma * rstd * (g - sum(g) / P - xhat * dgamma / P) = A*g + B*x + K per channel;
            # sum(g * (x - mean)) = sum(g * (x - ref)) - (mean - ref) * sum(g), all in float64.
            rstd64, mean64 = rstd.double(), ref.double() + shifted_mean
            dgamma64 = rstd64 * (sum_gxr - shifted_mean * sum_g)
            a64 = gamma.detach().double() * rstd64
            b64 = -a64 * rstd64 * dgamma64 / p
            k64 = -a64 * sum_g / p - b64 * mean64
            a, b, k = (v.float().contiguous() for v in (a64, b64, k64))
            dgamma, sum_g = dgamma64.float(), sum_g.float()
            dx = empty_channels_last(x.shape)
            lib.bnr_backward_dx(pointer(g2, offset), total, pointer(x2), pointer(scale), pointer(shift), pointer(dx),
                                pointer(a), pointer(b), pointer(k), p, c, thread_count(p))
            has_weight, has_bias = meta
            grads += [dx, dgamma if has_weight else None, sum_g if has_bias else None]
            offset += c
        return (None, None, None, *grads)


def _frame_shape(x: Tensor) -> tuple[int, int, int, int]:
    return x.shape[0], x.shape[2], x.shape[3], x.shape[4]


def _fusable_bn(bn: nn.Module, x: Tensor) -> bool:
    return (type(bn) is nn.BatchNorm3d and bn.training and x.device.type == "cpu" and x.dtype == torch.float32
            and x.dim() == 5 and x.is_contiguous(memory_format=_CL) and x.numel() > x.shape[1])


def batch_norm_relu_concat(parts: list[BranchOutput]) -> Tensor:
    """``cat([relu(bn(x)) for (bn, x) parts, t for tensor parts], dim=1)``; one fused node when possible."""
    if not parts:
        raise ValueError("batch_norm_relu_concat needs at least one branch")
    shapes = {_frame_shape(p[1] if isinstance(p, tuple) else p) for p in parts}
    fused = (len(shapes) == 1 and any(isinstance(p, tuple) for p in parts)
             and not torch.is_autocast_enabled("cpu") and load_kernels() is not None
             and all(_fusable_bn(*p) if isinstance(p, tuple)
                     else (p.device.type == "cpu" and p.dtype == torch.float32 and p.dim() == 5) for p in parts))
    if not fused:
        outs = [F.relu(p[0](p[1]), inplace=True) if isinstance(p, tuple) else p for p in parts]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    kinds, eps, flat = [], [], []
    for p in parts:
        if isinstance(p, tuple):
            bn, x = p
            kinds.append("bn")
            eps.append(float(bn.eps))
            flat += [x, bn.weight, bn.bias]
        else:
            kinds.append("copy")
            eps.append(0.0)
            flat.append(p)
    stats: list = []
    out = _BatchNormReLUConcat.apply(tuple(kinds), tuple(eps), stats, *flat)
    for (bn, _), (mean, var, count) in zip([p for p in parts if isinstance(p, tuple)], stats, strict=True):
        _update_running_stats(bn, mean, var, count)
    return out


def batch_norm_relu(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """``relu(bn(x))``; the fused node in the cases it covers, the library ops otherwise."""
    return batch_norm_relu_concat([(bn, x)])


def _update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: Tensor, var: Tensor, count: int) -> None:
    """The running-estimate update nn.BatchNorm makes in training (unbiased variance, momentum rule)."""
    if not (bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None):
        return
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
        bn.running_var.mul_(1 - m).add_(var * (count / max(count - 1, 1)), alpha=m)
