"""From a config's ``dataset`` node to ready cache rows: the effective dataset settings, the cache
(generated or prepared on first use), the subject split, and the rows of a split.

Training uses :func:`load_training_data`; evaluate and extract use :func:`select_sequences`. Paths in
a dataset node are resolved against the launch folder (:func:`lstc_gait.utils.paths.resolve_path`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstc_gait.errors import UserError
from lstc_gait.utils.paths import resolve_path, resolve_path_str

log = logging.getLogger(__name__)

SPLITS = ("test", "train", "all")


class SelectionError(UserError, ValueError):
    """A split that does not exist or selects no sequences."""


class DatasetConfigError(UserError, ValueError):
    """A dataset node that is not a valid dataset config (the message names the key)."""


def effective_dataset_node(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The dataset a run really built: its ``dataset`` node with ``trainer.shrink_synthetic`` applied.

    ``trainer=debug`` shrinks a synthetic dataset through ``trainer.shrink_synthetic``; a checkpoint's
    stored config therefore names a dataset that is only the real one once that is applied.

    Args:
        config: A resolved training config (plain dict), e.g. a checkpoint's.

    Returns:
        The dataset node as a plain dict, or None when the config has none.
    """
    if not config or not isinstance(config.get("dataset"), Mapping):
        return None
    node = json.loads(json.dumps(config["dataset"], default=str))
    shrink = (config.get("trainer") or {}).get("shrink_synthetic")
    if shrink and isinstance(node.get("synthetic"), Mapping):
        node["synthetic"] = {**node["synthetic"], **dict(shrink)}
    return node


def dataset_settings(node: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> Any:
    """The typed, validated dataset config of a node, its paths made absolute.

    Args:
        node: A dataset node (plain dict), as from :func:`effective_dataset_node`.
        base_dir: Folder relative paths start from (None: the current directory).

    Returns:
        A :class:`lstc_gait.data.config.DatasetConfig`.

    Raises:
        DatasetConfigError: The node is not a valid dataset config (the message names the key).
    """
    from lstc_gait.data.config import dataset_config_from

    try:
        ds = dataset_config_from(dict(node))
    except SelectionError:
        raise
    except ValueError as exc:
        raise DatasetConfigError(str(exc)) from exc
    ds.root = resolve_path_str(ds.root, base_dir)
    ds.roots = [str(resolve_path(r, base_dir)) for r in ds.roots]
    ds.cache_dir = resolve_path_str(ds.cache_dir, base_dir)
    ds.partition_file = resolve_path_str(ds.partition_file, base_dir)
    return ds


def default_dataset_node(conf_dir: str | os.PathLike) -> dict[str, Any]:
    """The shipped ``dataset/synthetic`` option, for checkpoints that do not name their dataset.

    Args:
        conf_dir: The package's ``conf`` folder.

    Returns:
        The node as a plain dict.
    """
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(Path(conf_dir) / "dataset" / "synthetic.yaml"),
                                  resolve=True)  # type: ignore[return-value]


