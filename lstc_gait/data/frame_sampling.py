"""Which frames of a sequence a training sample uses."""

from __future__ import annotations

import numpy as np

SAMPLING_MODES: tuple[str, ...] = ("ordered", "random", "sorted")


def sample_frame_indices(num_available: int, num_frames: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Indices (int64, length ``num_frames``) into a sequence of ``num_available`` frames.

    ``ordered``: a contiguous window at a random start; a sequence shorter than the window is
    walked cyclically from a random start (gait is periodic, so repeating the walk is the least
    distorting way to fill it). ``random``: unordered frames from shuffled passes over the
    sequence (distinct frames when there are enough): a set, for order-free models such as
    GaitSet. ``sorted``: the same frames as ``random``, put back in time order: the whole gait
    cycle, as a model with temporal kernels (LSTC) sees it at test time, only sparser.

    Args:
        num_available: Frames in the sequence (>= 1).
        num_frames: Frames the clip takes (>= 1).
        mode: ``ordered``, ``random`` or ``sorted``.
        rng: The generator (the sampler's per-item seed makes the choice reproducible).

    Returns:
        int64 (num_frames,) frame indices.

    Raises:
        ValueError: An empty sequence, ``num_frames < 1`` or an unknown mode.
    """
    if num_available < 1:
        raise ValueError("cannot sample frames from an empty sequence")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if mode == "ordered":
        if num_available >= num_frames:
            start = int(rng.integers(0, num_available - num_frames + 1))
            return np.arange(start, start + num_frames, dtype=np.int64)
        start = int(rng.integers(0, num_available))
        return (start + np.arange(num_frames, dtype=np.int64)) % num_available
    if mode in ("random", "sorted"):
        # Shuffled passes over the whole sequence: no repeats when there are enough frames, and
        # every frame used before any repeats when there are not.
        reps = -(-num_frames // num_available)
        passes = [rng.permutation(num_available) for _ in range(reps)]
        idx = np.concatenate(passes)[:num_frames].astype(np.int64)
        return np.sort(idx) if mode == "sorted" else idx
    raise ValueError(f"unknown sampling mode {mode!r}; choose one of {', '.join(SAMPLING_MODES)}")
