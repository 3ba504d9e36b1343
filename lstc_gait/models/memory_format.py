"""Memory-format helpers: the models compute in channels_last_3d, except while being exported."""

from __future__ import annotations

import torch
from torch import Tensor


def recording_graph() -> bool:
    """Whether TorchScript or ONNX is recording the model right now.

    Memory-format hints, Python-side chunking and the ``lstc_gait`` custom ops must stay out of
    a recorded graph (ONNX has no memory formats, a trace would freeze a loop, exporters do not
    know the custom ops). ``torch.compile`` is not recording in this sense: it keeps all of them.

    Returns:
        True while scripting, tracing or exporting to ONNX; False otherwise (and always while
        ``torch.compile`` traces).
    """
    if torch.compiler.is_compiling():
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` in channels_last_3d memory (a no-op when it already is, or while exporting).

    channels_last_3d is oneDNN's native layout on CPU (about 2x faster convolutions than the
    default layout at the model's shapes, docs/performance.md); values never depend on layout.

    Args:
        x: A 5-D ``(N, C, T, H, W)`` tensor.

    Returns:
        The same values in channels_last_3d memory (``x`` itself when it already is).
    """
    if recording_graph():
        return x
    return x.contiguous(memory_format=torch.channels_last_3d)
