"""The ``dataset`` config group as a typed dataclass, and the one call that makes its cache ready.

Entry points merge a composed ``cfg.dataset`` onto :class:`DatasetConfig` (via
:func:`dataset_config_from`), so a misspelt key or a wrong type fails with a message naming it,
then call :func:`resolve_cache`.
"""

# No `from __future__ import annotations`: OmegaConf reads these annotations at runtime.
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lstc_gait.data.synthetic import SynthParams

from .augment import AugmentConfig
from .cache import SequenceCache, read_meta, require_sequences
from .datasets import TestSequenceDataset, TrainSequenceDataset
from .frame_sampling import SAMPLING_MODES
from .frames import DEFAULT_MASK_THRESHOLD, READER_VERSION, check_mask_threshold
from .layouts import LAYOUTS
from .prepare import DEFAULT_MIN_FRAMES, PrepareSummary, prepare_cache
from .splits import SPLIT_PROTOCOLS, CacheSplit, split_index

log = logging.getLogger(__name__)

EVALUATION_PROTOCOLS = ("casia_b", "ou_mvlp", "retrieval")


@dataclass
class DatasetConfig:
    """The ``dataset`` config group: where the silhouettes are, how to prepare, split and sample them.

    See docs/data.md (Config) for every field; :meth:`validate` names a bad key in its error.
    """

    name: str = "synthetic"
    # where the raw silhouettes are; `roots` combines several (e.g. one folder per camera view)
    layout: str = "auto"  # auto | flat | casia_b | ou_mvlp | opengait
    root: str | None = None
    roots: list[str] = field(default_factory=list)
    cache_dir: str | None = None  # default: <data_dir>/cache/<name>-<hash of roots and layout>
    workers: int = 2
    min_frames: int = DEFAULT_MIN_FRAMES
    # a mask pixel is foreground from this share of its encoding's maximum (0.5: 128 of 255, 32768 of 65535)
    mask_threshold: float = DEFAULT_MASK_THRESHOLD
    # subject split
    split: str = "casia_b"  # casia_b | ou_mvlp | partition | random
    partition_file: str | None = None
    test_fraction: float = 0.5
    split_seed: int = 0
    # evaluation protocol run on the test subjects
    evaluation: str = "casia_b"  # casia_b | ou_mvlp | retrieval
    # training clips
    num_frames: int = 30
    sampling: str = "ordered"  # ordered | random | sorted (data.frame_sampling)
    width: int = 44
    test_max_frames: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # set for the generated dataset (helper B's SynthParams); then root/layout are not used
    synthetic: SynthParams | None = None

    def validate(self) -> "DatasetConfig":
        """Check the values.

        Returns:
            ``self``.

        Raises:
            ValueError: A bad value; the message names the key (``dataset.<key>``).
        """
        checks = [
            ("layout", self.layout, ("auto", *LAYOUTS)),
            ("split", self.split, SPLIT_PROTOCOLS),
            ("evaluation", self.evaluation, EVALUATION_PROTOCOLS),
            ("sampling", self.sampling, SAMPLING_MODES),
        ]
        for key, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"dataset.{key}={value!r} is not one of: {', '.join(allowed)}")
        # split=partition without partition_file is caught when splitting, not here: preparing a
        # cache does not need the partition.
        if self.min_frames < 1 or self.num_frames < 1 or self.workers < 0:
            raise ValueError("dataset.min_frames and dataset.num_frames must be >= 1, dataset.workers >= 0")
        check_mask_threshold(self.mask_threshold, "dataset.mask_threshold")
        if self.layout == "opengait" and self.mask_threshold != DEFAULT_MASK_THRESHOLD:
            raise ValueError(f"dataset.mask_threshold={self.mask_threshold} would do nothing with layout=opengait: "
                             "pickles are already pretreated and are not binarised (leave it at 0.5)")
        if self.synthetic is None and not self.roots and not self.root:
            raise ValueError(f"dataset {self.name!r} needs dataset.root (or dataset.roots): the raw data folder")
        return self

    def all_roots(self) -> list[str]:
        """``roots`` when given, else ``[root]`` (empty when neither is set)."""
        return list(self.roots) if self.roots else ([self.root] if self.root else [])


def dataset_config_from(node: Any) -> DatasetConfig:
    """A validated DatasetConfig from a DatasetConfig, DictConfig or dict (unknown keys rejected)."""
    if isinstance(node, DatasetConfig):
        return node.validate()
    try:
        merged = OmegaConf.merge(OmegaConf.structured(DatasetConfig), node)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ValueError(f"bad dataset config: {exc}") from exc
    assert isinstance(cfg, DatasetConfig)
    return cfg.validate()


