"""Optional training augmentations on uint8 silhouette clips (T, H, W); all OFF by default.

Every random choice comes from the generator the dataset builds from the sample seed, so an
augmented sample is as reproducible as the frame choice.

A horizontal flip is NOT a free augmentation for gait: it reverses the walking direction, which
is a change of view (a 36-degree walker becomes a 144-degree one), so it teaches the model that
two different views look alike. ``flip_prob`` is kept for experiments and warns when set.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class AugmentConfig:
    """Training-clip augmentations (probabilities per clip; the same transform for all its frames).

    Attributes:
        flip_prob: mirror the clip left-right. Warns: a flip is a change of view, not an augmentation.
        erase_prob: zero one random rectangle in every frame (an occluder; random erasing, Zhong et al. 2020).
        erase_max_frac: the rectangle's side is at most this share of the frame's side.
        dilate_prob: grow the silhouette by one pixel (3x3 max): segmentation slack.
        erode_prob: shrink the silhouette by one pixel (3x3 min): segmentation that eats the edge.
        affine_prob: a small affine jitter: shift by up to ``affine_shift`` pixels and scale by up to
            ``1 +- affine_scale`` about the frame centre (nearest neighbour).
        affine_shift: the largest shift, pixels.
        affine_scale: the largest relative scale change.
        frame_dropout: each frame replaced by its predecessor with this probability.

    Raises:
        ValueError: a probability, ``erase_max_frac`` or ``affine_scale`` outside [0, 1], or a
            negative ``affine_shift``.

    Warns:
        UserWarning: ``flip_prob > 0`` (a flip changes the view).
    """

    flip_prob: float = 0.0
    erase_prob: float = 0.0
    erase_max_frac: float = 0.2
    dilate_prob: float = 0.0
    erode_prob: float = 0.0
    affine_prob: float = 0.0
    affine_shift: float = 2.0
    affine_scale: float = 0.05
    frame_dropout: float = 0.0

    def enabled(self) -> bool:
        """Whether any augmentation can fire.

        Returns:
            True when any of the probabilities (flip, erase, dilate, erode, affine, frame dropout)
            is above 0.
        """
        return any(p > 0 for p in (self.flip_prob, self.erase_prob, self.dilate_prob, self.erode_prob,
                                   self.affine_prob, self.frame_dropout))

    def __post_init__(self) -> None:
        for name in ("flip_prob", "erase_prob", "dilate_prob", "erode_prob", "affine_prob", "frame_dropout",
                     "erase_max_frac", "affine_scale"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1], got {v}")
        if self.affine_shift < 0:
            raise ValueError(f"augment.affine_shift must be >= 0, got {self.affine_shift}")
        if self.flip_prob > 0:
            warnings.warn("dataset.augment.flip_prob > 0: a horizontal flip reverses the walking direction, "
                          "which is a change of view (e.g. 36 -> 144 degrees), not a label-preserving "
                          "augmentation for cross-view gait recognition", UserWarning, stacklevel=2)


def dilate3x3(frames: np.ndarray) -> np.ndarray:
    """Per-frame 3x3 maximum filter (binary dilation on 0/255 silhouettes), zero border.

    Args:
        frames: (T, H, W) array, uint8 0/255 silhouettes (any numeric dtype works).

    Returns:
        (T, H, W), ``frames``' dtype: each pixel the maximum of its 3x3 neighbourhood.
    """
    padded = np.pad(frames, ((0, 0), (1, 1), (1, 1)))
    h, w = frames.shape[1:]
    rows = np.maximum(np.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    return np.maximum(np.maximum(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])[:, :h, :w]


def erode3x3(frames: np.ndarray) -> np.ndarray:
    """Per-frame 3x3 minimum filter (binary erosion on 0/255 silhouettes), zero border.

    Args:
        frames: (T, H, W) array, uint8 0/255 silhouettes (a signed dtype works too).

    Returns:
        (T, H, W), ``frames``' dtype: each pixel the minimum of its 3x3 neighbourhood (outside
        the frame counts as 0, so the border erodes).
    """
    return 255 - dilate3x3(255 - frames) if frames.dtype == np.uint8 else -dilate3x3(-frames)


def affine_jitter(frames: np.ndarray, dy: float, dx: float, scale: float) -> np.ndarray:
    """Shift by ``(dy, dx)`` pixels and scale by ``scale`` about the centre, nearest neighbour, zero fill.

    Args:
        frames: uint8 (T, H, W).
        dy: vertical shift in pixels (positive: down).
        dx: horizontal shift in pixels (positive: right).
        scale: scale factor, > 0 (not checked); > 1 enlarges.

    Returns:
        uint8 (T, H, W), a new array; pixels mapped from outside the frame are 0.
    """
    t, h, w = frames.shape
    ys = np.rint((np.arange(h) - (h - 1) / 2 - dy) / scale + (h - 1) / 2).astype(np.int64)
    xs = np.rint((np.arange(w) - (w - 1) / 2 - dx) / scale + (w - 1) / 2).astype(np.int64)
    vy, vx = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
    out = np.zeros_like(frames)
    out[:, np.flatnonzero(vy)[:, None], np.flatnonzero(vx)[None, :]] = frames[:, ys[vy][:, None], xs[vx][None, :]]
    return out


def apply_augment(frames: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Augmented copy of a training clip.

    Order: frame dropout, then dilation or erosion, affine jitter, random erasing (one rectangle
    of side ``0.3..1 x erase_max_frac`` of the frame's, the same in every frame; Zhong et al.,
    "Random Erasing Data Augmentation", AAAI 2020), flip. The same draws happen whatever the
    outcome (7 + T + 5 uniforms), so one switch does not change the randomness of the others.

    Args:
        frames: uint8 (T, H, W) silhouettes, 0/255; not modified.
        cfg: the augmentations.
        rng: the sample's generator.

    Returns:
        uint8 (T, H, W), a new C-contiguous array.

    Raises:
        ValueError: ``frames`` is not 3-D.
    """
    out = np.array(frames, dtype=np.uint8, copy=True)
    t, h, w = out.shape
    u = rng.random(7)
    drop = rng.random(t) < cfg.frame_dropout
    v = rng.random(5)  # drawn after the original draws: the older augmentations keep their randomness
    if cfg.frame_dropout > 0 and t > 1:
        drop[0] = False
        src = np.maximum.accumulate(np.where(drop, 0, np.arange(t)))  # last kept frame at or before
        out = out[src]
    if u[0] < cfg.dilate_prob:
        out = dilate3x3(out)
    elif v[0] < cfg.erode_prob:
        out = erode3x3(out)
    if v[1] < cfg.affine_prob:
        out = affine_jitter(out, (2 * v[2] - 1) * cfg.affine_shift, (2 * v[3] - 1) * cfg.affine_shift,
                            1.0 + (2 * v[4] - 1) * cfg.affine_scale)
    if u[1] < cfg.erase_prob:
        eh = max(1, int(round(h * cfg.erase_max_frac * (0.3 + 0.7 * u[3]))))
        ew = max(1, int(round(w * cfg.erase_max_frac * (0.3 + 0.7 * u[4]))))
        y = int(u[5] * (h - eh + 1))
        x = int(u[6] * (w - ew + 1))
        out[:, y : y + eh, x : x + ew] = 0
    if u[2] < cfg.flip_prob:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)
