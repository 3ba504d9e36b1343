"""Training and test datasets over a :class:`~lstc_gait.data.cache.SequenceCache`.

Both yield uint8 silhouettes cut to the central ``width`` columns (64 -> 44 by default); the
trainer converts on the device. A training item is addressed by ``(position, sample_seed)``: the
frames (and augmentation) are drawn from ``np.random.default_rng(sample_seed)``, so a batch is a
pure function of the sampler's output, whatever the number of DataLoader workers, and a resumed
run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, is_dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import AugmentConfig, apply_augment
from .cache import FRAME_SHAPE, SequenceCache
from .frame_sampling import SAMPLING_MODES, sample_frame_indices


def _column_window(width: int) -> slice:
    full = FRAME_SHAPE[1]
    if not 0 < width <= full:
        raise ValueError(f"width must be in 1..{full}, got {width}")
    left = (full - width) // 2
    return slice(left, left + width)


def _as_rows(rows: Sequence[int] | np.ndarray, cache: SequenceCache) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= len(cache)):
        raise IndexError(f"rows must index the cache (0..{len(cache) - 1}); got {arr.min()}..{arr.max()}")
    return arr


class TrainSequenceDataset(Dataset):
    """Fixed-length training clips: item ``(position, sample_seed)`` or ``position`` ->
    ``(uint8 tensor (num_frames, 64, width), int label)``.

    ``rows`` are cache row numbers, ``labels`` the class id of each (same length). A bare int key
    draws from fresh OS entropy (handy interactively, not reproducible); samplers pass seeds.
    """

    def __init__(
        self,
        cache: SequenceCache,
        rows: Sequence[int] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        num_frames: int = 30,
        sampling: str = "ordered",
        width: int = 44,
        augment: AugmentConfig | dict | None = None,
    ):
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLING_MODES)}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.cache = cache
        self.rows = _as_rows(rows, cache)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(self.rows):
            raise ValueError(f"{len(self.rows)} rows but {len(self.labels)} labels")
        self.num_frames = int(num_frames)
        self.sampling = sampling
        self.width = int(width)
        self._cols = _column_window(self.width)
        if isinstance(augment, dict):
            augment = AugmentConfig(**augment)
        elif augment is not None and is_dataclass(augment) and not isinstance(augment, AugmentConfig):
            augment = AugmentConfig(**asdict(augment))
        self.augment = augment if augment is not None and augment.enabled() else None
        self._lengths = np.diff(cache.offsets)[self.rows] if len(self.rows) else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, position: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        """One training clip of the sequence at ``position``.

        Args:
            position: Index into this dataset's rows.
            rng: Generator for frame sampling and augmentation.

        Returns:
            (uint8 (num_frames, 64, width) clip, int class label).
        """
        row = int(self.rows[position])
        idx = sample_frame_indices(int(self._lengths[position]), self.num_frames, self.sampling, rng)
        # One fancy index straight on the memory map: copies only the pixels the clip needs.
        clip = self.cache.data[self.cache.offsets[row] + idx, :, self._cols]
        if self.augment is not None:
            clip = apply_augment(clip, self.augment, rng)
        return torch.from_numpy(np.ascontiguousarray(clip)), int(self.labels[position])

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        if isinstance(key, np.ndarray | torch.Tensor) and key.ndim == 1:
            key = key.tolist()
        if isinstance(key, tuple | list):
            if len(key) != 2:
                raise TypeError(f"a training item key is (position, sample_seed), got {key!r}")
            position, seed = int(key[0]), int(key[1])
            return self.sample(position, np.random.default_rng(seed))
        return self.sample(int(key), np.random.default_rng())


class TestSequenceDataset(Dataset):
    """Whole sequences for evaluation: item ``i`` -> ``(uint8 tensor (T, 64, width), i)``.

    ``max_frames`` caps T by keeping the first ``max_frames`` frames (bounded memory on very long
    sequences); ``None`` keeps all. The second value is the item's position in this dataset, so
    ``rows[position]`` is its cache row.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        cache: SequenceCache,
        rows: Sequence[int] | np.ndarray,
        width: int = 44,
        max_frames: int | None = None,
    ):
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        self.cache = cache
        self.rows = _as_rows(rows, cache)
        self.width = int(width)
        self._cols = _column_window(self.width)
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        position = int(position)
        frames = self.cache.frames(int(self.rows[position]))
        if self.max_frames is not None:
            frames = frames[: self.max_frames]
        return torch.from_numpy(np.ascontiguousarray(frames[:, :, self._cols])), position


def collate_padded(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(uint8 (T_i, H, W), position)] -> (uint8 (N, Tmax, H, W) zero-padded at the end of time,
    lengths int64 (N,), positions int64 (N,))."""
    if not batch:
        raise ValueError("collate_padded got an empty batch")
    lengths = torch.tensor([x.shape[0] for x, _ in batch], dtype=torch.int64)
    h, w = batch[0][0].shape[1:]
    # numpy copies: torch's small uint8 copies are slow with several threads on a busy CPU
    out = np.zeros((len(batch), int(lengths.max()), h, w), dtype=np.uint8)
    for i, (x, _) in enumerate(batch):
        out[i, : x.shape[0]] = x.numpy()
    positions = torch.tensor([int(p) for _, p in batch], dtype=torch.int64)
    return torch.from_numpy(out), lengths, positions


def collate_train(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(uint8 (T, H, W), label)] -> (uint8 (N, T, H, W), labels int64 (N,)).

    Same result as torch's default collate, but stacked by numpy: a uint8 ``torch.stack`` with
    several intra-op threads can be 100x slower on a busy CPU (the trainer's own process, workers=0).
    """
    if not batch:
        raise ValueError("collate_train got an empty batch")
    x = torch.from_numpy(np.stack([item[0].numpy() for item in batch]))
    labels = torch.tensor([int(item[1]) for item in batch], dtype=torch.int64)
    return x, labels