def default_cache_dir(cfg: DatasetConfig, data_dir: Path) -> Path:
    """``<data_dir>/cache/<name>-<hash of layout and absolute roots>``."""
    roots = [os.path.abspath(r) for r in cfg.all_roots()]
    digest = hashlib.sha1(json.dumps([cfg.layout, roots]).encode()).hexdigest()[:10]
    return Path(data_dir) / "cache" / f"{cfg.name}-{digest}"


def resolve_cache(dataset_cfg: Any, data_dir: Path, progress: bool = True) -> Path:
    """Path of a ready cache for ``dataset_cfg`` (DatasetConfig / DictConfig / dict).

    Synthetic: generated and prepared once per parameter set under ``data_dir``. Otherwise the
    cache is reused when it was prepared from the same roots, layout and min_frames, else
    prepared (or resumed) with :func:`prepare_cache`. Relative paths are taken as given: entry
    points make them absolute first.
    """
    cfg = dataset_config_from(dataset_cfg) if not isinstance(dataset_cfg, DatasetConfig) else dataset_cfg.validate()
    data_dir = Path(data_dir)
    if cfg.synthetic is not None:
        from lstc_gait.data.synthetic import ensure_synthetic

        params = cfg.synthetic
        if isinstance(params, DictConfig | dict):
            params = SynthParams(**OmegaConf.to_container(OmegaConf.create(params)))
        return Path(ensure_synthetic(params, data_dir, workers=cfg.workers, progress=progress,
                                     min_frames=cfg.min_frames))
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(cfg, data_dir)
    roots = [os.path.abspath(r) for r in cfg.all_roots()]  # as prepare_cache records them
    meta = read_meta(cache_dir)
    if (
        meta is not None
        and meta.get("roots") == roots
        and cfg.layout in ("auto", meta.get("layout"))
        and meta.get("min_frames") == cfg.min_frames
        and meta.get("mask_threshold") == cfg.mask_threshold
        and meta.get("reader") == READER_VERSION
        and meta.get("num_sequences", 0) > 0  # an empty cache is prepared again (the data may be fixed)
    ):
        return cache_dir
    prepare_dataset(cfg, cache_dir, progress=progress)
    return cache_dir


def prepare_dataset(dataset_cfg: Any, cache_dir: str | Path, progress: bool = True) -> PrepareSummary:
    """Run (or resume) :func:`prepare_cache` on a dataset config's roots with all its settings.

    Args:
        dataset_cfg: A :class:`DatasetConfig`, DictConfig or dict (not the synthetic dataset).
        cache_dir: The cache folder.
        progress: Show progress bars and print the summary.

    Returns:
        The run's summary.

    Raises:
        EmptyCacheError: Nothing usable was found (one line naming the top causes and the report).
        LayoutError, FileNotFoundError, ValueError: As :func:`prepare_cache`.
    """
    cfg = dataset_config_from(dataset_cfg) if not isinstance(dataset_cfg, DatasetConfig) else dataset_cfg.validate()
    roots = [os.path.abspath(r) for r in cfg.all_roots()]
    return prepare_cache(roots, cfg.layout, cache_dir, workers=cfg.workers, min_frames=cfg.min_frames,
                         progress=progress, mask_threshold=cfg.mask_threshold)


def build_datasets(
    cache: SequenceCache, dataset_cfg: Any
) -> tuple[TrainSequenceDataset, TestSequenceDataset, CacheSplit]:
    """Split the cache by subject as the config says and wrap both sides in datasets.

    Training labels index ``split.train_subjects``; ``test_dataset.rows`` are cache rows, so
    ``cache.index.iloc[test_dataset.rows]`` gives the test sequences' subject/type/view.
    """
    cfg = dataset_cfg if isinstance(dataset_cfg, DatasetConfig) else dataset_config_from(dataset_cfg)
    require_sequences(cache)  # an empty cache is named as such, not as an empty train set
    split = split_index(cache.index, cfg.split, cfg.partition_file, cfg.test_fraction, cfg.split_seed)
    train = TrainSequenceDataset(cache, split.train_rows, split.train_labels, num_frames=cfg.num_frames,
                                 sampling=cfg.sampling, width=cfg.width, augment=cfg.augment)
    test = TestSequenceDataset(cache, split.test_rows, width=cfg.width, max_frames=cfg.test_max_frames)
    return train, test, split
