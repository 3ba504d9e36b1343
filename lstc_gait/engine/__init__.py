"""Training engine: the loop (:mod:`.trainer`), checkpoints (:mod:`.checkpoint`), EMA (:mod:`.ema`),
distributed helpers (:mod:`.distributed`), schedules (:mod:`.optim`), runtime settings (:mod:`.runtime`)."""

from .checkpoint import CheckpointError, read_checkpoint, resolve_resume, save_checkpoint
from .distributed import DistInfo, GlobalBatchNorm, convert_sync_batchnorm
from .ema import ModelEMA
from .optim import WarmupCosine, warmup_cosine
from .trainer import FitResult, Trainer, TrainSettings, monitor_value

__all__ = [
    "CheckpointError", "DistInfo", "FitResult", "GlobalBatchNorm", "ModelEMA", "Trainer", "TrainSettings",
    "WarmupCosine", "convert_sync_batchnorm", "read_checkpoint", "monitor_value", "resolve_resume",
    "save_checkpoint", "warmup_cosine",
]
