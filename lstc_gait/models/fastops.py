"""Fast CPU formulations of the ops the LSTC model family leans on.

Every helper here computes exactly the same math as its plain PyTorch counterpart (tests in
tests/test_fastops.py compare values and gradients); only the formulation differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def depthwise_conv3d(x: Tensor, weight: Tensor, padding: tuple[int, int, int]) -> Tensor:
    """Depthwise 3D convolution: ``F.conv3d(x, weight, padding=padding, groups=x.shape[1])``.

    ``x`` is ``(N, C, T, H, W)``, ``weight`` is ``(C, 1, kT, kH, kW)``.
    """
    if x.dim() != 5 or weight.dim() != 5 or weight.shape[0] != x.shape[1] or weight.shape[1] != 1:
        raise ValueError(
            f"depthwise_conv3d expects x (N, C, T, H, W) and weight (C, 1, kT, kH, kW); "
            f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    return F.conv3d(x, weight, padding=padding, groups=x.shape[1])
