"""Learning-rate schedule: linear warmup, then cosine / step / no decay, stepped once per iteration."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

DECAYS = ("cosine", "step", "none")


class WarmupCosine:
    """lr factor at step s: warmup_start -> 1 linearly over warmup_steps, then the decay.

    ``cosine``: 1 -> min_lr_ratio at total_steps; ``step``: x step_factor at each fraction
    ``step_at`` of total_steps (GaitSet-style: 0.1 at 80 %); ``none``: constant. A class, not a
    closure, so LambdaLR's state_dict can save it; ``total_steps`` may be re-planned
    (``trainer.max_minutes``) before or during training.

    Args:
        total_steps: planned steps (>= 1).
        warmup_steps: linear warmup steps.
        warmup_start: factor at step 0.
        min_lr_ratio: the cosine's final factor.
        decay: ``cosine`` | ``step`` | ``none``.
        step_at: fractions of total_steps where a ``step`` decay multiplies by ``step_factor``.
        step_factor: the ``step`` decay's factor.

    Raises:
        ValueError: out-of-range settings.
    """

    def __init__(self, total_steps: int, warmup_steps: int, warmup_start: float = 0.01,
                 min_lr_ratio: float = 0.01, decay: str = "cosine", step_at: tuple[float, ...] = (0.8,),
                 step_factor: float = 0.1) -> None:
        if decay not in DECAYS:
            raise ValueError(f"trainer.scheduler.decay must be one of {DECAYS}, got {decay!r}")
        self.decay = decay
        self.step_at = tuple(float(f) for f in step_at)
        self.step_factor = float(step_factor)
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
        decay = getattr(self, "decay", "cosine")  # schedules saved before decay existed
        if decay == "none":
            return 1.0
        if decay == "step":
            return self.step_factor ** sum(step >= f * self.total_steps for f in self.step_at)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  warmup_start: float = 0.01, min_lr_ratio: float = 0.01, decay: str = "cosine",
                  step_at: tuple[float, ...] = (0.8,), step_factor: float = 0.1) -> LambdaLR:
    """The Hydra ``_target_`` of ``trainer.scheduler`` (``_partial_``: the trainer passes the rest).

    Args:
        optimizer: the optimizer.
        total_steps: planned steps.
        warmup_steps: linear warmup steps.
        warmup_start: factor at step 0.
        min_lr_ratio: the cosine's final factor.
        decay: ``cosine`` | ``step`` | ``none`` (see :class:`WarmupCosine`).
        step_at: fractions of total_steps for the ``step`` decay.
        step_factor: the ``step`` decay's factor.

    Returns:
        A per-step ``LambdaLR``.
    """
    return LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, warmup_start, min_lr_ratio, decay,
                                            tuple(step_at), step_factor))


def replan_total_steps(scheduler: torch.optim.lr_scheduler.LRScheduler, total_steps: int) -> bool:
    """Set the planned length of a :class:`WarmupCosine` schedule; False for other schedulers.

    Args:
        scheduler: the trainer's scheduler.
        total_steps: the new plan (>= 1).

    Returns:
        Whether the schedule was re-planned.
    """
    changed = False
    for fn in getattr(scheduler, "lr_lambdas", ()):
        if isinstance(fn, WarmupCosine):
            fn.total_steps = max(1, int(total_steps))
            fn.warmup_steps = min(fn.warmup_steps, fn.total_steps)
            changed = True
    return changed


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices/kernels only; biases and norm parameters (1-D) are not decayed."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
