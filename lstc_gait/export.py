"""``python -m lstc_gait.export checkpoint=PATH``: TorchScript (+ ONNX when installed) with a parity check.

Library logic: :mod:`lstc_gait.exporting`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig


def run_export(cfg: DictConfig, base_dir: Path) -> dict[str, Path]:
    """Export as ``cfg`` says; returns {"torchscript": path[, "onnx": path]}."""
    from lstc_gait import exporting as X
    from lstc_gait.evaluation.commands import load_model

    ckpt = Path(str(cfg.checkpoint)).expanduser()
    ckpt = ckpt if ckpt.is_absolute() else base_dir / ckpt
    loaded = load_model(ckpt, use_ema=bool(cfg.use_ema))
    height, width = loaded.input_size
    shapes = [tuple(int(v) for v in s) for s in cfg.parity_shapes]
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise X.ExportError(f"parity_shapes must be [batch, frames] pairs >= 1, got {list(cfg.parity_shapes)}")
    out_dir = Path(str(cfg.out_dir)) if cfg.out_dir else Path("outputs") / "export" / ckpt.stem
    out_dir = out_dir if out_dir.is_absolute() else base_dir / out_dir
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

    want_onnx = str(cfg.onnx).lower()
    if want_onnx not in ("auto", "true", "false"):
        raise X.ExportError(f"onnx={cfg.onnx!r} must be auto, true or false")
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


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lstc_gait.evaluation.commands import run_command
    from lstc_gait.exporting import ExportError

    run_command("export", lambda: run_export(cfg, Path.cwd()), user_errors=(ExportError,))


if __name__ == "__main__":
    main()
