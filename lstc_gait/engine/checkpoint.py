"""Training checkpoints: atomic writes, resume lookup, and clear errors on a config mismatch.

A checkpoint is one ``torch.save`` dict: ``model``, ``optimizer``, ``scheduler``, ``ema``, ``scaler``,
``sampler`` (epoch and batch index), ``rng`` (python, numpy, torch, cuda), ``step``, ``config`` (the
resolved run config as a plain dict), ``metrics`` and ``best``. ``last.pt`` is rewritten every
``trainer.checkpoint_every`` steps and at the end; ``best.pt`` when the monitored test metric improves.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "lstc_gait.train/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run (missing, unreadable, or another model config)."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint on the CPU, with an error naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a lstc_gait training checkpoint (an original lstc-gait "
                              "checkpoint? warm-start from it with init_from=PATH instead of resume)")
    return state


def resolve_resume(resume: str | None, run_dir: str | os.PathLike) -> Path | None:
    """``None`` -> no resume; ``auto`` -> ``<run_dir>/checkpoints/last.pt`` when it exists; else the path."""
    if resume in (None, "", "none", "null"):
        return None
    if resume == "auto":
        last = Path(run_dir) / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if path.is_dir():  # a run dir or its checkpoints folder
        for cand in (path / "checkpoints" / "last.pt", path / "last.pt"):
            if cand.is_file():
                return cand
        raise CheckpointError(f"resume={resume}: no checkpoints/last.pt in that folder")
    if not path.is_file():
        raise CheckpointError(f"resume={resume}: no such checkpoint file")
    return path


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


# Keys of the run config that change the model's parameters or the meaning of its outputs.
MODEL_KEYS = ("model",)


def check_compatible(saved_config: dict[str, Any], config: dict[str, Any], path: str | os.PathLike,
                     num_classes: int | None = None, saved_num_classes: int | None = None) -> None:
    """Raise CheckpointError naming every model setting that differs between a checkpoint and this run."""
    diffs = []
    for section in MODEL_KEYS:
        old = _flatten(saved_config.get(section, {}), section)
        new = _flatten(config.get(section, {}), section)
        for key in sorted(set(old) | set(new)):
            if key.endswith("_target_") and old.get(key) == new.get(key):
                continue
            if old.get(key, "<missing>") != new.get(key, "<missing>"):
                diffs.append(f"{key}: checkpoint {old.get(key, '<missing>')!r}, this run {new.get(key, '<missing>')!r}")
    if num_classes is not None and saved_num_classes is not None and num_classes != saved_num_classes:
        diffs.append(f"num_classes (training subjects): checkpoint {saved_num_classes}, this run {num_classes}")
    if diffs:
        raise CheckpointError(f"checkpoint {path} was written for another model config:\n  " + "\n  ".join(diffs)
                              + "\nresume with the same model settings, or start a new run")


def load_model_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """load_state_dict with an error that lists missing, unexpected and mis-shaped tensors."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        lines = []
        if missing:
            lines.append(f"missing in checkpoint: {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            lines.append(f"not in this model: {', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8 else ""))
        lines.extend(shapes[:8])
        raise CheckpointError(f"checkpoint {path} does not fit this model:\n  " + "\n  ".join(lines))
    module.load_state_dict(state)
