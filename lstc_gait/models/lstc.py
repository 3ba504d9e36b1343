"""LSTC: local spatio-temporal convolution inside height stripes.

A depthwise ``(kT, kH, kW)`` convolution runs inside each height stripe with zero padding at every
stripe edge (nothing leaks across stripes), then a pointwise ``1x1x1`` convolution mixes channels,
followed by BatchNorm and ReLU. State-dict keys: ``depthwise.weight``, ``pointwise.weight``, ``bn.*``.

Speed: the stripes are folded into the batch axis so one depthwise convolution with ordinary
'same' padding handles all equal-height stripes at once (its zero padding is then exactly the
stripe-edge padding). When ``H`` is not divisible by ``S`` the taller last stripe runs as a second
convolution. Measured against a zero-row-gap formulation (one conv over stripes separated by
``kH // 2`` zero rows), folding was several times faster for forward+backward at the real shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convbn import bn_is_folding, fold_conv_bn
from .fastops import depthwise_conv3d
from .stripes import check_stripes


def _triple(k: int | tuple[int, int, int] | list[int], name: str) -> tuple[int, int, int]:
    kk = (k, k, k) if isinstance(k, int) else tuple(int(v) for v in k)
    if len(kk) != 3 or min(kk) < 1 or any(v % 2 == 0 for v in kk):
        raise ValueError(f"{name} must be three odd positive ints (kT, kH, kW), got {k!r}")
    return kk  # type: ignore[return-value]


def stripe_depthwise_conv3d(x: Tensor, weight: Tensor, num_stripes: int) -> Tensor:
    """Depthwise conv with 'same' zero padding applied separately inside each height stripe.

    ``x`` is ``(N, C, T, H, W)``, ``weight`` ``(C, 1, kT, kH, kW)``. Stripe ``s`` covers rows
    ``[s*h, (s+1)*h)`` with ``h = max(1, H // S)``; the last stripe takes the leftover rows.
    """
    n, c, t, h_total, w = x.shape
    check_stripes(h_total, num_stripes, where="LSTC input")
    k_t, k_h, k_w = weight.shape[2:]
    pad = (k_t // 2, k_h // 2, k_w // 2)
    if num_stripes == 1 or k_h == 1:  # no row of the kernel can reach another stripe
        return depthwise_conv3d(x, weight, pad)
    h = max(1, h_total // num_stripes)
    folded = num_stripes if h * num_stripes == h_total else num_stripes - 1
    main = x if folded == num_stripes else x[:, :, :, : folded * h]
    # (N, C, T, k*h, W) -> (N*k, C, T, h, W): every stripe becomes its own sample.
    z = main.reshape(n, c, t, folded, h, w).permute(0, 3, 1, 2, 4, 5).reshape(n * folded, c, t, h, w)
    y = depthwise_conv3d(z, weight, pad)
    y = y.reshape(n, folded, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(n, c, t, folded * h, w)
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

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        y = self.stripe_depthwise(x)
        if bn_is_folding(self.bn):
            weight, bias = fold_conv_bn(self.pointwise.weight, None, self.bn)
            return F.relu(F.conv3d(y, weight, bias))
        return F.relu(self.bn(self.pointwise(y)))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, num_stripes={self.num_stripes}"
