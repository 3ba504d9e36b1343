"""Runtime settings of a process: mixed precision, seeding, RNG state, allocator, and the process-wide
switches (:func:`configure_process`), which only entry points call."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import random
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def amp_dtype(enabled: bool, dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None when AMP is off: auto = bf16 on CPU, fp16 on CUDA."""
    if not enabled:
        return None
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cpu" else torch.float16
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

    Sets ``torch.use_deterministic_algorithms`` (and cuDNN's switches), splits the CPU's cores among
    the DDP processes of one machine (``torch.set_num_threads``), and on the CPU keeps freed memory
    in the process (:func:`keep_freed_memory`). Library code never calls these.

    Args:
        device: The process's device.
        deterministic: Deterministic kernels (bitwise-reproducible resume on CUDA).
        world_size: Processes sharing this machine's cores (1 without DDP).
    """
    set_deterministic(bool(deterministic))
    if device.type == "cpu":
        keep_freed_memory()
        if world_size > 1:
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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameter numbers
_allocator_tuned = False


def keep_freed_memory(mmap_threshold: int = 1 << 30) -> bool:
    """Make glibc malloc keep freed memory in the process instead of returning it to the kernel.

    By default glibc serves blocks of more than 32 MB (batch-16 activations are 40-130 MB) with a
    fresh ``mmap`` and unmaps them on free, so every such tensor is page-faulted in again, and it
    trims the heap top: on the project's 2-core VM that made an LSTC training step 1.7x slower
    (1.6 s vs 0.91 s, docs/performance.md). This raises the mmap threshold and disables trimming,
    so the process's resident memory stays at its peak, like PyTorch's CUDA caching allocator.
    Process-wide and idempotent; a no-op (False) off glibc or with LSTC_GAIT_KEEP_FREED_MEMORY=0.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if os.environ.get("LSTC_GAIT_KEEP_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, (1 << 62)))
    except (OSError, AttributeError):
        return False
    _allocator_tuned = ok
    return ok
