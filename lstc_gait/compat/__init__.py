"""Importers for other projects' checkpoints (the original lstc-gait)."""

from .reference import (
    CheckpointFormatError,
    load_reference_checkpoint,
    load_reference_weights,
    reference_args_to_kwargs,
    reference_backbone,
)

__all__ = ["CheckpointFormatError", "load_reference_checkpoint", "load_reference_weights",
           "reference_args_to_kwargs", "reference_backbone"]
