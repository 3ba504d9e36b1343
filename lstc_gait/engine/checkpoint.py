"""Checkpoints: the one reader (platform and original lstc-gait files), atomic writes, resume lookup,
and the one function that turns a stored config into a model.

A platform checkpoint is one ``torch.save`` dict: ``model``, ``optimizer``, ``scheduler``, ``ema``,
``scaler``, ``sampler`` (epoch and batch index), ``rng``, ``step``, ``config`` (the resolved run
config as a plain dict), ``metrics``, ``best``, ``num_classes``, ``format`` (``lstc_gait.train/1``)
and, since format version 2, ``format_version``. Files without ``format_version`` are version 1
(written before the architecture pass) and load unchanged. An original lstc-gait checkpoint is a dict
with ``model`` (backbone state dict) and ``args`` (its training flags); see :mod:`lstc_gait.compat`.

State-dict keys lose the ``module.`` (DataParallel / DDP) and ``_orig_mod.`` (``torch.compile``)
prefixes, however deeply nested, in both kinds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lstc_gait.errors import UserError
from lstc_gait.utils.fileio import atomic_output

CHECKPOINT_FORMAT = "lstc_gait.train/1"  # the platform's tag, unchanged since the first version
FORMAT_VERSION = 2  # 1: no format_version key (before the architecture pass); 2: model.variant, versioned
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# The model settings a version-1 checkpoint means when its stored config lacks a key. A key added to
# the model config later must be listed here with the value that reproduces the old behaviour, so that
# old checkpoints never silently pick up a new default. ``joint_type`` is absent on purpose: a missing
# one means the variant's own (``lstc`` for configs without a variant).
LEGACY_MODEL_DEFAULTS: dict[str, Any] = {
    "in_channels": 1, "base_channels": 8, "num_stripes": 8, "embedding_dim": 256,
    "kernels": ((3, 7, 3), (3, 5, 3), (3, 3, 3)), "use_temporal": True, "use_spatial": True,
    "use_joint": True, "branch_width": "half_split", "min_branch_width": 8, "dynamic_experts": 4,
    "dynamic_gate_hidden": 0, "dynamic_temperature": 1.0, "pooling": "hard", "topk": 2, "temperature": 1.0,
    # LSTP pooled a stripe's pixels by their mean before the mean + max option existed
    "spatial_pooling": "mean",
    # part heads came later: a stored config without them is the original single-vector head
    "head": "single", "bnneck": True,
    # and so did the model-input resize: a stored config without it fed the frames as they are
    "input_size": None,
}


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: missing, unreadable, of an unknown kind, or of another model."""


def strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the wrapper prefixes ``module.`` and ``_orig_mod.`` (nested in any order) from keys.

    Args:
        state: A state dict, possibly saved from ``DataParallel``/``DistributedDataParallel`` and/or a
            ``torch.compile`` module (``module._orig_mod.backbone...``).

    Returns:
        A new dict with the same values and the bare keys.
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        key = str(key)
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    return out


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _state_dict_of(obj: Any) -> dict[str, torch.Tensor] | None:
    """A state dict from a model/EMA entry: a plain state dict, or a dict wrapping one."""
    if _is_state_dict(obj):
        return strip_prefixes(obj)
    if isinstance(obj, Mapping):
        for key in ("module", "state_dict", "shadow", "model", "averaged", "params"):
            if _is_state_dict(obj.get(key)):
                return strip_prefixes(obj[key])
    return None


def _plain_config(cfg: Any) -> dict[str, Any] | None:
    if cfg is None:
        return None
    from omegaconf import OmegaConf

    if isinstance(cfg, Mapping):
        return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, str):
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)  # type: ignore[return-value]
    return None