def select_rows(index: Any, split: str, split_protocol: str, partition_file: str | None = None,
                test_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """Cache rows of the chosen subjects: the split's ``test`` or ``train`` side, or ``all``.

    Args:
        index: The cache index (pandas DataFrame with a ``subject`` column).
        split: ``test``, ``train`` or ``all``.
        split_protocol: The dataset's subject split (``casia_b``, ``ou_mvlp``, ``fraction``, ...).
        partition_file: OpenGait-style partition JSON, when the split uses one.
        test_fraction: Share of subjects tested by the ``fraction`` split.
        seed: Seed of the ``fraction`` split.

    Returns:
        int64 (N,) row numbers in index order.

    Raises:
        SelectionError: ``split`` is not one of the three.
    """
    from lstc_gait.data.splits import split_subjects

    if split not in SPLITS:
        raise SelectionError(f"split={split!r} is not one of: {', '.join(SPLITS)}")
    subjects = index["subject"].astype(str)
    if split == "all":
        return np.arange(len(index), dtype=np.int64)
    train, test = split_subjects(subjects.tolist(), split_protocol, partition_file=partition_file,
                                 test_fraction=test_fraction, seed=seed)
    keep = set(test if split == "test" else train)
    return np.flatnonzero(subjects.isin(keep).to_numpy()).astype(np.int64)


@dataclass
class SequenceSelection:
    """The rows of one split of a ready cache.

    Attributes:
        cache: The ``SequenceCache``.
        cache_dir: Its folder.
        rows: int64 (N,) selected rows.
        dataset: The ``DatasetConfig``.
        split: ``test``, ``train`` or ``all``.
    """

    cache: Any
    cache_dir: Path
    rows: np.ndarray
    dataset: Any
    split: str

    def labels(self) -> dict[str, np.ndarray]:
        """Per-row labels.

        Returns:
            ``{"subjects", "types", "views", "seqs"}``, each a (N,) str array in row order.
        """
        index = self.cache.index.iloc[self.rows]
        return {k: index[c].astype(str).to_numpy() for k, c in
                (("subjects", "subject"), ("types", "type"), ("views", "view"), ("seqs", "seq"))}


def select_sequences(dataset_node: Mapping[str, Any], data_dir: str | os.PathLike, split: str = "test",
                     base_dir: str | os.PathLike | None = None, progress: bool = True) -> SequenceSelection:
    """Make the dataset's cache ready (generating / preparing it if needed) and pick the split's rows.

    Args:
        dataset_node: A dataset node (plain dict).
        data_dir: Where generated and prepared caches live (``paths.data_dir``).
        split: ``test``, ``train`` or ``all``.
        base_dir: Folder relative paths start from (the launch folder).
        progress: Show progress bars while preparing.

    Returns:
        The selection.

    Raises:
        SelectionError: Unknown split, or it selects no sequences.
        DatasetConfigError: The dataset node is invalid.
    """
    from lstc_gait.data import open_cache
    from lstc_gait.data.config import resolve_cache

    ds = dataset_settings(dataset_node, base_dir)
    cache_dir = resolve_cache(ds, resolve_path(data_dir, base_dir), progress=progress)
    cache = open_cache(cache_dir)
    rows = select_rows(cache.index, split, ds.split, ds.partition_file, ds.test_fraction, ds.split_seed)
    if len(rows) == 0:
        raise SelectionError(f"split={split!r} of dataset {ds.name!r} selects no sequences")
    return SequenceSelection(cache, Path(cache_dir), rows, ds, split)


@dataclass
class TrainingData:
    """A training run's data: the cache, the train rows with labels, and the test rows.

    Attributes:
        cache: The ``SequenceCache``.
        train_rows: int64 (N_train,) rows of the training subjects.
        train_labels: int64 (N_train,) class index of each (0 .. num_classes - 1).
        train_views: (N_train,) str view labels (for the multi-view sampler).
        test_rows: int64 (N_test,) rows of the test subjects.
        num_classes: Training subjects.
        settings: The ``DatasetConfig``.
    """

    cache: Any
    train_rows: np.ndarray
    train_labels: np.ndarray
    train_views: np.ndarray
    test_rows: np.ndarray
    num_classes: int
    settings: Any


def load_training_data(dataset_node: Mapping[str, Any], data_dir: str | os.PathLike, is_main: bool = True,
                       barrier: Any = None, progress: bool = True) -> TrainingData:
    """Make the cache ready and split its subjects into training classes and test rows.

    Under DDP rank 0 generates / prepares the cache while the others wait at ``barrier``, then reuse it.

    Args:
        dataset_node: The effective dataset node (see :func:`effective_dataset_node`).
        data_dir: Where generated and prepared caches live (absolute).
        is_main: Whether this process prepares the cache.
        barrier: Zero-argument callable all ranks call after rank 0 prepared (None: no wait).
        progress: Show progress bars while preparing.

    Returns:
        The training data.

    Raises:
        SelectionError: The split leaves no training or no test sequences.
    """
    from lstc_gait.data import open_cache
    from lstc_gait.data.config import resolve_cache
    from lstc_gait.data.splits import split_subjects

    ds = dataset_settings(dataset_node)
    if is_main:
        cache_dir = resolve_cache(ds, Path(data_dir), progress=progress)
    if barrier is not None:
        barrier()
    if not is_main:
        cache_dir = resolve_cache(ds, Path(data_dir), progress=False)
    cache = open_cache(cache_dir)
    index = cache.index
    subjects = index["subject"].astype(str).to_numpy()
    try:
        train_subj, test_subj = split_subjects(subjects, ds.split, ds.partition_file, ds.test_fraction, ds.split_seed)
    except ValueError as exc:  # an empty side, a partition file naming no subject of the data: user errors
        if isinstance(exc, UserError):
            raise
        raise SelectionError(f"dataset {ds.name!r}: {exc}") from exc
    label_of = {s: i for i, s in enumerate(train_subj)}
    train_rows = np.flatnonzero(np.isin(subjects, train_subj))
    test_rows = np.flatnonzero(np.isin(subjects, test_subj))
    if len(train_rows) == 0 or len(test_rows) == 0:
        raise SelectionError(f"dataset {ds.name!r}: the {ds.split} split left no training or no test sequences")
    labels = np.asarray([label_of[s] for s in subjects[train_rows]], dtype=np.int64)
    views = index["view"].astype(str).to_numpy()[train_rows]
    log.info("dataset %s: %d sequences, %d train subjects (%d seqs), %d test subjects (%d seqs)", ds.name,
             len(index), len(train_subj), len(train_rows), len(test_subj), len(test_rows))
    return TrainingData(cache, train_rows, labels, views, test_rows, len(train_subj), ds)


__all__ = ["SPLITS", "DatasetConfigError", "SelectionError", "SequenceSelection", "TrainingData", "dataset_settings",
           "default_dataset_node", "effective_dataset_node", "load_training_data", "select_rows",
           "select_sequences"]
