"""Optional training augmentations on uint8 silhouette clips (T, H, W); all OFF by default.

Every random choice comes from the generator the dataset builds from the sample seed, so an
augmented sample is as reproducible as the frame choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AugmentConfig:
    flip_prob: float = 0.0  # mirror the whole clip left-right
    erase_prob: float = 0.0  # zero one random rectangle in every frame (an occluder)
    erase_max_frac: float = 0.2  # the rectangle's side is at most this share of the frame's side
    dilate_prob: float = 0.0  # grow the silhouette by one pixel (3x3 max): segmentation slack
    frame_dropout: float = 0.0  # each frame replaced by its predecessor with this probability

    def enabled(self) -> bool:
        return any(p > 0 for p in (self.flip_prob, self.erase_prob, self.dilate_prob, self.frame_dropout))

    def __post_init__(self) -> None:
        for name in ("flip_prob", "erase_prob", "dilate_prob", "frame_dropout", "erase_max_frac"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1], got {v}")


def dilate3x3(frames: np.ndarray) -> np.ndarray:
    """Per-frame 3x3 maximum filter (binary dilation on 0/255 silhouettes), zero border."""
    padded = np.pad(frames, ((0, 0), (1, 1), (1, 1)))
    h, w = frames.shape[1:]
    rows = np.maximum(np.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    return np.maximum(np.maximum(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])[:, :h, :w]


def apply_augment(frames: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Augmented copy of ``frames`` (T, H, W) uint8. The same draws happen whatever the outcome,
    so one switch does not change the randomness of the others."""
    out = np.array(frames, dtype=np.uint8, copy=True)
    t, h, w = out.shape
    u = rng.random(7)
    drop = rng.random(t) < cfg.frame_dropout
    if cfg.frame_dropout > 0 and t > 1:
        drop[0] = False
        src = np.maximum.accumulate(np.where(drop, 0, np.arange(t)))  # last kept frame at or before
        out = out[src]
    if u[0] < cfg.dilate_prob:
        out = dilate3x3(out)
    if u[1] < cfg.erase_prob:
        eh = max(1, int(round(h * cfg.erase_max_frac * (0.3 + 0.7 * u[3]))))
        ew = max(1, int(round(w * cfg.erase_max_frac * (0.3 + 0.7 * u[4]))))
        y = int(u[5] * (h - eh + 1))
        x = int(u[6] * (w - ew + 1))
        out[:, y : y + eh, x : x + ew] = 0
    if u[2] < cfg.flip_prob:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)
