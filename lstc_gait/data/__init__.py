"""Data layer: layouts -> pretreatment -> cache -> datasets (see docs/data.md).

The config helpers (:mod:`lstc_gait.data.config`) and the synthetic generator
(:mod:`lstc_gait.data.synthetic`) are imported explicitly, not from here, to keep this import light
and free of cycles.
"""

from .augment import AugmentConfig, apply_augment
from .cache import CacheError, EmptyCacheError, SequenceCache, open_cache, write_cache_from_arrays
from .frame_sampling import sample_frame_indices
from .frames import FrameError, read_mask, read_masks, read_pickle_sequence, to_mask
from .layouts import LAYOUTS, LayoutError, detect_layout, read_partition, scan_roots
from .prepare import PrepareSummary, prepare_cache
from .pretreat import center_crop_width, pretreat_frame
from .splits import SPLIT_PROTOCOLS, CacheSplit, split_index, split_subjects

# The datasets need torch; load them on first use so that generator and prepare workers stay light.
_LAZY = {
    name: ".datasets" for name in ("TestSequenceDataset", "TrainSequenceDataset", "collate_padded", "collate_train")
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LAYOUTS",
    "SPLIT_PROTOCOLS",
    "AugmentConfig",
    "CacheSplit",
    "CacheError",
    "EmptyCacheError",
    "FrameError",
    "LayoutError",
    "PrepareSummary",
    "SequenceCache",
    "TestSequenceDataset",
    "TrainSequenceDataset",
    "apply_augment",
    "center_crop_width",
    "collate_padded",
    "collate_train",
    "detect_layout",
    "open_cache",
    "prepare_cache",
    "pretreat_frame",
    "read_mask",
    "read_masks",
    "read_partition",
    "read_pickle_sequence",
    "sample_frame_indices",
    "scan_roots",
    "split_index",
    "split_subjects",
    "to_mask",
    "write_cache_from_arrays",
]
