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
from .memory_format import recording_graph, to_channels_last

# Read once: the backend query is a Python call torch.compile would otherwise have to trace.
_MKLDNN = torch.backends.mkldnn.is_available()


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """Per-channel affine map the BN applies in eval mode.

    Args:
        bn: A BatchNorm with running statistics.

    Returns:
        ``(scale, shift)``, each ``(C,)``: ``bn(x) = x * scale + shift`` per channel.
    """
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def bn_is_folding(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """Whether the BN normalises with running statistics (eval mode with statistics tracked).

    Args:
        bn: Any BatchNorm module.

    Returns:
        True when it can be folded into the preceding convolution.
    """
    return (not bn.training) and bn.track_running_stats and bn.running_mean is not None


def fold_conv_bn(conv_weight: Tensor, conv_bias: Tensor | None, bn: nn.modules.batchnorm._BatchNorm
                 ) -> tuple[Tensor, Tensor]:
    """Weight and bias of the single convolution equal to ``bn(conv(x))`` in eval mode.

    Args:
        conv_weight: ``(C_out, ...)`` convolution (or linear) weight.
        conv_bias: ``(C_out,)`` or None.
        bn: The eval-mode BatchNorm that follows.

    Returns:
        ``(weight, bias)``: same shapes as the conv's, differentiable in all parameters.
    """
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
    separate ReLU is one more pass over the activation. Under ``torch.compile`` the library ops
    run (the compiler fuses the ReLU itself).

    Args:
        x: ``(N, C_in, T, H, W)`` input.
        weight: ``(C_out, C_in / groups, kT, kH, kW)``.
        bias: ``(C_out,)`` or None.
        stride: As for ``F.conv3d``.
        padding: As for ``F.conv3d`` (ints).
        dilation: As for ``F.conv3d``.
        groups: As for ``F.conv3d``.
        relu: Apply a ReLU.

    Returns:
        ``(N, C_out, T', H', W')``.
    """
    if (_MKLDNN and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.compiler.is_compiling() and not recording_graph()
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

    def _stem_op(self, x: Tensor) -> bool:
        """Whether the conv is a stride-1 'same' conv of a one-channel input (the stem op's case)."""
        conv: nn.Conv3d = self[0]
        pad = conv.padding if isinstance(conv.padding, tuple) else ()
        return (x.dim() == 5 and x.shape[1] == 1 and conv.in_channels == 1 and conv.groups == 1
                and conv.stride == (1, 1, 1) and conv.dilation == (1, 1, 1) and len(pad) == 3
                and all(k % 2 == 1 and p == k // 2 for k, p in zip(conv.kernel_size, pad, strict=True))
                and not recording_graph())

    def branch_output(self, x: Tensor) -> BranchOutput:
        """The activated output, or in training ``(bn, conv output)`` for a block to normalise,
        activate and concatenate in one node (``bn_relu.batch_norm_relu_concat``).

        Args:
            x: ``(N, C_in, T, H, W)`` input.

        Returns:
            ``relu(bn(conv(x)))`` (or ``bn(conv(x))`` without ReLU), or ``(bn, conv(x))``.
        """
        conv: nn.Conv3d = self[0]
        bn: nn.BatchNorm3d = self[1]
        stem = self._stem_op(x)
        if bn_is_folding(bn):
            weight, bias = fold_conv_bn(conv.weight, conv.bias, bn)
            if stem:
                return torch.ops.lstc_gait.stem_conv3d(x, weight.to(x.dtype), bias.to(x.dtype), self.relu)
            return conv3d_inference(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups,
                                    relu=self.relu)
        if stem:
            bias = None if conv.bias is None else conv.bias.to(x.dtype)
            y = torch.ops.lstc_gait.stem_conv3d(x, conv.weight.to(x.dtype), bias, False)
        else:
            y = conv(x)
        if not self.relu:
            return bn(y)
        return (bn, to_channels_last(y))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        out = self.branch_output(x)
        return out if isinstance(out, Tensor) else batch_norm_relu_concat([out])


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: tuple[int, int, int] | int,
                 padding: tuple[int, int, int] | int = 0) -> ConvBNReLU:
    """Bias-free Conv3d + BatchNorm3d + ReLU, the unit every branch of the original uses.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: ``(kT, kH, kW)`` or one int.
        padding: Zero padding, as for ``nn.Conv3d``.

    Returns:
        A :class:`ConvBNReLU`.
    """
    conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
    return ConvBNReLU(conv, nn.BatchNorm3d(out_channels))
