"""The training loop: AMP, EMA, gradient clipping, warmup + cosine, checkpoint/resume, DDP, evaluation.

:class:`Trainer` takes built objects (model, loss, optimizer, scheduler, sampler, loader, ...)
and explicit settings; it never reads a global config. ``lstc_gait.pipelines.train`` builds those objects from
the composed Hydra config.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from . import checkpoint as ckpt_io
from .distributed import DistInfo
from .ema import ModelEMA
from .runtime import rng_state, set_rng_state, to_model_input

log = logging.getLogger(__name__)
STEP_LINE = "step %d/%d loss %.4f lr %.2e %.1f seq/s"  # logged every log_every steps


def _log_to_files_only(level: int, msg: str, args: tuple) -> None:
    """Log a line to the root logger's file handlers only (the console shows a progress bar)."""
    if not log.isEnabledFor(level):
        return
    record = log.makeRecord(log.name, level, __file__, 0, msg, args, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


class Tracker(Protocol):
    """What the trainer logs to (``MLflowTracker`` / ``NullTracker``)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics at a step."""
        ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file."""
        ...


class Evaluator(Protocol):
    """The trainer's evaluation hook (:class:`lstc_gait.evaluation.evaluator.TrainingEvaluation`)."""

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        """Evaluate ``model`` at ``step``; returns the metrics (rank 0; {} elsewhere)."""
        ...


@dataclass
class TrainSettings:
    """The loop's budget and intervals (steps), clipping and the monitored metric."""
    max_steps: int
    eval_every: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    grad_clip: float = 5.0
    progress: bool = True
    monitor: str = "auto"
    # Opt-in wall-clock budget in minutes of training (evaluations excluded); 0 = off. The number
    # of steps that fit is measured after ``calibration_steps`` steps and the schedule re-planned
    # for it (capped by ``max_steps`` when that is > 0); training also stops when the budget is spent.
    max_minutes: float = 0.0
    eval_every_minutes: float = 0.0  # evaluate every so many training minutes (0: off)
    calibration_steps: int = 10


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns: final step, losses, last metrics, throughput, checkpoints."""
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss over the log window)
    metrics: dict[str, float] = field(default_factory=dict)  # last evaluation
    best: float | None = None
    seconds: float = 0.0
    sequences_per_second: float = 0.0
    checkpoints: dict[str, Path] = field(default_factory=dict)
    # every evaluation: {"step", "train_minutes", **metrics}
    history: list[dict[str, float]] = field(default_factory=list)
    planned_steps: int = 0  # the steps the schedule was planned for (max_steps, or the max_minutes plan)


def monitor_value(metrics: dict[str, float], monitor: str) -> float | None:
    """The number that picks best.pt: a named metric, or (auto) the mean rank-1 over the probe sets."""
    if not metrics:
        return None
    if monitor != "auto":
        if monitor not in metrics:
            raise KeyError(f"eval.monitor={monitor!r} is not among the test metrics: {', '.join(sorted(metrics))}")
        return float(metrics[monitor])
    sets = [v for k, v in metrics.items() if k.endswith("/rank1") and k.count("/") == 1]
    if sets:
        return float(sum(sets) / len(sets))
    for key in ("rank1", "mAP"):
        if key in metrics:
            return float(metrics[key])
    return None


class Trainer:
    """One training run. ``fit()`` trains to ``settings.max_steps`` (resuming when ``resume_from`` is set)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        sampler: Any,
        loader: Any,
        settings: TrainSettings,
        device: torch.device,
        autocast: Callable[[], Any],
        scaler: torch.amp.GradScaler,
        ema: ModelEMA | None = None,
        dist_info: DistInfo | None = None,
        evaluator: Evaluator | None = None,
        tracker: Tracker | None = None,
        checkpoint_dir: Path | None = None,
        config: dict[str, Any] | None = None,
        num_classes: int = 0,
        step_hook: Callable[[int], None] | None = None,
        compile: bool = False,
    ) -> None:
        self.raw_model = model.module if hasattr(model, "module") else model
        # trainer.compile: the training model (DDP wrapper included) and the evaluated model are
        # compiled; checkpoints and EMA always use the plain module (keys without "_orig_mod.").
        self.compile = bool(compile)
        self.model = torch.compile(model) if self.compile else model  # possibly DDP-wrapped
        self._compiled_eval: dict[int, nn.Module] = {}
        self._compile_logged: set[str] = set()
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.sampler = sampler
        self.loader = loader
        self.settings = settings
        self.device = device
        self.autocast = autocast
        self.scaler = scaler
        self.ema = ema
        self.dist = dist_info or DistInfo()
        self.evaluator = evaluator
        self.tracker = tracker
        self.checkpoint_dir = checkpoint_dir
        self.config = config or {}
        self.num_classes = num_classes
        self.step_hook = step_hook
        self.step = 0
        self.epoch = 0  # sampler position of the next batch: (epoch, index within the epoch)
        self.index = 0
        self.best: float | None = None
        self.last_metrics: dict[str, float] = {}
        self.extra_state: dict[str, Any] = {}
        self.train_seconds = 0.0  # training wall-clock so far (evaluations excluded), kept across resumes
        self.planned_steps = int(settings.max_steps)  # the max_minutes plan once calibrated
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The full training state for a checkpoint (see :mod:`lstc_gait.engine.checkpoint`).

        Returns:
            Model, optimizer, scheduler, EMA, scaler, sampler position, RNG, step, metrics, config.
        """
        return {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict(),
            "sampler": {"epoch": self.epoch, "index": self.index, "seed": getattr(self.sampler, "seed", None)},
            "rng": rng_state(),
            "step": self.step,
            "best": self.best,
            "metrics": dict(self.last_metrics),
            "num_classes": self.num_classes,
            "config": self.config,
            "train_seconds": self.train_seconds,
            "planned_steps": self.planned_steps,
            **self.extra_state,
        }

    def load_state_dict(self, state: dict[str, Any], path: str | Path, replan_schedule: bool = False) -> None:
        """Resume from a checkpoint's state.

        Args:
            state: ``Checkpoint.state`` from :func:`lstc_gait.engine.checkpoint.read_training_state`.
            path: The checkpoint (for messages).
            replan_schedule: Keep this trainer's scheduler (planned for this run's budget, learning rate
                and warmup) and continue it from the checkpoint's step, instead of the checkpoint's
                schedule (which would stay at its minimum after its old end).

        Raises:
            CheckpointError: Another model config, weights that do not fit, or no EMA state when EMA is on.
        """
        ckpt_io.check_compatible(state.get("config") or {}, self.config, path, self.num_classes,
                                 state.get("num_classes"))
        ckpt_io.load_model_state(self.raw_model, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        if replan_schedule:
            self._continue_schedule_at(int(state["step"]))
        else:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise ckpt_io.CheckpointError(f"checkpoint {path} has no EMA state but trainer.ema.enabled=true")
            self.ema.load_state_dict(state["ema"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        sampler_state = state["sampler"]
        saved_seed = sampler_state.get("seed")
        if saved_seed is not None and saved_seed != getattr(self.sampler, "seed", saved_seed):
            log.warning("resuming with seed %s, the checkpoint used %s: batches will differ",
                        getattr(self.sampler, "seed", None), saved_seed)
        self.epoch, self.index = int(sampler_state["epoch"]), int(sampler_state["index"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = state.get("best")
        self.last_metrics = dict(state.get("metrics") or {})
        self.train_seconds = float(state.get("train_seconds") or 0.0)
        if self.settings.max_minutes > 0 and state.get("planned_steps"):
            self.planned_steps = int(state["planned_steps"])  # the schedule continues as planned
            self._replan(self.planned_steps)

    def _continue_schedule_at(self, step: int) -> None:
        """Move this run's freshly planned scheduler to ``step`` and give the optimizer its learning rates.

        The optimizer state just loaded carries the checkpoint's learning rates; the scheduler was built
        for this run's settings (``base_lrs`` = this run's learning rate), so its value at ``step``
        replaces them, and every later ``scheduler.step()`` follows the new plan.
        """
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["initial_lr"] = base
        self.scheduler.last_epoch = step - 1
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()  # last_epoch = step; learning rates = the new plan's at step

    def save(self, name: str) -> Path | None:
        """Write ``<checkpoint_dir>/<name>`` (rank 0 only).

        Args:
            name: File name (``last.pt``, ``best.pt``).

        Returns:
            The path, or None when this rank does not write checkpoints.
        """
        if self.checkpoint_dir is None or not self.dist.is_main:
            return None
        return ckpt_io.save_checkpoint(self.state_dict(), self.checkpoint_dir / name)

    # ------------------------------------------------------------------ loop
    def _batches(self) -> Iterator[Any]:
        """Batches from the sampler position (epoch, index) onwards; the sampler runs across epochs."""
        self.sampler.set_epoch(self.epoch, self.index)
        return iter(self.loader)

    def _advance_position(self) -> None:
        self.index += 1
        if self.index >= self.sampler.num_batches(self.epoch):
            self.epoch += 1
            self.index = 0

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = to_model_input(x, self.device)
        y = y.to(self.device, non_blocking=True)
        with self.autocast():
            out = self.model(x)
            loss, parts = self.loss_fn(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            parts["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.raw_model)
        return loss.detach(), parts

    def _eval_model(self) -> nn.Module:
        module = self.ema.module if self.ema is not None else self.raw_model
        if not self.compile:
            return module
        if id(module) not in self._compiled_eval:
            self._compiled_eval[id(module)] = torch.compile(module)
        return self._compiled_eval[id(module)]

    def _log_compile_time(self, what: str, seconds: float) -> None:
        """Log the first compiled call's time once (trainer.compile: compilation happens there)."""
        if not self.compile or what in self._compile_logged:
            return
        self._compile_logged.add(what)
        log.info("trainer.compile: first %s took %.1f s (compilation included)", what, seconds)
        if self.tracker is not None and self.dist.is_main:
            self.tracker.log_metrics({f"time/compile_{what}_s": seconds}, step=self.step)

    def _replan(self, steps: int) -> None:
        from .optim import replan_total_steps

        self.planned_steps = max(self.step, int(steps), 1)
        if not replan_total_steps(self.scheduler, self.planned_steps):
            log.warning("trainer.max_minutes: the scheduler %s cannot be re-planned; its length stays",
                        type(self.scheduler).__name__)

    def _plan_for_budget(self, calib_steps: int, calib_seconds: float) -> None:
        """Plan the steps that fit the remaining budget at the measured seconds per step."""
        s = self.settings
        per_step = calib_seconds / max(1, calib_steps)
        remaining = s.max_minutes * 60.0 - self.train_seconds
        plan = self.step + max(0, int(remaining / max(per_step, 1e-6)))
        if s.max_steps > 0:
            plan = min(plan, s.max_steps)
        self._replan(plan)
        log.info("trainer.max_minutes=%g: %.3f s/step measured, schedule planned for %d steps", s.max_minutes,
                 per_step, self.planned_steps)

    def evaluate(self) -> dict[str, float]:
        """Evaluate the (EMA) model with the evaluator, keep best.pt and record the history.

        Returns:
            The evaluator's metrics (empty without an evaluator or on non-main ranks).
        """
        if self.evaluator is None:
            return {}
        started = time.perf_counter()
        metrics = self.evaluator(self._eval_model(), self.step)
        self._log_compile_time("evaluation", time.perf_counter() - started)
        self.last_metrics = dict(metrics)
        if metrics:
            self.history.append({"step": float(self.step), "train_minutes": self.train_seconds / 60.0, **metrics})
            if self.tracker is not None and self.dist.is_main:
                self.tracker.log_metrics({"time/train_minutes": self.train_seconds / 60.0}, step=self.step)
        if self.dist.is_main:
            value = monitor_value(metrics, self.settings.monitor)
            if value is not None and (self.best is None or value > self.best):
                self.best = value
                self.save("best.pt")
        return metrics

    def _reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.dist.enabled:
            import torch.distributed as dist

            t = t.clone()
            dist.all_reduce(t)
            t /= self.dist.world_size
        return t

    def _budget_left(self) -> bool:
        s = self.settings
        # Under DDP the ranks' clocks could disagree on the last step: they follow the (broadcast) plan only.
        return s.max_minutes <= 0 or self.dist.enabled or self.train_seconds < s.max_minutes * 60.0

    def fit(self) -> FitResult:
        """Train to the planned steps (``max_steps``, or the ``max_minutes`` plan), then evaluate.

        Returns:
            The :class:`FitResult` (final metrics, losses, evaluation history, timing).
        """
        s = self.settings
        budget = s.max_minutes > 0
        if not budget:
            self.planned_steps = s.max_steps
        elif self.planned_steps <= 0:
            self.planned_steps = s.max_steps if s.max_steps > 0 else 10 ** 9
        result = FitResult(step=self.step)
        if self.step >= self.planned_steps or not self._budget_left():
            log.info("nothing to train: the checkpoint is at step %d of %d", self.step, self.planned_steps)
        bar = None
        if s.progress and self.dist.is_main and self.step < self.planned_steps:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.planned_steps if self.planned_steps < 10 ** 9 else None, initial=self.step,
                       desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)
        self.model.train()
        window_loss = torch.zeros((), device=self.device)
        window_parts: dict[str, torch.Tensor] = {}
        window_steps = 0
        window_start = time.perf_counter()
        t0 = time.perf_counter()
        seen = 0
        # max_minutes: calibrate the step time over steps 3..calibration_steps of this process (the
        # first ones pay for allocation and the loader start), then re-plan at 20 % and 50 % of the plan.
        calib_from, calib_clock = self.step + 2, 0.0
        replan_at = [self.step + max(3, s.calibration_steps)] if budget else []
        batches = self._batches() if self.step < self.planned_steps else iter(())
        local_bs = getattr(self.sampler, "local_batch_size", 0)
        next_eval = (math.floor(self.train_seconds / 60.0 / s.eval_every_minutes) + 1) * s.eval_every_minutes \
            if s.eval_every_minutes > 0 else math.inf
        try:
            while self.step < self.planned_steps and self._budget_left():
                step_start = time.perf_counter()
                x, y = next(batches)
                step_started = time.perf_counter()
                loss, parts = self._train_step(x, y)
                self._log_compile_time("train_step", time.perf_counter() - step_started)
                self.step += 1
                self._advance_position()
                seen += x.shape[0] * self.dist.world_size
                window_loss += loss
                for k, v in parts.items():
                    window_parts[k] = window_parts.get(k, 0.0) + v.detach().float()
                window_steps += 1
                if bar is not None:
                    bar.update(1)
                if budget:
                    if self.step == calib_from:
                        calib_clock = time.perf_counter()
                    if replan_at and self.step >= replan_at[0]:
                        # every rank plans from rank 0's clock: the same number of steps everywhere
                        measured = (time.perf_counter() - calib_clock, self.step - calib_from)
                        if self.dist.enabled:
                            from .distributed import broadcast_object

                            measured = broadcast_object(measured)
                        self._plan_for_budget(measured[1], measured[0])
                        replan_at.pop(0)
                        if len(replan_at) == 0 and self.step < 0.2 * self.planned_steps:
                            replan_at = [int(0.2 * self.planned_steps), int(0.5 * self.planned_steps)]
                        if bar is not None:
                            bar.total = self.planned_steps
                            bar.refresh()
                if self.step % s.log_every == 0 or self.step == self.planned_steps:
                    stacked = torch.stack([window_loss, *[window_parts[k] for k in sorted(window_parts)]])
                    values = (self._reduce_mean(stacked) / window_steps).tolist()
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    rate = window_steps * (local_bs or x.shape[0]) * self.dist.world_size / elapsed
                    mean_loss = values[0]
                    if not math.isfinite(mean_loss):
                        raise FloatingPointError(f"training loss is {mean_loss} at step {self.step}; lower "
                                                 "trainer.optimizer.lr or check the data")
                    lr = self.scheduler.get_last_lr()[0]
                    result.losses.append((self.step, mean_loss))
                    if self.dist.is_main:
                        metrics = {"train/loss": mean_loss, "train/lr": lr, "train/seq_per_s": rate}
                        for k, v in zip(sorted(window_parts), values[1:]):
                            metrics[f"train/{k}"] = v
                        if self.tracker is not None:
                            self.tracker.log_metrics(metrics, step=self.step)
                        args = (self.step, self.planned_steps, mean_loss, lr, rate)
                        if bar is not None:  # the bar shows it; the log files (train.log) still get the line
                            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", seq_s=f"{rate:.1f}")
                            _log_to_files_only(logging.INFO, STEP_LINE, args)
                        else:
                            log.info(STEP_LINE, *args)
                    window_loss = torch.zeros((), device=self.device)
                    window_parts = {}
                    window_steps = 0
                    window_start = time.perf_counter()
                self.train_seconds += time.perf_counter() - step_start
                last = self.step >= self.planned_steps or not self._budget_left()
                due = (s.eval_every > 0 and self.step % s.eval_every == 0) or self.train_seconds / 60.0 >= next_eval
                if due and not last:
                    while self.train_seconds / 60.0 >= next_eval:
                        next_eval += s.eval_every_minutes
                    pause = time.perf_counter()
                    self.evaluate()
                    self.model.train()
                    window_start += time.perf_counter() - pause
                    if budget:
                        calib_clock += time.perf_counter() - pause
                if s.checkpoint_every > 0 and self.step % s.checkpoint_every == 0 and not last:
                    path = self.save("last.pt")  # after the evaluation: a resume does not redo it
                    if path is not None:
                        result.checkpoints["last"] = path
                if self.step_hook is not None:
                    self.step_hook(self.step)
        finally:
            if bar is not None:
                bar.close()
            del batches  # shuts DataLoader workers down
        result.seconds = time.perf_counter() - t0
        result.sequences_per_second = seen / result.seconds if result.seconds > 0 and seen else 0.0
        metrics = self.evaluate() if self.evaluator is not None else {}
        path = self.save("last.pt")
        if path is not None:
            result.checkpoints["last"] = path
            best = path.parent / "best.pt"
            if best.is_file():
                result.checkpoints["best"] = best
        result.step = self.step
        result.metrics = metrics
        result.best = self.best
        result.history = list(self.history)
        result.planned_steps = self.planned_steps
        return result
