"""Small helpers of the fast path: a checked BN fold and the CPU's native-bf16 query.

The hand-written kernels are custom ops in :mod:`lstc_gait.ops`.
"""

from __future__ import annotations

import platform

import torch
from torch import Tensor, nn

from lstc_gait.ops.build import cpu_flags

from .convbn import fold_conv_bn

__all__ = ["cpu_bf16_supported", "fold_bn"]

_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # x86: bf16 dot products in hardware


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively, so bf16 autocast can be faster than fp32.

    oneDNN's own answer (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``) is True on every
    AVX-512 CPU, where bf16 is emulated (converted to fp32 around fp32 FMAs) and not faster than
    fp32. Native means oneDNN says yes *and* the CPU has bf16 arithmetic: ``avx512_bf16`` or
    ``amx_bf16`` on x86, the ``bf16`` feature on ARM. Without readable CPU flags oneDNN's answer
    is used alone.

    Returns:
        True where bf16 is native; False on AVX2-only or AVX-512 CPUs without bf16 instructions.
    """
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    if not onednn:
        return False
    flags = set(cpu_flags().split())
    if platform.machine() in ("x86_64", "AMD64", "i686", "x86"):
        return bool(flags & _NATIVE_BF16_FLAGS)
    if platform.machine() in ("aarch64", "arm64") and len(flags) > 1:
        return "bf16" in flags
    return onednn


def fold_bn(
    conv_weight: Tensor, conv_bias: Tensor | None, bn: nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d
) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm that follows a conv (or linear) into its weight and bias, checked.

    ``bn(conv(x)) = gamma * (W x + b - mean) / sqrt(var + eps) + beta = W' x + b'`` with
    ``W' = W * s`` (per output channel), ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``.
    The math is :func:`lstc_gait.models.convbn.fold_conv_bn` (the package's one folding helper),
    computed here in float64 without autograd, after validating the arguments: for offline use
    (export, tests) where a clear error beats speed.

    Args:
        conv_weight: ``(C_out, ...)`` conv or linear weight, float dtype.
        conv_bias: ``(C_out,)`` or None (a bias-free conv, as in the original model).
        bn: BatchNorm with ``C_out`` features and running statistics (its train/eval mode is not
            looked at: the running statistics are used).

    Returns:
        ``(weight, bias)``: ``conv_weight``'s shape and ``(C_out,)``, in ``conv_weight``'s dtype,
        detached.

    Raises:
        ValueError: When ``bn`` keeps no running statistics, or ``C_out != bn.num_features``.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_bn needs a BatchNorm with running statistics (track_running_stats=True)")
    if conv_weight.shape[0] != bn.num_features:
        raise ValueError(
            f"fold_bn: conv has {conv_weight.shape[0]} output channels but BatchNorm has {bn.num_features}"
        )
    with torch.no_grad():
        weight, bias = fold_conv_bn(conv_weight, conv_bias, bn, dtype=torch.float64)
    return weight.to(conv_weight.dtype), bias.to(conv_weight.dtype)
