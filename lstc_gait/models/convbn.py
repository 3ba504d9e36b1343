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

from .bn_relu import BranchOutput, batch_norm_relu_concat
from .layout import recording_graph, to_channels_last
from .native import native_stem_available, native_stem_conv3d, stem_forward


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


def conv3d_inference(x: Tensor, weight: Tensor, bias: Tensor | None, stride=1, padding=0, dilation=1,
                     groups: int = 1, relu: bool = True) -> Tensor:
    """``relu(conv3d(x, weight, bias))`` (or without ReLU) for inference.

    On CPU float32 without autograd this calls oneDNN directly with the ReLU fused into the
    convolution: PyTorch's dispatcher sends small single-sequence 3D convs (N=1 and N*C*T*H <=
    20480) to its slow reference kernel, 5-10x slower than oneDNN at the model's shapes, and the
    separate ReLU is one more pass over the activation.
    """
    if (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and not recording_graph()
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                                   or (bias is not None and bias.requires_grad)))):
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight.contiguous(), bias, _triple_arg(padding), _triple_arg(stride), _triple_arg(dilation),
            groups, "relu" if relu else "none", [], "")
    y = F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    return F.relu(y, inplace=True) if relu else y


def _triple_arg(v) -> list[int]:
    return [int(v)] * 3 if isinstance(v, int) else [int(i) for i in v]


class ConvBNReLU(nn.Sequential):
    """``nn.Sequential(Conv3d, BatchNorm3d)`` followed by ReLU; keys ``0.*`` (conv) and ``1.*`` (BN).

    Subclassing Sequential keeps the state_dict keys of the original checkpoints
    (``stem.0.weight``, ``stem.1.running_mean``, ...).
    """

    def __init__(self, conv: nn.Conv3d, bn: nn.BatchNorm3d, relu: bool = True) -> None:
        super().__init__(conv, bn)
        self.relu = relu

    def branch_output(self, x: Tensor) -> BranchOutput:
        """The activated output, or in training ``(bn, conv output)`` for a block to normalise,
        activate and concatenate in one node (``bn_relu.batch_norm_relu_concat``)."""
        conv: nn.Conv3d = self[0]
        bn: nn.BatchNorm3d = self[1]
        native_stem = (conv.bias is None and not recording_graph() and not torch.is_autocast_enabled("cpu")
                       and native_stem_available(x, conv.weight, conv.padding, conv.stride, conv.dilation,
                                                 conv.groups))
        if bn_is_folding(bn):
            weight, bias = fold_conv_bn(conv.weight, conv.bias, bn)
            if native_stem and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
                return stem_forward(x, weight, bias, relu=self.relu)
            return conv3d_inference(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups,
                                    relu=self.relu)
        y = native_stem_conv3d(x, conv.weight) if native_stem else conv(x)
        if not self.relu:
            return bn(y)
        return (bn, to_channels_last(y))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        out = self.branch_output(x)
        return out if isinstance(out, Tensor) else batch_norm_relu_concat([out])


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: tuple[int, int, int] | int,
                 padding: tuple[int, int, int] | int = 0) -> ConvBNReLU:
    """Bias-free Conv3d + BatchNorm3d + ReLU, the unit every branch of the original uses."""
    conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
    return ConvBNReLU(conv, nn.BatchNorm3d(out_channels))
