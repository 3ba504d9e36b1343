"""Process-group helpers: torchrun detection, spawning, global BatchNorm on CPU, gathers."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly one-process) DDP job.

    Attributes:
        rank: Global rank.
        world_size: Processes in the job.
        local_rank: Rank within this machine (its GPU index).
    """
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (which writes files and tracks)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def torchrun_env() -> DistInfo | None:
    """The rank layout set by torchrun (RANK, WORLD_SIZE, LOCAL_RANK), or None outside torchrun."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                        int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    return None


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a spawned process group.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_backend(device: torch.device, backend: str = "auto") -> str:
    """The process-group backend for a device.

    Args:
        device: The training device.
        backend: ``auto`` (nccl on CUDA, gloo on CPU) or a backend name.

    Returns:
        The backend name.
    """
    if backend != "auto":
        return backend
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(info: DistInfo, backend: str, init_method: str | None = None) -> None:
    """Join the process group (env:// under torchrun, tcp://127.0.0.1:PORT when spawned)."""
    if dist.is_initialized():
        return
    dist.init_process_group(backend=backend, init_method=init_method or "env://",
                            rank=info.rank, world_size=info.world_size)


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], nprocs: int, args: tuple = ()) -> None:
    """Start ``nprocs`` processes running ``fn(rank, *args)`` and wait for all of them."""
    import torch.multiprocessing as mp

    mp.spawn(fn, args=args, nprocs=nprocs, join=True)


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank.

    Args:
        obj: A picklable object.
        src: The sending rank.

    Returns:
        The object (``obj`` itself outside a process group).
    """
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order.

    Args:
        obj: A picklable object.

    Returns:
        One entry per rank (``[obj]`` outside a process group).
    """
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the global batch of all ranks (any input rank).

    torch's SyncBatchNorm only runs on GPU; this one all-reduces the per-channel sum, sum of
    squares and count with the differentiable ``torch.distributed.nn.all_reduce`` (gloo works), so
    forward and backward equal one process running BatchNorm on the concatenated batch."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch-normalise ``x`` with statistics over all ranks' batches while training.

        Args:
            x: float (N, C, ...) input.

        Returns:
            Same shape and dtype.
        """
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        with warnings.catch_warnings():  # a deprecated name in 2.x, but still the differentiable all-reduce
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp_min(1)), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """SyncBatchNorm on CUDA; GlobalBatchNorm (same maths, gloo-friendly) on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out