@dataclass
class Checkpoint:
    """A checkpoint file as read by :func:`read_checkpoint`, with prefix-free state dicts.

    Attributes:
        path: The file.
        kind: ``"platform"`` (this project's) or ``"reference"`` (the original lstc-gait project's).
        format_version: Platform format version (1 when the file predates versioning); 0 for reference.
        state: The whole checkpoint dict; its ``model`` (and ``ema["module"]``) entries are the
            prefix-free state dicts below, so a trainer can resume from it directly.
        model_state: The raw model weights, tensor name -> tensor.
        ema_state: The EMA weights (platform checkpoints trained with EMA), else None.
        config: The resolved training config (platform), else None.
        args: The original training flags (reference), else None.
        num_classes: Classifier width (0 when the model has no classifier or it is unknown).
    """

    path: Path
    kind: str
    format_version: int
    state: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None = None
    config: dict[str, Any] | None = None
    args: dict[str, Any] | None = None
    num_classes: int = 0

    @property
    def is_training_state(self) -> bool:
        """Whether the file holds a full training state (optimizer, sampler, RNG) a run can resume from."""
        return self.kind == "platform" and self.state.get("format") == CHECKPOINT_FORMAT

    def weights(self, use_ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
        """The weights to run: EMA when present and wanted, else the raw model weights.

        Args:
            use_ema: Prefer the EMA weights.

        Returns:
            (state dict, ``"ema"`` | ``"model"`` | ``"reference"``).
        """
        if self.kind == "reference":
            return self.model_state, "reference"
        if use_ema and self.ema_state is not None:
            return self.ema_state, "ema"
        return self.model_state, "model"


def _num_classes(ckpt: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> int:
    if ckpt.get("num_classes") is not None:
        return int(ckpt["num_classes"])
    heads = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2
             and any(t in k for t in ("classifier", "logits", "cls"))]
    return int(heads[0].shape[0]) if heads else 0


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a platform checkpoint or an original lstc-gait checkpoint.

    Args:
        path: The ``.pt`` file.
        map_location: Where tensors are loaded (``torch.load``'s argument).

    Returns:
        The checkpoint with prefix-free state dicts.

    Raises:
        CheckpointError: The file is missing, unreadable, or neither kind (the message lists its keys).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    try:
        raw = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as exc:  # pickle errors, truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {str(p)!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{str(p)!r} holds a {type(raw).__name__}, not a checkpoint dict")
    raw = dict(raw)
    if isinstance(raw.get("args"), Mapping) and "model" in raw and "config" not in raw and "cfg" not in raw:
        state = _state_dict_of(raw["model"])
        if state is None:
            raise CheckpointError(f"{str(p)!r}: 'model' must be a state_dict (a dict of tensors)")
        raw["model"] = state
        return Checkpoint(p, "reference", 0, raw, state, args=dict(raw["args"]),
                          num_classes=int(raw.get("num_classes") or 0))
    if "model" not in raw or not (raw.get("config") or raw.get("cfg") or raw.get("format") == CHECKPOINT_FORMAT):
        keys = ", ".join(map(str, raw)) or "nothing"
        raise CheckpointError(f"{str(p)!r} is neither a platform checkpoint (keys model, config, ema) nor an "
                              f"original lstc-gait checkpoint (keys model, args); it holds: {keys}")
    model_state = _state_dict_of(raw["model"])
    if model_state is None:
        raise CheckpointError(f"checkpoint {str(p)!r}: `model` is not a state dict")
    raw["model"] = model_state
    ema_state = _state_dict_of(raw.get("ema")) if raw.get("ema") is not None else None
    if ema_state is not None and isinstance(raw["ema"], Mapping) and "module" in raw["ema"]:
        raw["ema"] = {**raw["ema"], "module": ema_state}
    version = int(raw.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(p)!r} has format version {version}; this lstc_gait reads up to "
                              f"{FORMAT_VERSION}: upgrade lstc_gait")
    return Checkpoint(p, "platform", version, raw, model_state, ema_state,
                      _plain_config(raw.get("config") or raw.get("cfg")), None, _num_classes(raw, model_state))


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a platform checkpoint atomically (the umask's file mode), tagged with the current format.

    Args:
        state: The trainer's state dict (see the module docstring).
        path: The ``.pt`` file to write.

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: The folder cannot be written.
    """
    with atomic_output(path) as tmp:
        torch.save({**state, "format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION}, tmp)
    return Path(path)


def resolve_resume(resume: str | None, run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a ``resume=`` setting names.

    Args:
        resume: None/``none``: no resume; ``auto``: ``<run_dir>/checkpoints/last.pt`` when it exists;
            a folder: its ``checkpoints/last.pt`` or ``last.pt``; else a checkpoint file.
        run_dir: The run's folder.

    Returns:
        The checkpoint path, or None when there is nothing to resume.

    Raises:
        CheckpointError: The named file or folder holds no checkpoint.
    """
    if resume in (None, "", "none", "null"):
        return None
    if resume == "auto":
        last = Path(run_dir) / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(str(resume))
    if path.is_dir():
        for cand in (path / "checkpoints" / "last.pt", path / "last.pt"):
            if cand.is_file():
                return cand
        raise CheckpointError(f"resume={resume}: no checkpoints/last.pt in that folder")
    if not path.is_file():
        raise CheckpointError(f"resume={resume}: no such checkpoint file")
    return path


def read_training_state(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint to resume a run from.

    Args:
        path: The checkpoint file.

    Returns:
        The checkpoint (a platform training state).

    Raises:
        CheckpointError: The file is unreadable, or is not a platform training checkpoint (an original
            lstc-gait checkpoint is used with ``init_from=`` instead).
    """
    ckpt = read_checkpoint(path)
    if not ckpt.is_training_state:
        raise CheckpointError(f"{path} is not a lstc_gait training checkpoint (an original lstc-gait "
                              "checkpoint? warm-start from it with init_from=PATH instead of resume)")
    return ckpt


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


MODEL_KEYS = ("model",)


def _canonical_model(node: Any) -> Any:
    """A stored or current ``model`` node in one comparable form: legacy defaults filled in, the
    variant folded into ``joint_type``, tuples as lists, ``_target_`` dropped."""
    if not isinstance(node, Mapping):
        return node
    cfg = {**LEGACY_MODEL_DEFAULTS, **{k: v for k, v in node.items() if k != "_target_"}}
    variant = cfg.pop("variant", None)
    cfg["joint_type"] = cfg.get("joint_type") or variant or "lstc"
    return _lists(cfg)


def _lists(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def check_compatible(saved_config: Mapping[str, Any], config: Mapping[str, Any], path: str | os.PathLike,
                     num_classes: int | None = None, saved_num_classes: int | None = None) -> None:
    """Check that a checkpoint was written for the same model settings as this run.

    Args:
        saved_config: The checkpoint's resolved config.
        config: This run's resolved config.
        path: The checkpoint (for the message).
        num_classes: This run's classifier width, when known.
        saved_num_classes: The checkpoint's classifier width, when known.

    Raises:
        CheckpointError: One line naming every model setting that differs.
    """
    diffs = [f"{key} (checkpoint {old!r}, this run {new!r})" for key, (old, new) in _model_diffs(saved_config, config)]
    if num_classes is not None and saved_num_classes is not None and num_classes != saved_num_classes:
        diffs.append(f"num_classes, the number of training subjects (checkpoint {saved_num_classes}, this run "
                     f"{num_classes})")
    if diffs:
        raise CheckpointError(f"checkpoint {path} was written for another model: {'; '.join(diffs)}; resume with the "
                              "checkpoint's model settings, or start a new run")


def _model_diffs(saved_config: Mapping[str, Any], config: Mapping[str, Any]) -> list[tuple[str, tuple[Any, Any]]]:
    """(key, (checkpoint value, this run's value)) of every model setting that differs (legacy defaults filled)."""
    diffs = []
    for section in MODEL_KEYS:
        old = _flatten(_canonical_model(dict(saved_config.get(section) or {})), section)
        new = _flatten(_canonical_model(dict(config.get(section) or {})), section)
        for key in sorted(set(old) | set(new)):
            if old.get(key, "<missing>") != new.get(key, "<missing>"):
                diffs.append((key, (old.get(key, "<missing>"), new.get(key, "<missing>"))))
    return diffs


# Keys that re-plan the learning-rate schedule from the current step when a resumed run changes them.
SCHEDULE_KEYS = ("trainer.max_steps", "trainer.max_epochs", "trainer.max_minutes", "trainer.optimizer.lr",
                 "trainer.scheduler.warmup_steps", "trainer.scheduler.warmup_start", "trainer.scheduler.min_lr_ratio",
                 "trainer.scheduler.decay", "trainer.scheduler.step_at", "trainer.scheduler.step_factor")
# Keys (and prefixes) a resumed run cannot change: the model's shape and the training data (its subjects,
# hence the classifier), and the optimizer / scheduler kinds whose state the checkpoint holds.
FIXED_ON_RESUME = ("model.", "pooling.", "dataset.", "trainer.shrink_synthetic", "trainer.optimizer._target_",
                   "trainer.scheduler._target_")
# dataset.* keys that only change how clips are cut and tested, not which data is trained on.
FREE_DATASET_KEYS = ("dataset.workers", "dataset.num_frames", "dataset.sampling", "dataset.augment",
                     "dataset.test_max_frames", "dataset.evaluation")
_NOT_COMPARED = ("resume",)


@dataclass
class ResumeChanges:
    """How a resumed run's settings differ from its checkpoint's stored config.

    Attributes:
        changed: Dotted key -> (checkpoint value, this run's value), for every key both configs have
            whose value differs (keys the stored config lacks predate it and are not compared).
        refused: The changed keys that cannot continue (model shape, data, optimizer kind).
        schedule: The changed keys that re-plan the learning-rate schedule (:data:`SCHEDULE_KEYS`).
    """

    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    schedule: list[str] = field(default_factory=list)

    def describe(self, keys: list[str] | None = None) -> str:
        """The changes as one line: ``key: old -> new, ...``.

        Args:
            keys: Only these keys (None: every changed key).

        Returns:
            The text (empty when nothing changed).
        """
        return ", ".join(f"{k}: {_show(self.changed[k][0])} -> {_show(self.changed[k][1])}"
                         for k in (self.changed if keys is None else keys) if k in self.changed)


def _show(value: Any) -> str:
    return "<missing>" if value == "<missing>" else repr(value) if isinstance(value, str) else str(value)


def compare_resume_config(saved_config: Mapping[str, Any], config: Mapping[str, Any]) -> ResumeChanges:
    """Compare a checkpoint's stored config with a resumed run's.

    Args:
        saved_config: The checkpoint's resolved config (plain dict).
        config: This run's resolved config (plain dict).

    Returns:
        The changed keys, which of them cannot continue and which re-plan the schedule.
    """
    old, new = _flatten(_lists(dict(saved_config))), _flatten(_lists(dict(config)))
    changes = ResumeChanges()
    for key in sorted(set(old) & set(new)):
        if key in _NOT_COMPARED or old[key] == new[key]:
            continue
        changes.changed[key] = (old[key], new[key])
    model_keys = dict(_model_diffs(saved_config, config))  # legacy defaults filled in, variant folded
    for key in list(changes.changed):
        if key.startswith("model.") and key not in model_keys:
            del changes.changed[key]  # the same model, spelt differently (e.g. a legacy default)
    for key, values in model_keys.items():
        changes.changed.setdefault(key, values)
    synthetic = any(k.startswith("dataset.synthetic.") for k in new)  # else trainer.shrink_synthetic does nothing
    for key in sorted(changes.changed):
        if key.startswith("trainer.shrink_synthetic") and not synthetic:
            continue
        if key.startswith(FIXED_ON_RESUME) and not key.startswith(FREE_DATASET_KEYS):
            changes.refused.append(key)
        elif key in SCHEDULE_KEYS:
            changes.schedule.append(key)
    changes.changed = dict(sorted(changes.changed.items()))
    return changes


def check_resume_config(saved_config: Mapping[str, Any], config: Mapping[str, Any],
                        path: str | os.PathLike) -> ResumeChanges:
    """Compare a checkpoint's stored config with a resumed run's and refuse changes that cannot continue.

    Args:
        saved_config: The checkpoint's resolved config.
        config: This run's resolved config.
        path: The checkpoint (for the message).

    Returns:
        The changes (see :class:`ResumeChanges`); none of them refused.

    Raises:
        CheckpointError: One line naming every key that cannot change in a resumed run (model shape,
            training data, optimizer or scheduler kind), with both values.
    """
    changes = compare_resume_config(saved_config, config)
    if changes.refused:
        raise CheckpointError(f"cannot resume from {path} with these settings changed: "
                              f"{changes.describe(changes.refused)}; a resumed run keeps the checkpoint's model, "
                              "training data and optimizer (set them back, or start a new run without resume=)")
    return changes


def load_model_state(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """``module.load_state_dict(state)`` with an error listing missing, unexpected and mis-shaped tensors.

    Args:
        module: The model (unwrapped).
        state: A prefix-free state dict.
        path: The checkpoint (for the message).

    Raises:
        CheckpointError: The state does not fit the module.
    """
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
        raise CheckpointError(f"checkpoint {path} does not fit this model: " + "; ".join(lines))
    module.load_state_dict(dict(state))


# ------------------------------------------------------------------------------------- stored config -> model


def model_from_stored_config(model_config: Mapping[str, Any], num_classes: int = 0) -> nn.Module:
    """Build the model a checkpoint's stored ``model`` config describes, never using today's defaults.

    Keys missing from the stored config take :data:`LEGACY_MODEL_DEFAULTS` (the behaviour of the
    version that wrote it), not the current schema or YAML. ``variant`` (format 2) names a registered
    variant; without it (format 1) the joint branch is the stored ``joint_type`` (``lstc`` if absent).

    Args:
        model_config: The stored ``model`` node (``_target_`` is ignored).
        num_classes: Classifier width (0: embedding only).

    Returns:
        The model, in training mode, with freshly initialised weights.

    Raises:
        CheckpointError: The stored settings do not describe a model this version can build.
    """
    from lstc_gait.models.registry import build_model

    kwargs = {**LEGACY_MODEL_DEFAULTS, **{k: v for k, v in dict(model_config).items() if k != "_target_"}}
    variant = str(kwargs.pop("variant", None) or "lstc")
    kwargs["kernels"] = tuple(tuple(int(x) for x in k) for k in kwargs["kernels"])
    try:
        return build_model(variant, int(num_classes), **kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the stored model config cannot be built by this version: {exc}") from exc


@dataclass
class LoadedModel:
    """A model ready for inference and where its weights came from.

    Attributes:
        model: The model in eval mode; ``model(x, lengths)["embedding"]`` maps float (N, 1, T, H, W)
            silhouettes in [0, 1] and int64 (N,) lengths to float (N, D) embeddings.
        kind: ``"platform"`` or ``"reference"``.
        weights: ``"ema"``, ``"model"`` or ``"reference"``.
        path: The checkpoint file.
        config: The resolved training config (platform checkpoints), else None.
        input_size: (height, width) of the silhouettes the model was trained on.
        extra: ``step``/``epoch`` and ``num_classes`` as stored.
    """

    model: nn.Module
    kind: str
    weights: str
    path: str
    config: dict[str, Any] | None = None
    input_size: tuple[int, int] = (64, 44)
    extra: dict[str, Any] = field(default_factory=dict)


def load_model(path: str | os.PathLike, use_ema: bool = True) -> LoadedModel:
    """Build an eval-mode model from any checkpoint (the path of evaluate, extract and export).

    Args:
        path: A platform or original lstc-gait checkpoint.
        use_ema: Prefer the EMA weights of a platform checkpoint.

    Returns:
        The model and its provenance.

    Raises:
        CheckpointError: The file is unusable, or its weights do not fit the model its config describes.
    """
    ckpt = read_checkpoint(path)
    if ckpt.kind == "reference":
        from lstc_gait.compat.reference import reference_backbone

        backbone = reference_backbone(ckpt)
        args = ckpt.args or {}
        size = (int(args.get("height", 64)), int(args.get("width", 44)))
        return LoadedModel(backbone.eval(), "reference", "reference", str(path), None, size,
                           {"epoch": ckpt.state.get("epoch"), "num_classes": ckpt.state.get("num_classes")})
    if ckpt.config is None:
        raise CheckpointError(f"checkpoint {str(path)!r} has no resolved `config`; cannot rebuild its model")
    if not ckpt.config.get("model"):
        raise CheckpointError(f"checkpoint {str(path)!r}: its config has no `model` section")
    state, weights = ckpt.weights(use_ema)
    model = model_from_stored_config(ckpt.config["model"], ckpt.num_classes)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit the model its config describes: {exc}") from exc
    bad = [k for k in missing if "classifier" not in k and "logits" not in k]  # EMA may omit the classifier
    if bad or unexpected:
        raise CheckpointError(f"checkpoint {str(path)!r}: weights do not match the model "
                              f"(missing {bad[:5]}, unexpected {list(unexpected)[:5]})")
    width = int((ckpt.config.get("dataset") or {}).get("width", 44))
    return LoadedModel(model.eval(), "platform", weights, str(path), ckpt.config, (64, width),
                       {"step": ckpt.state.get("step"), "num_classes": ckpt.num_classes})


__all__ = ["CHECKPOINT_FORMAT", "FIXED_ON_RESUME", "FORMAT_VERSION", "LEGACY_MODEL_DEFAULTS", "SCHEDULE_KEYS",
           "Checkpoint", "CheckpointError", "LoadedModel", "ResumeChanges", "check_compatible", "check_resume_config",
           "compare_resume_config", "load_model", "load_model_state", "model_from_stored_config", "read_checkpoint",
           "read_training_state", "resolve_resume", "save_checkpoint", "strip_prefixes"]
