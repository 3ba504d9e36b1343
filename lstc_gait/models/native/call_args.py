"""What every ctypes call into the C kernels needs: pointers, a thread count, kernel layouts."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch
from torch import Tensor


def pointer(t: Tensor | None, offset: int = 0) -> ctypes.c_void_p | None:
    """Raw data pointer (``offset`` elements in), None for None; the caller keeps ``t`` referenced
    until the C call returns."""
    return None if t is None else ctypes.c_void_p(t.data_ptr() + offset * t.element_size())


def thread_count(work_items: int) -> int:
    """torch's intra-op thread count, but no more threads than independent work items."""
    return max(1, min(torch.get_num_threads(), work_items))


def channels_last_kernel(weight: Tensor) -> Tensor:
    """``(C, 1, kT, kH, kW) -> (kT, kH, kW, C)`` contiguous (channels innermost, like the data)."""
    return weight[:, 0].permute(1, 2, 3, 0).contiguous()


def kernel_gradient(run: Callable[[ctypes.c_void_p, ctypes.c_void_p, int], None], weight: Tensor,
                    threads: int) -> Tensor:
    """Gradient of a ``(C, 1, kT, kH, kW)`` kernel from a C reduction writing one float64 partial
    per thread: ``run(accumulators, scratch, threads)`` fills ``(threads, kT*kH*kW*C)``."""
    c, (k_t, k_h, k_w) = weight.shape[0], weight.shape[2:]
    size = k_t * k_h * k_w * c
    acc = torch.zeros(threads, size, dtype=torch.float64)
    scratch = torch.empty(threads, size, dtype=torch.float32)
    run(pointer(acc), pointer(scratch), threads)
    return acc.sum(0).view(k_t, k_h, k_w, c).permute(3, 0, 1, 2).unsqueeze(1).to(weight.dtype)
