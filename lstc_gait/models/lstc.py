"""LSTC: local spatio-temporal convolution inside height stripes.

A depthwise ``(kT, kH, kW)`` convolution runs inside each height stripe with zero padding at every
stripe edge (nothing leaks across stripes), then a pointwise ``1x1x1`` convolution mixes channels,
followed by BatchNorm and ReLU. State-dict keys: ``depthwise.weight``, ``pointwise.weight``, ``bn.*``.

Source: LSTC of the original lstc-gait project (``lstc/modules.py``;
/work/shared/reference/original-lstc-gait-README.md).

The stripe-local depthwise part is the custom op ``torch.ops.lstc_gait.stripe_depthwise_conv3d``
(C++ kernel on CPU float32 that clips every tap at its stripe's edges on the data in place; the
PyTorch formulation, stripes folded into the batch axis, elsewhere: ``lstc_gait/ops``). While
TorchScript or ONNX records the model, the PyTorch formulation is inlined instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lstc_gait import ops

from .bn_relu import BranchOutput, batch_norm_relu_concat
from .convbn import bn_is_folding, conv3d_inference, fold_conv_bn
from .memory_format import recording_graph
from .stripes import check_stripes

fold_stripes = ops.reference.fold_stripes
unfold_stripes = ops.reference.unfold_stripes


def _triple(k: int | tuple[int, int, int] | list[int], name: str) -> tuple[int, int, int]:
    kk = (k, k, k) if isinstance(k, int) else tuple(int(v) for v in k)
    if len(kk) != 3 or min(kk) < 1 or any(v % 2 == 0 for v in kk):
        raise ValueError(f"{name} must be three odd positive ints (kT, kH, kW), got {k!r}")
    return kk  # type: ignore[return-value]


def stripe_depthwise_conv3d(x: Tensor, weight: Tensor, num_stripes: int) -> Tensor:
    """Depthwise conv with 'same' zero padding applied separately inside each height stripe.

    ``x`` is ``(N, C, T, H, W)``, ``weight`` ``(C, 1, kT, kH, kW)``. Stripe ``s`` covers rows
    ``[s*h, (s+1)*h)`` with ``h = max(1, H // S)``; the last stripe takes the leftover rows.
    The result is in channels_last_3d memory (same values as any layout).

    Args:
        x: ``(N, C, T, H, W)`` activations.
        weight: ``(C, 1, kT, kH, kW)`` depthwise kernel, odd sizes.
        num_stripes: ``S``, at most ``H``.

    Returns:
        ``(N, C, T, H, W)`` tensor in channels_last_3d memory, ``x``'s dtype.

    Raises:
        ValueError: When ``S < 1`` or ``H < S``, or (from the op) ``weight`` is not
            ``(C, 1, kT, kH, kW)`` with odd sizes.
    """
    check_stripes(x.shape[3], num_stripes, where="LSTC input")
    weight = weight.to(x.dtype)  # under autocast the activations may already be in the autocast dtype
    if recording_graph():
        return ops.reference.stripe_depthwise_conv3d(x, weight, num_stripes)
    return torch.ops.lstc_gait.stripe_depthwise_conv3d(x, weight, num_stripes)


class LSTC(nn.Module):
    """LSTC: ``x (N, C_in, T, H, W) float -> (N, C_out, T, H, W)``, spatio-temporal conv inside height stripes.

    Stripe-local depthwise 3D conv (no tap crosses a stripe edge) -> pointwise ``Conv3d(C_in,
    C_out, 1)`` -> BN -> ReLU. Source: Local Spatio-Temporal Convolution of the original
    lstc-gait project (``lstc/modules.py``).

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: ``(kT, kH, kW)`` or one int, odd positive (frames, rows, columns).
        num_stripes: Height stripes ``S >= 1``; inputs need ``H >= S``.

    Raises:
        ValueError: When ``num_stripes < 1`` or ``kernel_size`` is not three odd positive ints.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = (3, 3, 3),
                 num_stripes: int = 8) -> None:
        super().__init__()
        if num_stripes < 1:
            raise ValueError(f"num_stripes must be >= 1, got {num_stripes}")
        self.kernel_size = _triple(kernel_size, "LSTC kernel_size")
        self.num_stripes = int(num_stripes)
        # padding=0: the stripe-aware padding is applied in stripe_depthwise_conv3d.
        self.depthwise = nn.Conv3d(in_channels, in_channels, self.kernel_size, groups=in_channels, bias=False)
        self.pointwise = nn.Conv3d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)

    def stripe_depthwise(self, x: Tensor) -> Tensor:
        """The depthwise part alone (stripe-local, 'same' size).

        Args:
            x: ``(N, C_in, T, H, W)`` float activations, ``H >= S``.

        Returns:
            ``(N, C_in, T, H, W)`` in channels_last_3d memory, ``x``'s dtype.

        Raises:
            ValueError: When ``H < S`` or ``x`` has not ``C_in`` channels.
        """
        return stripe_depthwise_conv3d(x, self.depthwise.weight, self.num_stripes)

    def branch_output(self, x: Tensor) -> BranchOutput:
        """The activated output, or in training ``(bn, pointwise output)`` for the caller to normalise.

        See :meth:`lstc_gait.models.convbn.ConvBNReLU.branch_output`. In eval mode the BN is folded
        into the pointwise conv (:func:`~lstc_gait.models.convbn.fold_conv_bn`).

        Args:
            x: ``(N, C_in, T, H, W)`` float activations, ``H >= S``.

        Returns:
            ``relu(bn(pointwise(stripe_depthwise(x))))`` ``(N, C_out, T, H, W)``, or ``(bn, y)`` with
            ``y`` the ``(N, C_out, T, H, W)`` pointwise output.

        Raises:
            ValueError: When ``H < S`` or ``x`` has not ``C_in`` channels.
        """
        y = self.stripe_depthwise(x)
        if bn_is_folding(self.bn):
            weight, bias = fold_conv_bn(self.pointwise.weight, None, self.bn)
            return conv3d_inference(y, weight, bias)
        return (self.bn, self.pointwise(y))

    def forward(self, x: Tensor) -> Tensor:
        """Apply LSTC.

        Args:
            x: ``(N, C_in, T, H, W)`` float activations, ``H >= S``.

        Returns:
            ``(N, C_out, T, H, W)``, ``x``'s dtype, after BN (batch statistics in training, folded
            running statistics in eval) and ReLU.

        Raises:
            ValueError: When ``H < S`` or ``x`` has not ``C_in`` channels.
        """
        out = self.branch_output(x)
        return out if isinstance(out, Tensor) else batch_norm_relu_concat([out])

    def extra_repr(self) -> str:
        """Kernel size and stripes for ``repr(module)``.

        Returns:
            ``"kernel_size=(kT, kH, kW), num_stripes=S"``.
        """
        return f"kernel_size={self.kernel_size}, num_stripes={self.num_stripes}"
