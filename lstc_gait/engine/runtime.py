"""Runtime settings of a process: mixed precision, seeding, RNG state, and the process-wide
switches (:func:`configure_process`), which only entry points call.

The memory allocator is the launcher's choice, not the package's: nothing here changes allocator
settings. See docs/performance.md ("Allocator") for glibc's ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` or jemalloc/tcmalloc through ``LD_PRELOAD``.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def amp_dtype(enabled: bool, dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``trainer.amp`` / ``trainer.amp_dtype``.

    ``auto`` picks fp16 on CUDA, and on CPU bf16 only where the CPU computes bf16 natively
    (oneDNN reports bf16 support and the CPU has AVX512-BF16/AMX-BF16, or ARM bf16:
    :func:`lstc_gait.models.fastops.cpu_bf16_supported`); elsewhere bf16 is emulated and slower
    than fp32, so ``auto`` means fp32 (None) there.

    Args:
        enabled: ``trainer.amp``.
        dtype: ``auto``, ``bf16`` or ``fp16``.
        device: The training device.

    Returns:
        ``torch.bfloat16``, ``torch.float16``, or None for fp32 (AMP off).

    Raises:
        ValueError: For fp16 on CPU or an unknown dtype name.
    """
    if not enabled:
        return None
    if dtype == "auto":
        if device.type == "cpu":
            from lstc_gait.models.fastops import cpu_bf16_supported

            return torch.bfloat16 if cpu_bf16_supported() else None
        return torch.float16
    if dtype == "fp16":
        if device.type == "cpu":
            raise ValueError("trainer.amp_dtype=fp16 needs CUDA; on CPU use bf16 (or auto)")
        return torch.float16
    if dtype == "bf16":
        return torch.bfloat16
    raise ValueError(f"trainer.amp_dtype={dtype!r} is not one of: auto, bf16, fp16")


def autocast_factory(device: torch.device, dtype: torch.dtype | None) -> Callable[[], Any]:
    """A zero-argument context factory: autocast in ``dtype`` or a no-op."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A grad scaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def configure_process(device: torch.device, deterministic: bool = False, world_size: int = 1) -> None:
    """Apply the process-wide settings of a training or inference process (entry points only).

    Sets ``torch.use_deterministic_algorithms`` (and cuDNN's switches) and splits the CPU's cores
    among the DDP processes of one machine (``torch.set_num_threads``). Library code never calls
    these. The allocator is left alone: it is a launcher setting (docs/performance.md, "Allocator").

    Args:
        device: The process's device.
        deterministic: Deterministic kernels (bitwise-reproducible resume on CUDA).
        world_size: Processes sharing this machine's cores (1 without DDP).
    """
    set_deterministic(bool(deterministic))
    if device.type == "cpu" and world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators.

    Args:
        seed: The seed (NumPy takes it modulo 2**32).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Switch deterministic kernels on or off for the whole process (see :func:`configure_process`).

    Args:
        enabled: Deterministic kernels (bitwise-reproducible resume on CUDA); CPU kernels already are.
    """
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.deterministic = enabled
        torch.backends.cudnn.benchmark = not enabled


def rng_state() -> dict[str, Any]:
    """The global generators' states (Python, NumPy, torch, CUDA when available), for checkpoints.

    Returns:
        ``{"python", "numpy", "torch"[, "cuda"]}``.
    """
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states (CUDA ones only when the GPU count still fits).

    Args:
        state: As returned by :func:`rng_state`.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):  # another GPU count: the CUDA streams are re-seeded instead
            torch.cuda.set_rng_state_all(state["cuda"])


def to_model_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, T, H, W) silhouettes -> float (N, 1, T, H, W) in [0, 1], converted on the device."""
    return x.to(device, non_blocking=True)[:, None].float().div_(255)
