"""Importer for checkpoints written by the original lstc-gait project.

A checkpoint is a dict with ``model`` (the backbone state_dict, keys identical to ``LSTCBackbone``)
and ``args`` (the original training flags); ``classifier``, ``optimizer``, ``scheduler``, ``epoch``
... are ignored. The backbone is rebuilt from the checkpoint's own ``args``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..engine.checkpoint import Checkpoint, CheckpointError, read_checkpoint
from ..models.backbone import DEFAULT_KERNELS, LSTCBackbone
from ..models.heads import GaitModel

# The importer's historical error name; the platform has one checkpoint error class.
CheckpointFormatError = CheckpointError


# original flag -> (LSTCBackbone kwarg, default of the original project)
_ARG_MAP: dict[str, tuple[str, Any]] = {
    "base_channels": ("base_channels", 16),
    "num_stripes": ("num_stripes", 8),
    "embedding_dim": ("embedding_dim", 256),
    "pooling_topk": ("topk", 2),
    "pooling_temperature": ("temperature", 1.0),
    "use_temporal": ("use_temporal", True),
    "use_spatial": ("use_spatial", True),
    "use_joint": ("use_joint", True),
    "joint_type": ("joint_type", "lstc"),
    "dynamic_experts": ("dynamic_experts", 4),
    "dynamic_gate_hidden": ("dynamic_gate_hidden", 0),
}
# kwargs that decide parameter shapes (pooling settings do not).
ARCHITECTURE_KEYS = ("in_channels", "base_channels", "num_stripes", "embedding_dim", "kernels", "use_temporal",
                     "use_spatial", "use_joint", "joint_type", "branch_width", "min_branch_width",
                     "dynamic_experts", "dynamic_gate_hidden")


def reference_args_to_kwargs(args: Mapping[str, Any]) -> dict[str, Any]:
    """Translate the original ``args`` dict into ``LSTCBackbone`` keyword arguments.

    Flags missing from ``args`` take the original project's defaults; unrelated flags (lr, seed...)
    are ignored. The original architecture is fixed otherwise: kernels (3,7,3)/(3,5,3)/(3,3,3),
    half-split branch width with a minimum of 8, one input channel, stripes pooled by their mean.
    """
    if not isinstance(args, Mapping):
        raise CheckpointFormatError(f"checkpoint 'args' must be a dict, got {type(args).__name__}")
    kw: dict[str, Any] = {"in_channels": 1, "kernels": DEFAULT_KERNELS, "branch_width": "half_split",
                          "min_branch_width": 8, "dynamic_temperature": 1.0,
                          "spatial_pooling": "mean"}
    for flag, (name, default) in _ARG_MAP.items():
        value = args.get(flag, default)
        kw[name] = default if value is None else value
    kw["pooling"] = "soft" if bool(args.get("pooling_soft", False)) else "hard"
    for name in ("base_channels", "num_stripes", "embedding_dim", "topk", "dynamic_experts", "dynamic_gate_hidden"):
        kw[name] = int(kw[name])
    for name in ("use_temporal", "use_spatial", "use_joint"):
        kw[name] = bool(kw[name])
    kw["temperature"] = float(kw["temperature"])
    kw["joint_type"] = str(kw["joint_type"])
    return kw


def _read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    ckpt = read_checkpoint(path)
    if ckpt.kind != "reference":
        raise CheckpointError(f"{path}: a platform checkpoint, not an original lstc-gait one (keys model, args); "
                              "resume from it with resume=PATH, or evaluate it directly")
    return ckpt.model_state, dict(ckpt.args or {})


def _load_state(backbone: LSTCBackbone, state: dict[str, Tensor], path: str | os.PathLike) -> None:
    own = backbone.state_dict()
    # DynamicConv3d accepts a few equivalent encodings (bias, 2D gate weights): let it judge those keys.
    tolerant = [k for k in state if ".branch_joint.bias" in k or ".branch_joint.gate." in k]
    # num_batches_tracked is absent from very old checkpoints; BatchNorm fills it in itself.
    missing = sorted(k for k in own if k not in state and ".branch_joint.gate." not in k
                     and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own and k not in tolerant)
    shape_bad = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in state and k not in tolerant and state[k].shape != own[k].shape]
    if missing or unexpected or shape_bad:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shape_bad:
            parts.append(f"shape mismatches {shape_bad}")
        raise CheckpointFormatError(f"{path}: state_dict does not match the architecture in its args: "
                                    + "; ".join(parts))
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointFormatError(f"{path}: {exc}") from exc


def reference_backbone(ckpt: Checkpoint) -> LSTCBackbone:
    """Build the ``LSTCBackbone`` an original checkpoint's ``args`` describe and load its weights.

    Args:
        ckpt: A ``kind == "reference"`` checkpoint from :func:`lstc_gait.engine.checkpoint.read_checkpoint`.

    Returns:
        The backbone in eval mode.

    Raises:
        CheckpointError: The args describe an invalid model, or the weights do not fit it.
    """
    return _build(ckpt.model_state, dict(ckpt.args or {}), ckpt.path)


def load_reference_checkpoint(path: str | os.PathLike) -> LSTCBackbone:
    """Build an ``LSTCBackbone`` from an original checkpoint's ``args`` and load its weights.

    Args:
        path: The original lstc-gait checkpoint (``model`` state dict + ``args``).

    Returns:
        The backbone in eval mode; ``backbone(x, lengths)["embedding"]`` maps float (N, 1, T, 64, 44)
        silhouettes to float (N, D) embeddings.

    Raises:
        CheckpointError: The file is unreadable, not an original checkpoint, or its weights do not fit.
    """
    state, args = _read_checkpoint(path)
    return _build(state, args, path)


def _build(state: dict[str, Tensor], args: dict[str, Any], path: str | os.PathLike) -> LSTCBackbone:
    try:
        backbone = LSTCBackbone(**reference_args_to_kwargs(args))
    except CheckpointFormatError:
        raise
    except (ValueError, TypeError) as exc:
        raise CheckpointFormatError(f"{path}: 'args' describe an invalid model: {exc}") from exc
    _load_state(backbone, state, path)
    return backbone.eval()


def load_reference_weights(model: GaitModel, path: str | os.PathLike) -> None:
    """Warm-start ``model.backbone`` from an original checkpoint (the classifier is not imported).

    The architecture flags in the checkpoint's ``args`` must match the model's; pooling settings may differ.
    """
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, LSTCBackbone):
        raise TypeError(f"load_reference_weights expects a GaitModel or LSTCBackbone, got {type(model).__name__}")
    state, args = _read_checkpoint(path)
    want = reference_args_to_kwargs(args)
    have = backbone.config
    diffs = [f"{k}: checkpoint {want[k]!r} vs model {have[k]!r}" for k in ARCHITECTURE_KEYS
             if _norm(want[k]) != _norm(have[k])]
    if diffs:
        raise CheckpointFormatError(f"{path}: architecture of the checkpoint does not match the model: "
                                    + "; ".join(diffs))
    _load_state(backbone, state, path)


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    return value
