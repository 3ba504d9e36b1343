"""Fast CPU formulations of the ops the LSTC model family leans on.

Every helper here computes the same math as its plain PyTorch counterpart (tests/test_fastops.py
compares values and gradients); only the formulation differs. Measured on the project's 2-core
AVX2 machine (docs/performance.md), PyTorch's own depthwise conv3d is the bottleneck of an LSTC
training step: its input gradient is 5-10x slower than the equivalent forward conv with the
flipped kernel, its contiguous-format forward 2-4x slower than channels_last_3d, its weight
gradient (on a whole frame) 3-5x slower than a grouped-conv reformulation, and in bf16 it is
10-50x slower than in fp32 (no native bf16 on AVX2), so the depthwise op always computes in fp32.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["cpu_bf16_supported", "depthwise_conv3d", "fold_bn", "maybe_compile"]

# Weight-gradient dispatch, from timings of the LSTC shapes on the 2-core AVX2 machine: with many
# output positions per (sample, channel) (e.g. a whole 64-row frame, stripes separated by zero
# rows) the grouped-conv reformulation is 3-5x faster than the library; with stripes folded into
# the batch (few rows, many samples) the library kernel wins, in channels_last_3d for wide inputs.
_GRAD_W_CONV_MIN_POSITIONS = 32768
_GRAD_W_CHANNELS_LAST_MIN_WIDTH = 32


def _check_depthwise(x: Tensor, weight: Tensor, padding: tuple[int, int, int]) -> None:
    if x.dim() != 5 or weight.dim() != 5 or weight.shape[0] != x.shape[1] or weight.shape[1] != 1:
        raise ValueError(
            "depthwise_conv3d expects x (N, C, T, H, W) and weight (C, 1, kT, kH, kW); "
            f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    if len(padding) != 3 or any(int(p) < 0 for p in padding):
        raise ValueError(f"depthwise_conv3d padding must be three non-negative ints, got {padding!r}")


def _grad_weight(x: Tensor, grad_out: Tensor, weight: Tensor, padding: tuple[int, int, int]) -> Tensor:
    """d loss / d weight of a depthwise conv, as one grouped conv with samples as input channels.

    grad_w[c, a, b, d] = sum_{n, t, h, w} xpad[n, c, t+a, h+b, w+d] * g[n, c, t, h, w], i.e. a
    correlation of xpad[:, c] (N channels) with g[:, c] (N channels, used as the kernel) per group.
    """
    n, c = x.shape[:2]
    k = weight.shape[2:]
    positions = grad_out.shape[2] * grad_out.shape[3] * grad_out.shape[4]
    if positions < _GRAD_W_CONV_MIN_POSITIONS:
        if x.shape[4] >= _GRAD_W_CHANNELS_LAST_MIN_WIDTH:
            x = x.contiguous(memory_format=torch.channels_last_3d)
            grad_out = grad_out.contiguous(memory_format=torch.channels_last_3d)
        return torch.ops.aten.convolution_backward(
            grad_out, x, weight, None, [1, 1, 1], list(padding), [1, 1, 1], False, [0, 0, 0], c,
            [False, True, False],
        )[1]
    pt, ph, pw = padding
    xp = F.pad(x, (pw, pw, ph, ph, pt, pt))
    inp = xp.transpose(0, 1).reshape(1, c * n, *xp.shape[2:])
    kernel = grad_out.transpose(0, 1).contiguous()
    return F.conv3d(inp, kernel, groups=c).reshape(c, 1, *k)


class _DepthwiseConv3d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, padding: tuple[int, int, int]) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        xc = x.contiguous(memory_format=torch.channels_last_3d)
        return F.conv3d(xc, weight, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        # backward() may be called inside an autocast region: keep the fp32 arithmetic.
        with torch.autocast("cpu", enabled=False):
            return _DepthwiseConv3d._backward(ctx, grad_out.float())

    @staticmethod
    def _backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        padding = ctx.padding
        c = x.shape[1]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # Transposed conv of a stride-1 conv == conv with the flipped kernel and padding k-1-p
            # (the output then has exactly x's size).
            k = weight.shape[2:]
            back_pad = [ki - 1 - pi for ki, pi in zip(k, padding, strict=True)]
            g = grad_out.contiguous(memory_format=torch.channels_last_3d)
            if min(back_pad) >= 0:
                grad_x = F.conv3d(g, weight.flip((2, 3, 4)), padding=back_pad, groups=c)
            else:  # padding wider than the kernel: the output is larger than x, use the library
                grad_x = torch.ops.aten.convolution_backward(
                    g, x, weight, None, [1, 1, 1], list(padding), [1, 1, 1], False, [0, 0, 0], c,
                    [True, False, False],
                )[0]
        if ctx.needs_input_grad[1]:
            grad_w = _grad_weight(x, grad_out, weight, padding)
        return grad_x, grad_w, None


def depthwise_conv3d(x: Tensor, weight: Tensor, padding: tuple[int, int, int]) -> Tensor:
    """Depthwise 3D convolution, same values as ``F.conv3d(x, weight, padding=padding, groups=C)``.

    ``x`` is ``(N, C, T, H, W)``, ``weight`` is ``(C, 1, kT, kH, kW)``, stride and dilation 1.
    The output is in ``channels_last_3d`` memory format (same values and shape). Under CPU autocast
    the inputs are rounded to the autocast dtype like ``F.conv3d`` would, but the arithmetic runs
    in fp32 (bf16 depthwise kernels are 10-50x slower on AVX2) and the result is cast back to the
    autocast dtype, so the output dtype matches ``F.conv3d`` under autocast.
    """
    padding = tuple(int(p) for p in padding)  # type: ignore[assignment]
    _check_depthwise(x, weight, padding)
    out_dtype = None
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        out_dtype = torch.get_autocast_dtype("cpu")
        x = x.to(out_dtype)
        weight = weight.to(out_dtype)
    if x.device.type != "cpu" or (out_dtype is None and x.dtype != torch.float32):
        # Other devices / exact float64 work: the library kernel is the reference anyway.
        return F.conv3d(x, weight, padding=padding, groups=x.shape[1])
    with torch.autocast("cpu", enabled=False):
        y = _DepthwiseConv3d.apply(x.float(), weight.float(), padding)
    return y if out_dtype is None else y.to(out_dtype)


def cpu_bf16_supported() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX).

    Without them (e.g. AVX2-only CPUs such as the project's reference machine) every bf16 conv and
    matmul falls back to slow reference code: measured 20-50x slower than fp32, so CPU bf16
    autocast must not be the default there.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fold_bn(
    conv_weight: Tensor, conv_bias: Tensor | None, bn: nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d
) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm that follows a conv (or linear) into its weight and bias.

    bn(conv(x)) = gamma * (W x + b - mean) / sqrt(var + eps) + beta = W' x + b' with
    W' = W * s (per output channel), b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps).
    Only valid with running statistics (eval mode); the returned tensors are detached.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_bn needs a BatchNorm with running statistics (track_running_stats=True)")
    if conv_weight.shape[0] != bn.num_features:
        raise ValueError(
            f"fold_bn: conv has {conv_weight.shape[0]} output channels but BatchNorm has {bn.num_features}"
        )
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        bias = conv_bias.double() if conv_bias is not None else torch.zeros_like(scale)
        bias = (bias - bn.running_mean.double()) * scale
        if bn.bias is not None:
            bias = bias + bn.bias.double()
        shape = (-1,) + (1,) * (conv_weight.dim() - 1)
        weight = conv_weight.double() * scale.reshape(shape)
    return weight.to(conv_weight.dtype), bias.to(conv_weight.dtype)


def maybe_compile(module: nn.Module, enabled: bool = True, **compile_kwargs) -> nn.Module:
    """``torch.compile(module)`` when enabled and available, else ``module`` unchanged.

    Compilation is lazy in PyTorch (errors surface at the first call), so the returned wrapper
    runs the first call through the compiled module and falls back to eager for good, with a
    warning, if compiling fails (no C++ compiler, unsupported op, ...).
    """
    if not enabled or not hasattr(torch, "compile"):
        return module
    try:
        compiled = torch.compile(module, **compile_kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure means: run eager
        warnings.warn(f"torch.compile unavailable ({exc!r}); running eager", RuntimeWarning, stacklevel=2)
        return module
    return _CompileFallback(module, compiled)


class _CompileFallback(nn.Module):
    """Calls the compiled module; on a compile failure switches to the eager module for good.

    ``state_dict`` / ``load_state_dict`` delegate to the eager module, so checkpoints keep the
    plain keys (no ``eager.`` or ``_orig_mod.`` prefix).
    """

    def __init__(self, eager: nn.Module, compiled: nn.Module) -> None:
        super().__init__()
        self.eager = eager
        self._compiled = [compiled]  # a list keeps it out of state_dict / parameters()
        self.failed = False

    def forward(self, *args, **kwargs):
        if not self.failed:
            try:
                return self._compiled[0](*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - compile errors come in many types
                self.failed = True
                warnings.warn(f"torch.compile failed ({exc!r}); falling back to eager", RuntimeWarning,
                              stacklevel=2)
        return self.eager(*args, **kwargs)

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return self.eager.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102
        return self.eager.load_state_dict(state_dict, strict=strict, assign=assign)
