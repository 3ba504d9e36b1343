"""2x2 spatial max-pool between the backbone's blocks, ``MaxPool3d((1, 2, 2))`` semantics.

On CPU float32 the C kernel (native/max_pool.py) runs both directions. Otherwise, at inference
the pool is the elementwise maximum of the four strided sub-grids: on the
channels_last_3d activations the model uses, that is 2-18x faster than the library max-pool on
the project's 2-core CPU (docs/performance.md), which also builds an index tensor nobody needs.
Training keeps the library op (its backward routes each gradient to the single maximum; the
maximum-of-views form would split ties, a different subgradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layout import recording_graph
from .native import native_max_pool_available, native_max_pool_hw2


def max_pool_hw2(x: Tensor) -> Tensor:
    """``F.max_pool3d(x, (1, 2, 2))`` as a maximum of four strided views (odd edges dropped)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    a = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
    b = torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2])
    return torch.maximum(a, b, out=a) if not a.requires_grad else torch.maximum(a, b)  # out=: one less buffer


class SpatialMaxPool2(nn.Module):
    """``(N, C, T, H, W) -> (N, C, T, H // 2, W // 2)``; no parameters."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if recording_graph():
            return F.max_pool3d(x, (1, 2, 2))
        if not torch.is_autocast_enabled("cpu") and native_max_pool_available(x):
            return native_max_pool_hw2(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return F.max_pool3d(x, (1, 2, 2))
        return max_pool_hw2(x)
