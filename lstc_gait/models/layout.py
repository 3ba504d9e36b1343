"""Memory-layout helpers: the models compute in channels_last_3d, except while being exported."""

from __future__ import annotations

import torch
from torch import Tensor


def recording_graph() -> bool:
    """True while TorchScript or ONNX records the model (layout hints and Python-side chunking
    must stay out of the recorded graph: ONNX has no memory formats, a trace would freeze a loop)."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` in channels_last_3d memory (a no-op when it already is, or while exporting).

    channels_last_3d is oneDNN's native layout on CPU (about 2x faster convolutions than the
    default layout at the model's shapes, docs/performance.md); values never depend on layout.
    """
    if recording_graph():
        return x
    return x.contiguous(memory_format=torch.channels_last_3d)
