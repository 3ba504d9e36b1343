"""Export a gait model for deployment: TorchScript always, ONNX when the ``onnx`` package is present.

The exported graph maps ``silhouettes`` float (N, 1, T, H, W) in [0, 1] and ``lengths`` int64 (N,)
(valid frames per sequence, zero padding at the end of time) to ``embedding`` float (N, D). Batch size
and sequence length are dynamic. A parity check runs the export against eager mode on several batch
sizes and lengths (including padded sequences) and requires cosine similarity >= 0.9999 per sample.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lstc_gait.errors import UserError
from lstc_gait.utils.fileio import atomic_output

log = logging.getLogger(__name__)

PARITY_THRESHOLD = 0.9999
# (batch, frames) shapes the parity check covers; the export example uses the first one.
DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((2, 16), (1, 9), (3, 23), (4, 30))


class ExportError(UserError, RuntimeError):
    """The model could not be exported, or the export disagrees with eager mode."""


class EmbeddingModel(nn.Module):
    """Deployment wrapper: ``(silhouettes, lengths) -> embedding`` (a tensor, not a dict)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, silhouettes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embed silhouettes.

        Args:
            silhouettes: float (N, 1, T, H, W) in [0, 1], zero-padded in time.
            lengths: int64 (N,) valid frames per sequence.

        Returns:
            float (N, D) embeddings.
        """
        return self.model(silhouettes, lengths)["embedding"]


@dataclass
class ParityResult:
    """Per-shape agreement of an export with eager mode.

    Attributes:
        backend: What was compared (``TorchScript (script)``, ``ONNX (onnxruntime)``).
        rows: (batch, frames, min cosine, max abs difference) per checked shape.
    """
    backend: str
    rows: list[tuple[int, int, float, float]] = field(default_factory=list)  # batch, frames, min cos, max abs diff

    @property
    def min_cosine(self) -> float:
        """The worst per-sample cosine similarity over all shapes."""
        return min((r[2] for r in self.rows), default=float("nan"))

    @property
    def passed(self) -> bool:
        """Whether every shape reached :data:`PARITY_THRESHOLD`."""
        return bool(self.rows) and self.min_cosine >= PARITY_THRESHOLD

    def format(self) -> str:
        """The result as a small text table.

        Returns:
            Printable text ending with PASS or FAIL.
        """
        lines = [f"parity {self.backend} vs eager (cosine >= {PARITY_THRESHOLD}):",
                 "  batch  frames  min cosine    max |diff|"]
        lines += [f"  {n:5d}  {t:6d}  {c:.8f}  {d:.3e}" for n, t, c, d in self.rows]
        lines.append(f"  => {'PASS' if self.passed else 'FAIL'} (min cosine {self.min_cosine:.8f})")
        return "\n".join(lines)


def example_inputs(batch: int, frames: int, height: int = 64, width: int = 44,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary silhouette-like input with varied lengths (the first sequence is full length)."""
    g = torch.Generator().manual_seed(seed * 1000 + batch * 37 + frames)
    x = (torch.rand(batch, 1, frames, height, width, generator=g) > 0.6).float()
    # every sequence after the first is padded (shorter than the batch), so parity covers length masking
    lengths = torch.randint(max(1, frames // 2), max(2, frames), (batch,), generator=g, dtype=torch.int64)
    lengths = lengths.clamp(max=frames)
    lengths[0] = frames
    for i, n in enumerate(lengths.tolist()):
        x[i, :, n:] = 0.0  # padding is zeros, as collate_padded makes it
    return x, lengths


def parity(reference: Callable[..., torch.Tensor], candidate: Callable[..., torch.Tensor], backend: str,
           shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES, height: int = 64, width: int = 44) -> ParityResult:
    """Compare ``candidate`` with ``reference`` on each (batch, frames) shape."""
    result = ParityResult(backend)
    for n, t in shapes:
        x, lengths = example_inputs(n, t, height, width)
        with torch.no_grad():
            ref = reference(x, lengths).float()
            got = torch.as_tensor(candidate(x, lengths)).float()
        if got.shape != ref.shape:
            raise ExportError(f"{backend}: output shape {tuple(got.shape)} != eager {tuple(ref.shape)} "
                              f"for batch {n}, {t} frames")
        cos = torch.nn.functional.cosine_similarity(ref, got, dim=1, eps=1e-12)
        result.rows.append((n, t, float(cos.min()), float((ref - got).abs().max())))
    return result


def _plain_depthwise_conv3d(x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int, int]) -> torch.Tensor:
    return torch.nn.functional.conv3d(x, weight, padding=tuple(int(p) for p in padding), groups=x.shape[1])


@contextlib.contextmanager
def export_friendly_ops() -> Iterator[None]:
    """Swap the models' fast CPU depthwise kernel (a custom autograd Function, which TorchScript and
    ONNX cannot record) for the library convolution it equals, while exporting; restored afterwards.
    The parity check then confirms the exported graph still matches eager mode."""
    try:
        from lstc_gait.models import fastops
    except ImportError:
        yield
        return
    fast = getattr(fastops, "depthwise_conv3d", None)
    patched: list[tuple[object, str]] = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("lstc_gait.models"):
            continue
        for attr, value in list(vars(module).items()):
            if fast is not None and value is fast and module is not fastops:
                setattr(module, attr, _plain_depthwise_conv3d)
                patched.append((module, attr))
    try:
        yield
    finally:
        for module, attr in patched:
            setattr(module, attr, fast)


def traced_min_frames(model: nn.Module) -> int:
    """Shortest sequence a *traced* export accepts: tracing freezes ``min(topk, T)`` of hard top-k
    pooling at the example's ``topk``, so sequences need at least ``topk`` frames (scripted: 1)."""
    need = 1
    for module in model.modules():
        if getattr(module, "mode", None) == "hard" and isinstance(getattr(module, "topk", None), int):
            need = max(need, int(module.topk))
    return need


def export_torchscript(model: nn.Module, path: str | os.PathLike, height: int = 64, width: int = 44,
                       shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES) -> tuple[Path, ParityResult, str]:
    """Script the wrapped model (falls back to tracing when scripting fails); save atomically.

    Returns (path, parity, method). Tracing records one shape, so the parity check over several batch
    sizes and lengths is what proves the traced graph is dynamic; a failing check raises ExportError.
    """
    wrapper = EmbeddingModel(model).eval()
    method = "script"
    with export_friendly_ops():
        try:
            exported = torch.jit.script(wrapper)
        except Exception as exc:  # TorchScript cannot compile some Python constructs
            log.info("torch.jit.script failed (%s); tracing instead", str(exc).strip().splitlines()[0])
            method = "trace"
            x, lengths = example_inputs(*shapes[0], height, width)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the parity check judges the trace
                exported = torch.jit.trace(wrapper, (x, lengths), check_trace=False)
    out = Path(path)
    with atomic_output(out) as tmp:
        exported.save(str(tmp))
        loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
        result = parity(wrapper, loaded, f"TorchScript ({method})", shapes, height, width)
        if not result.passed:
            raise ExportError(result.format() + "\nthe TorchScript export does not match eager mode")
    return out, result, method


def onnx_available() -> bool:
    """Whether the ``onnx`` package is installed.

    Returns:
        True when it can be imported.
    """
    return importlib.util.find_spec("onnx") is not None


def export_onnx(model: nn.Module, path: str | os.PathLike, height: int = 64, width: int = 44,
                shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES, opset: int = 17) -> tuple[Path, ParityResult | None]:
    """Export to ONNX with dynamic batch and frames axes, validated and (with onnxruntime) parity-checked.

    Args:
        model: The model (``model(x, lengths)["embedding"]``).
        path: The ``.onnx`` file, written atomically.
        height: Silhouette height (pixels).
        width: Silhouette width (pixels).
        shapes: (batch, frames) pairs of the parity check; the first is the tracing example.
        opset: ONNX opset version.

    Returns:
        (path, parity result, or None when onnxruntime is not installed and only ``onnx.checker`` ran).

    Raises:
        ExportError: ``onnx`` is missing, the export fails, or it disagrees with eager mode.
    """
    if not onnx_available():
        raise ExportError("ONNX export needs the onnx package: pip install 'lstc_gait[onnx]'")
    wrapper = EmbeddingModel(model).eval()
    x, lengths = example_inputs(*shapes[0], height, width)
    out = Path(path)
    try:
        with atomic_output(out) as tmp:
            result = _export_onnx_to(wrapper, x, lengths, tmp, opset, shapes, height, width)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {exc}") from exc
    return out, result


def _export_onnx_to(wrapper: nn.Module, x: torch.Tensor, lengths: torch.Tensor, tmp: Path, opset: int,
                    shapes: Sequence[tuple[int, int]], height: int, width: int) -> ParityResult | None:
    import onnx

    with torch.no_grad(), export_friendly_ops(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper, (x, lengths), str(tmp), input_names=["silhouettes", "lengths"],
            output_names=["embedding"], opset_version=opset, dynamo=False,
            dynamic_axes={"silhouettes": {0: "batch", 2: "frames"}, "lengths": {0: "batch"},
                          "embedding": {0: "batch"}},
        )
    onnx.checker.check_model(str(tmp))
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])

    def run(xx: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
        feeds = {"silhouettes": xx.numpy(), "lengths": ll.numpy()}
        names = {i.name for i in session.get_inputs()}
        return torch.from_numpy(session.run(None, {k: v for k, v in feeds.items() if k in names})[0])

    result = parity(wrapper, run, "ONNX (onnxruntime)", shapes, height, width)
    if not result.passed:
        raise ExportError(result.format() + "\nthe ONNX export does not match eager mode")
    return result
