"""Exponential moving average of a model's weights, updated every optimizer step."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """A frozen copy of the model whose parameters follow ``ema = d * ema + (1 - d) * model``.

    With ``warmup`` the effective decay is ``min(decay, (1 + n) / (10 + n))`` after n updates, so the
    average is not dominated by the random initial weights in short runs. Buffers (BatchNorm running
    statistics) are copied from the model, not averaged."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"trainer.ema.decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses.

        Returns:
            ``decay``, or ``min(decay, (1 + n) / (10 + n))`` after n updates with warmup.
        """
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s parameters and copy its buffers.

        Args:
            model: The trained model (unwrapped, same structure).

        Raises:
            RuntimeError: The parameter lists differ.
        """
        d = self.current_decay()
        self.updates += 1
        ema_params = [p for p in self.module.parameters() if p.dtype.is_floating_point]
        src_params = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
        if len(ema_params) != len(src_params):
            raise RuntimeError("EMA and model have different parameter lists")
        torch._foreach_lerp_(ema_params, src_params, 1.0 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        """The average for a checkpoint.

        Returns:
            ``{"module": state dict, "updates", "decay"}``.
        """
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s average.

        Args:
            state: From :meth:`state_dict` (prefix-free, as the checkpoint reader gives it).
        """
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
