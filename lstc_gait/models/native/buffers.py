"""Reusable buffers for the C kernels' full-size outputs (a small caching allocator).

At batch 16 an activation or its gradient is 40-130 MB. glibc serves such blocks with a fresh
``mmap`` and unmaps them on free, so every training step page-faults each one in again: on the
project's 2-core VM that was about a third of a training step. The kernels' outputs instead come
from numpy arrays kept in a free list: a tensor made with ``torch.from_numpy`` holds a reference
to its array, so an array whose only references are the pool's own is free to hand out again
(the reference count says when autograd, views or the caller have let go of it). Memory stays
at the peak the model needed, like PyTorch's CUDA caching allocator, up to a cap
(``LSTC_GAIT_BUFFER_POOL_MB``, default 4096; free buffers of other sizes are dropped first);
:func:`release_buffers` returns it and ``LSTC_GAIT_BUFFER_POOL=0`` turns pooling off.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import torch
from torch import Tensor

_MIN_BYTES = 4 << 20  # smaller blocks come from glibc's heap anyway
_lock = threading.Lock()
_free_lists: dict[int, list[np.ndarray]] = {}


def _enabled() -> bool:
    return os.environ.get("LSTC_GAIT_BUFFER_POOL", "1").strip().lower() not in ("0", "false", "no", "off")


def _cap_bytes() -> int:
    """Most bytes the pool keeps (``LSTC_GAIT_BUFFER_POOL_MB``, default 4096): shapes change, e.g.
    padded evaluation batches of varying length, and unused sizes must not pile up."""
    try:
        return int(float(os.environ.get("LSTC_GAIT_BUFFER_POOL_MB", "4096")) * 2 ** 20)
    except ValueError:
        return 4096 * 2 ** 20


def _is_free(arrays: list[np.ndarray], i: int) -> bool:
    # references: the list's and getrefcount's argument; a live tensor (or view) adds one
    return sys.getrefcount(arrays[i]) == 2


def _evict(need: int) -> None:
    """Drop free buffers, largest first, until ``need`` more bytes fit under the cap."""
    total = sum(4 * numel * len(arrays) for numel, arrays in _free_lists.items())
    for numel in sorted(_free_lists, reverse=True):
        arrays = _free_lists[numel]
        i = 0
        while i < len(arrays) and total + need > _cap_bytes():
            if _is_free(arrays, i):
                arrays.pop(i)
                total -= 4 * numel
            else:
                i += 1


def _take(numel: int) -> np.ndarray | None:
    with _lock:
        arrays = _free_lists.setdefault(numel, [])
        for i in range(len(arrays)):
            if _is_free(arrays, i):
                return arrays[i]
        _evict(4 * numel)
        if sum(4 * n * len(a) for n, a in _free_lists.items()) + 4 * numel > _cap_bytes():
            return None  # everything pooled is in use: this one is not kept
        array = np.empty(numel, dtype=np.float32)
        arrays.append(array)
        return array


def empty_channels_last(shape: tuple[int, int, int, int, int]) -> Tensor:
    """Uninitialised float32 ``(N, C, T, H, W)`` tensor in channels_last_3d memory, pooled when large."""
    n, c, t, h, w = (int(v) for v in shape)
    numel = n * c * t * h * w
    array = _take(numel) if numel * 4 >= _MIN_BYTES and _enabled() else None
    if array is None:
        return torch.empty((n, c, t, h, w), dtype=torch.float32, memory_format=torch.channels_last_3d)
    return torch.from_numpy(array).view(n, t, h, w, c).permute(0, 4, 1, 2, 3)


def release_buffers() -> int:
    """Drop the pooled buffers no tensor uses any more; returns the bytes released."""
    released = 0
    with _lock:
        for numel, arrays in _free_lists.items():
            keep = [a for a in arrays if sys.getrefcount(a) > 3]  # list + loop variable + argument
            released += 4 * numel * (len(arrays) - len(keep))
            arrays[:] = keep
    return released
