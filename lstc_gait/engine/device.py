"""Device resolution for every command: ``auto``, ``cpu``, ``cuda``, ``cuda:N``."""

from __future__ import annotations

import torch

from lstc_gait.errors import UserError


class DeviceError(UserError, ValueError):
    """A device that is not a torch device or is not available on this machine."""


def resolve_device(spec: str | None = "auto", local_rank: int = 0) -> torch.device:
    """The torch device a ``device=`` / ``trainer.device=`` setting names.

    Args:
        spec: ``auto`` (or empty/None): CUDA when available, else CPU; ``cuda``: ``cuda:<local_rank>``;
            anything else as ``torch.device`` parses it (``cpu``, ``cuda:1``, ``mps``).
        local_rank: This process's GPU within the node (DDP); used by ``auto`` and ``cuda``.

    Returns:
        The device.

    Raises:
        DeviceError: ``spec`` is not a device, or it names CUDA and CUDA is not available.
    """
    spec = "auto" if spec in (None, "") else str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{int(local_rank)}"
    try:
        dev = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(f"device={spec!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={spec!r} requested but CUDA is not available; use device=cpu or auto")
    return dev


__all__ = ["DeviceError", "resolve_device"]
