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

from ..ops.library import native_kernels
from .bn_relu import BranchOutput, batch_norm_relu_concat
from .memory_format import recording_graph, to_channels_last

# Read once: the backend query is a Python call torch.compile would otherwise have to trace.
_MKLDNN = torch.backends.mkldnn.is_available()


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm, dtype: torch.dtype | None = None
                   ) -> tuple[Tensor, Tensor]:
    """Per-channel affine map an eval-mode BatchNorm applies: ``bn(x) = x * scale + shift``.

    ``scale = gamma / sqrt(running_var + eps)``, ``shift = beta - running_mean * scale`` (``gamma``
    and ``beta`` taken as 1 and 0 when the BN is not affine). The one place the models compute a
    BN's folded form: :func:`fold_conv_bn` and the backbone's BatchNorm1d-into-Linear fold use it.

    Args:
        bn: A BatchNorm (1d/2d/3d) with ``C`` features and running statistics.
        dtype: Compute in this dtype (e.g. ``torch.float64`` for a high-precision fold); None
            computes in the BN's own dtype with the exact ops of the inference path.

    Returns:
        ``(scale, shift)``, each ``(C,)`` in ``dtype`` (or the BN's dtype), differentiable in
        ``gamma`` and ``beta``.

    Raises:
        TypeError: When ``bn`` keeps no running statistics (``track_running_stats=False``);
            check with :func:`bn_is_folding` first.
    """
    var, mean, gamma, beta = bn.running_var, bn.running_mean, bn.weight, bn.bias
    if dtype is not None:
        var, mean = var.to(dtype), mean.to(dtype)
        gamma = None if gamma is None else gamma.to(dtype)
        beta = None if beta is None else beta.to(dtype)
    scale = torch.rsqrt(var + bn.eps)
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    return scale, shift


