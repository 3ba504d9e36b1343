"""Export job: TorchScript (+ ONNX when installed) of a checkpoint's model, with a parity check."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from lstc_gait.utils.paths import resolve_path


def export(cfg: DictConfig, base_dir: Path) -> dict[str, Path]:
    """Export the model the ``export`` config names.

    Args:
        cfg: The composed ``conf/export.yaml``.
        base_dir: The launch folder (relative paths start here).

    Returns:
        ``{"torchscript": path[, "onnx": path]}``.

    Raises:
        CheckpointError: An unusable checkpoint.
        ExportError: Bad ``parity_shapes``/``onnx`` settings, a failed export, or a failed parity check.
    """
    from lstc_gait import exporting as X
    from lstc_gait.engine.checkpoint import load_model

    ckpt = resolve_path(cfg.checkpoint, base_dir)
    loaded = load_model(ckpt, use_ema=bool(cfg.use_ema))
    height, width = loaded.input_size
    shapes = [tuple(int(v) for v in s) for s in cfg.parity_shapes]
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise X.ExportError(f"parity_shapes must be [batch, frames] pairs >= 1, got {list(cfg.parity_shapes)}")
    want_onnx = str(cfg.onnx).lower()
    if want_onnx not in ("auto", "true", "false"):
        raise X.ExportError(f"onnx={cfg.onnx!r} must be auto, true or false")
    out_dir = resolve_path(cfg.out_dir or Path("outputs") / "export" / ckpt.stem, base_dir)
    stem = str(cfg.name or ckpt.stem)
    print(f"model: {ckpt} ({loaded.kind}, {loaded.weights} weights), input (N, 1, T, {height}, {width})")

    written: dict[str, Path] = {}
    path, result, method = X.export_torchscript(loaded.model, out_dir / f"{stem}.ts", height, width, shapes)
    print(result.format())
    print(f"TorchScript ({method}): {path}")
    if method == "trace" and X.traced_min_frames(loaded.model) > 1:
        print(f"note: the traced graph needs sequences of at least {X.traced_min_frames(loaded.model)} frames "
              "(hard top-k pooling); batch size and longer sequences are free")
    written["torchscript"] = path
    if want_onnx == "true" or (want_onnx == "auto" and X.onnx_available()):
        onnx_path, onnx_result = X.export_onnx(loaded.model, out_dir / f"{stem}.onnx", height, width, shapes,
                                               opset=int(cfg.opset))
        print(onnx_result.format() if onnx_result is not None
              else "ONNX parity not checked: onnxruntime is not installed (graph validated with onnx.checker)")
        print(f"ONNX: {onnx_path}")
        written["onnx"] = onnx_path
    elif want_onnx == "auto":
        print("ONNX skipped: the onnx package is not installed (pip install 'lstc_gait[onnx]')")
    return written


__all__ = ["export"]
