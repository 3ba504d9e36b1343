"""Learning-rate schedule: linear warmup, then cosine decay, stepped once per iteration."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """lr factor at step s: warmup_start -> 1 linearly over warmup_steps, then cosine 1 -> min_lr_ratio
    at total_steps (a class, not a closure, so LambdaLR's state_dict can save it)."""

    def __init__(self, total_steps: int, warmup_steps: int, warmup_start: float = 0.01,
                 min_lr_ratio: float = 0.01) -> None:
        if total_steps < 1:
            raise ValueError(f"the schedule needs total_steps >= 1, got {total_steps}")
        if warmup_steps < 0 or not 0.0 <= warmup_start <= 1.0 or not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError("trainer.scheduler: warmup_steps >= 0, warmup_start and min_lr_ratio in [0, 1]")
        self.total_steps = int(total_steps)
        self.warmup_steps = min(int(warmup_steps), self.total_steps)
        self.warmup_start = float(warmup_start)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        """The learning-rate factor at ``step``.

        Args:
            step: Optimizer steps taken.

        Returns:
            Linear warmup from ``warmup_start`` to 1, then cosine down to ``min_lr_ratio``.
        """
        if step < self.warmup_steps:
            return self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  warmup_start: float = 0.01, min_lr_ratio: float = 0.01) -> LambdaLR:
    """The Hydra ``_target_`` of ``trainer.scheduler`` (``_partial_``: the trainer passes the rest)."""
    return LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, warmup_start, min_lr_ratio))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices/kernels only; biases and norm parameters (1-D) are not decayed."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
