"""Conv3d -> BatchNorm3d (-> ReLU) with the BatchNorm folded into the convolution at inference.

Training runs conv -> BN exactly as written (batch statistics, running-stat updates). In eval
mode the BN is an affine map per output channel, so ``BN(conv(x, W)) = conv(x, W * s) + b'``
with ``s = gamma / sqrt(var + eps)`` and ``b' = beta - mean * s``: one convolution instead of a
convolution plus a full pass over the activation. The folded weight is recomputed from the small
parameter tensors on every call, so there is no cache to invalidate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` that the BN applies in eval mode."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def bn_is_folding(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """True when the BN normalises with running statistics (eval mode with stats tracked)."""
    return (not bn.training) and bn.track_running_stats and bn.running_mean is not None


def fold_conv_bn(conv_weight: Tensor, conv_bias: Tensor | None, bn: nn.modules.batchnorm._BatchNorm
                 ) -> tuple[Tensor, Tensor]:
    """Weight and bias of the single convolution equal to ``bn(conv(x))`` in eval mode."""
    scale, shift = bn_scale_shift(bn)
    weight = conv_weight * scale.view(-1, *([1] * (conv_weight.dim() - 1)))
    bias = shift if conv_bias is None else conv_bias * scale + shift
    return weight, bias


class ConvBNReLU(nn.Sequential):
    """``nn.Sequential(Conv3d, BatchNorm3d)`` followed by ReLU; keys ``0.*`` (conv) and ``1.*`` (BN).

    Subclassing Sequential keeps the state_dict keys of the original checkpoints
    (``stem.0.weight``, ``stem.1.running_mean``, ...).
    """

    def __init__(self, conv: nn.Conv3d, bn: nn.BatchNorm3d, relu: bool = True) -> None:
        super().__init__(conv, bn)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        conv: nn.Conv3d = self[0]
        bn: nn.BatchNorm3d = self[1]
        if bn_is_folding(bn):
            weight, bias = fold_conv_bn(conv.weight, conv.bias, bn)
            y = F.conv3d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        else:
            y = bn(conv(x))
        # In place: y is this call's own fresh output (BN's backward needs its input, not y).
        return F.relu(y, inplace=True) if self.relu else y


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: tuple[int, int, int] | int,
                 padding: tuple[int, int, int] | int = 0) -> ConvBNReLU:
    """Bias-free Conv3d + BatchNorm3d + ReLU, the unit every branch of the original uses."""
    conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
    return ConvBNReLU(conv, nn.BatchNorm3d(out_channels))
