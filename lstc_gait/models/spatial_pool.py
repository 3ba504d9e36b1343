"""2x2 spatial max-pool after the backbone's first two blocks, ``MaxPool3d((1, 2, 2))`` semantics.

The op ``torch.ops.lstc_gait.max_pool_hw2`` (``lstc_gait/ops``) runs both directions: one pass
each way on channels_last_3d data with no index tensor (C++ kernel on CPU float32; elsewhere the
maximum of the four strided sub-grids forward and the library's max-pool backward). While
TorchScript or ONNX records the model, the library max-pool runs instead. At inference the block
op ``lstc_gait::lstc_block`` pools inside the block (:class:`~lstc_gait.models.blocks.AsymmetricBlock`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .memory_format import recording_graph


def max_pool_hw2(x: Tensor) -> Tensor:
    """2x2 spatial max-pool of every frame: ``(N, C, T, H, W) -> (N, C, T, H // 2, W // 2)`` float.

    Same values as ``nn.MaxPool3d((1, 2, 2))`` (odd last row/column dropped, NaN propagates).

    Args:
        x: ``(N, C, T, H, W)`` float activations.

    Returns:
        ``(N, C, T, H // 2, W // 2)`` in channels_last_3d memory (except while exporting), ``x``'s dtype.

    Raises:
        ValueError: When ``x`` is not 5-D (from the op ``lstc_gait::max_pool_hw2``).
    """
    if recording_graph():
        return F.max_pool3d(x, (1, 2, 2))
    return torch.ops.lstc_gait.max_pool_hw2(x)