def bn_is_folding(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """Whether the BN normalises with running statistics (eval mode with statistics tracked).

    Args:
        bn: Any BatchNorm module.

    Returns:
        True when it can be folded into the preceding convolution.
    """
    return (not bn.training) and bn.track_running_stats and bn.running_mean is not None


def fold_conv_bn(conv_weight: Tensor, conv_bias: Tensor | None, bn: nn.modules.batchnorm._BatchNorm,
                 dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Weight and bias of the single convolution (or linear map) equal to ``bn(conv(x))`` in eval mode.

    ``W' = W * s`` per output channel and ``b' = b * s + shift`` (``b' = shift`` without a conv
    bias), with ``(s, shift)`` from :func:`bn_scale_shift`. The BN-folding helper of the package:
    :class:`ConvBNReLU`, :class:`~lstc_gait.models.lstc.LSTC`, the fused block tail and
    :func:`lstc_gait.models.fastops.fold_bn` all call it. No shape checks (hot path); the checked,
    detached float64 variant is ``fastops.fold_bn``.

    Args:
        conv_weight: ``(C_out, ...)`` convolution (``(C_out, C_in/groups, kT, kH, kW)``) or linear
            (``(C_out, C_in)``) weight, any float dtype.
        conv_bias: ``(C_out,)`` or None.
        bn: The eval-mode BatchNorm with ``C_out`` features that follows the conv.
        dtype: Compute in this dtype (see :func:`bn_scale_shift`); None: the inputs' dtype.

    Returns:
        ``(weight, bias)``: ``conv_weight``'s shape and ``(C_out,)``, in ``dtype`` (or the inputs'
        dtype), differentiable in all parameters (not detached).

    Raises:
        TypeError: When ``bn`` keeps no running statistics.
        RuntimeError: When ``C_out`` differs from the BN's feature count (broadcast error).
    """
    scale, shift = bn_scale_shift(bn, dtype)
    if dtype is not None:
        conv_weight = conv_weight.to(dtype)
        conv_bias = None if conv_bias is None else conv_bias.to(dtype)
    weight = conv_weight * scale.view(-1, *([1] * (conv_weight.dim() - 1)))
    bias = shift if conv_bias is None else conv_bias * scale + shift
    return weight, bias


def conv3d_inference(x: Tensor, weight: Tensor, bias: Tensor | None, stride=1, padding=0, dilation=1,
                     groups: int = 1, relu: bool = True) -> Tensor:
    """``relu(conv3d(x, weight, bias))`` (or without ReLU) for inference.

    On CPU float32 without autograd this calls oneDNN directly with the ReLU fused into the
    convolution: PyTorch's dispatcher sends small single-sequence 3D convs (N=1 and N*C*T*H <=
    20480) to its slow reference kernel, 5-10x slower than oneDNN at the model's shapes, and the
    separate ReLU is one more pass over the activation. The 'same' convs oneDNN runs slowly (see
    :func:`_conv_same_case`) run as the op ``lstc_gait::conv3d_same`` instead. Under
    ``torch.compile`` the library ops run (the compiler fuses the ReLU itself).

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
        ``(N, C_out, T', H', W')``, ``x``'s dtype.

    Raises:
        RuntimeError: When the shapes do not fit (from oneDNN or ``F.conv3d``).
    """
    if (_MKLDNN and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.compiler.is_compiling() and not recording_graph()
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                                   or (bias is not None and bias.requires_grad)))):
        if _conv_same_case(x, weight, stride, padding, dilation, groups):
            return torch.ops.lstc_gait.conv3d_same(x, weight, bias, relu)
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight.contiguous(), bias, _triple_arg(padding), _triple_arg(stride), _triple_arg(dilation),
            groups, "relu" if relu else "none", [], "")
    y = F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    return F.relu(y, inplace=True) if relu else y


def _conv_same_case(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> bool:
    """A 'same' conv the op ``lstc_gait::conv3d_same`` runs faster than oneDNN.

    Measured in one process against oneDNN's fused conv + ReLU (docs/performance.md): per-frame
    ``(1, kH, kW)`` convs on frames at least 16 wide with channels in multiples of 8 (the blocks'
    spatial branch: 1.6-2.3x), and convs with at most 8 output channels from at least 8 (the first
    two blocks' temporal branch: 1.2-1.6x); at 10 output channels on 16x11 frames oneDNN is level
    or faster, so those stay there.
    """
    c_out, c_in, k_t, k_h, k_w = weight.shape
    if not (groups == 1 and all(k % 2 == 1 for k in (k_t, k_h, k_w)) and _triple_arg(stride) == [1, 1, 1]
            and _triple_arg(dilation) == [1, 1, 1] and _triple_arg(padding) == [k_t // 2, k_h // 2, k_w // 2]):
        return False
    column = k_t == 1 and k_h * k_w > 1 and x.shape[4] >= 16 and c_in % 8 == 0 and c_out % 8 == 0
    narrow = c_out <= 8 and c_in >= 8
    return (column or narrow) and native_kernels(x, weight)


def _triple_arg(v) -> list[int]:
    return [int(v)] * 3 if isinstance(v, int) else [int(i) for i in v]


class ConvBNReLU(nn.Sequential):
    """Conv3d -> BatchNorm3d (-> ReLU): ``(N, C_in, T, H, W) -> (N, C_out, T', H', W')`` float.

    An ``nn.Sequential(Conv3d, BatchNorm3d)`` with keys ``0.*`` (conv) and ``1.*`` (BN), which keeps
    the state_dict keys of the original lstc-gait checkpoints (``stem.0.weight``,
    ``stem.1.running_mean``, ...), in the manner of timm's ``BatchNormAct2d``. In eval mode the BN
    is folded into the convolution (:func:`fold_conv_bn`); a one-channel stride-1 'same' conv (the
    stem) runs as the op ``lstc_gait::stem_conv3d``.

    Args:
        conv: The convolution.
        bn: The BatchNorm over its ``C_out`` output channels.
        relu: Apply a ReLU after the BN.
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

    def folds_into_block(self, x: Tensor) -> bool:
        """Whether the op ``lstc_gait::lstc_block`` can run this conv as its stem on ``x``.

        Args:
            x: The ``(N, 1, T, H, W)`` input.

        Returns:
            True for a stride-1 'same' conv of a one-channel input with a ReLU and its BN folding
            (eval mode), on CPU float32.
        """
        return self.relu and bn_is_folding(self[1]) and self._stem_op(x) and x.dtype == torch.float32

    def branch_output(self, x: Tensor) -> BranchOutput:
        """The activated output, or in training ``(bn, conv output)`` for the caller to normalise.

        A block normalises, activates and concatenates its branches' ``(bn, y)`` pairs in one op
        node (:func:`lstc_gait.models.bn_relu.batch_norm_relu_concat`).

        Args:
            x: ``(N, C_in, T, H, W)`` input.

        Returns:
            ``relu(bn(conv(x)))`` ``(N, C_out, T', H', W')`` (or ``bn(conv(x))`` without ReLU), or in
            training with ReLU ``(bn, conv(x))`` with ``conv(x)`` in channels_last_3d memory.

        Raises:
            RuntimeError: When ``x`` does not fit the convolution (from the conv).
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

    def forward(self, x: Tensor) -> Tensor:
        """``relu(bn(conv(x)))`` (``bn(conv(x))`` when built with ``relu=False``).

        Args:
            x: ``(N, C_in, T, H, W)`` float input.

        Returns:
            ``(N, C_out, T', H', W')``, ``x``'s dtype (BN folded in eval mode; batch statistics and
            running-statistics update in training).

        Raises:
            RuntimeError: When ``x`` does not fit the convolution.
        """
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
