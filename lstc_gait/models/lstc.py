"""LSTC: local spatio-temporal convolution inside height stripes.

A depthwise ``(kT, kH, kW)`` convolution runs inside each height stripe with zero padding at every
stripe edge (nothing leaks across stripes), then a pointwise ``1x1x1`` convolution mixes channels,
followed by BatchNorm and ReLU. State-dict keys: ``depthwise.weight``, ``pointwise.weight``, ``bn.*``.

Speed: on CPU float32 the C kernel of ``native/stripe_depthwise.c`` clips every tap at its stripe's
edges, on the data in place. Elsewhere (other devices and dtypes, autocast, export, no compiler)
the stripes are folded into the batch axis so one depthwise convolution with ordinary 'same'
padding handles all equal-height stripes at once (its zero padding is then exactly the stripe-edge
padding); when ``H`` is not divisible by ``S`` the taller last stripe runs as a second convolution.
Folding beat a zero-row-gap layout (stripes separated by ``kH // 2`` zero rows) several times for
forward+backward at the real shapes; the C kernel beat folding 3x (docs/performance.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .bn_relu import BranchOutput, batch_norm_relu_concat
from .convbn import bn_is_folding, conv3d_inference, fold_conv_bn
from .fastops import depthwise_conv3d
from .layout import recording_graph
from .native import native_stripe_depthwise_available, native_stripe_depthwise_conv3d
from .stripes import check_stripes


def _triple(k: int | tuple[int, int, int] | list[int], name: str) -> tuple[int, int, int]:
    kk = (k, k, k) if isinstance(k, int) else tuple(int(v) for v in k)
    if len(kk) != 3 or min(kk) < 1 or any(v % 2 == 0 for v in kk):
        raise ValueError(f"{name} must be three odd positive ints (kT, kH, kW), got {k!r}")
    return kk  # type: ignore[return-value]


def fold_stripes(x: Tensor, stripes: int, h: int) -> Tensor:
    """``(N, C, T, stripes*h, W) -> (N*stripes, C, T, h, W)`` in channels_last_3d memory.

    In channels_last_3d the move is a copy of contiguous ``h*W*C`` runs (a fast memcpy), where the
    default layout would need a transposing copy with ``W``-long runs (measured ~10x slower).
    """
    n, c, t, _, w = x.shape
    z = x.permute(0, 2, 3, 4, 1).reshape(n, t, stripes, h, w, c)  # a view when x is channels_last_3d
    z = z.transpose(1, 2).contiguous().view(n * stripes, t, h, w, c)
    return z.permute(0, 4, 1, 2, 3)


def unfold_stripes(y: Tensor, n: int) -> Tensor:
    """Inverse of :func:`fold_stripes`: ``(N*S, C, T, h, W) -> (N, C, T, S*h, W)``, channels_last_3d."""
    ns, c, t, h, w = y.shape
    s = ns // n
    z = y.permute(0, 2, 3, 4, 1).reshape(n, s, t, h, w, c)
    z = z.transpose(1, 2).contiguous().view(n, t, s * h, w, c)
    return z.permute(0, 4, 1, 2, 3)


def stripe_depthwise_conv3d(x: Tensor, weight: Tensor, num_stripes: int) -> Tensor:
    """Depthwise conv with 'same' zero padding applied separately inside each height stripe.

    ``x`` is ``(N, C, T, H, W)``, ``weight`` ``(C, 1, kT, kH, kW)``. Stripe ``s`` covers rows
    ``[s*h, (s+1)*h)`` with ``h = max(1, H // S)``; the last stripe takes the leftover rows.
    The result is in channels_last_3d memory (same values as any layout).
    """
    n, c, t, h_total, w = x.shape
    check_stripes(h_total, num_stripes, where="LSTC input")
    if not recording_graph() and not torch.is_autocast_enabled("cpu") and native_stripe_depthwise_available(x, weight):
        return native_stripe_depthwise_conv3d(x, weight, num_stripes)
    k_t, k_h, k_w = weight.shape[2:]
    pad = (k_t // 2, k_h // 2, k_w // 2)
    if num_stripes == 1 or k_h == 1:  # no row of the kernel can reach another stripe
        return depthwise_conv3d(x, weight, pad)
    h = max(1, h_total // num_stripes)
    folded = num_stripes if h * num_stripes == h_total else num_stripes - 1
    main = x if folded == num_stripes else x[:, :, :, : folded * h]
    y = unfold_stripes(depthwise_conv3d(fold_stripes(main, folded, h), weight, pad), n)
    if folded == num_stripes:
        return y
    last = depthwise_conv3d(x[:, :, :, folded * h:], weight, pad)
    return torch.cat([y, last], dim=3)


class LSTC(nn.Module):
    """Stripe-local depthwise 3D conv -> pointwise Conv3d(in, out, 1) -> BN -> ReLU."""

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
        """The depthwise part alone (stripe-local, 'same' size)."""
        return stripe_depthwise_conv3d(x, self.depthwise.weight, self.num_stripes)

    def branch_output(self, x: Tensor) -> BranchOutput:
        """The activated output, or in training ``(bn, pointwise output)`` (see ConvBNReLU.branch_output)."""
        y = self.stripe_depthwise(x)
        if bn_is_folding(self.bn):
            weight, bias = fold_conv_bn(self.pointwise.weight, None, self.bn)
            return conv3d_inference(y, weight, bias)
        return (self.bn, self.pointwise(y))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        out = self.branch_output(x)
        return out if isinstance(out, Tensor) else batch_norm_relu_concat([out])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, num_stripes={self.num_stripes}"
