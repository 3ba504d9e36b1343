"""Subject-disjoint train/test splits (the published protocols, a partition file, or seeded random)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import REPORT_FILE, EmptyCacheError
from .layouts import read_partition

SPLIT_PROTOCOLS: tuple[str, ...] = ("casia_b", "ou_mvlp", "partition", "random")
CASIA_B_SUBJECTS = 124
CASIA_B_TRAIN = 74


def _numeric(subjects: list[str], protocol: str) -> list[int]:
    bad = [s for s in subjects if not s.isdigit()]
    if bad:
        raise ValueError(f"the {protocol} split needs numeric subject ids; got e.g. {bad[:3]}")
    return [int(s) for s in subjects]


def _casia_b(subjects: list[str]) -> tuple[list[str], list[str]]:
    ids = _numeric(subjects, "casia_b")
    if min(ids) >= 1 and max(ids) == CASIA_B_SUBJECTS and len(ids) > CASIA_B_TRAIN:
        # The real dataset: the large-sample split, train 001-074, test 075-124.
        train = [s for s, i in zip(subjects, ids) if i <= CASIA_B_TRAIN]
        test = [s for s, i in zip(subjects, ids) if i > CASIA_B_TRAIN]
        return train, test
    # Another subject count (e.g. the synthetic dataset): the same 74/124 share, first ids train.
    order = [s for _, s in sorted(zip(ids, subjects))]
    n_train = int(round(len(order) * CASIA_B_TRAIN / CASIA_B_SUBJECTS))
    n_train = min(max(n_train, 1), len(order) - 1)
    return order[:n_train], order[n_train:]


def _ou_mvlp(subjects: list[str]) -> tuple[list[str], list[str]]:
    ids = _numeric(subjects, "ou_mvlp")
    return [s for s, i in zip(subjects, ids) if i % 2 == 1], [s for s, i in zip(subjects, ids) if i % 2 == 0]


def _match_ids(wanted: list[str], present: list[str]) -> set[str]:
    """Subjects of ``present`` named in ``wanted``; numeric ids match across zero padding (7 == 007)."""
    exact = set(wanted) & set(present)
    by_int = {int(w) for w in wanted if w.isdigit()}
    return exact | {p for p in present if p.isdigit() and int(p) in by_int}


def _partition(subjects: list[str], partition_file: str | Path | None) -> tuple[list[str], list[str]]:
    if partition_file is None:
        raise ValueError("the partition split needs partition_file (a JSON with TRAIN_SET and TEST_SET)")
    train_ids, test_ids = read_partition(partition_file)
    train, test = _match_ids(train_ids, subjects), _match_ids(test_ids, subjects)
    both = train & test
    if both:
        raise ValueError(f"partition file {partition_file} puts subjects in both sets: {sorted(both)[:5]}")
    return list(train), list(test)


def _random(subjects: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = sorted(subjects)
    perm = np.random.default_rng(seed).permutation(len(order))
    n_test = min(max(int(round(len(order) * test_fraction)), 1), len(order) - 1)
    test = [order[i] for i in perm[:n_test]]
    train = [order[i] for i in perm[n_test:]]
    return train, test


def split_subjects(
    subjects: Iterable[str],
    protocol: str,
    partition_file: str | Path | None = None,
    test_fraction: float = 0.5,
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """Split subject ids by a protocol.

    Args:
        subjects: Subject ids (repeats allowed, e.g. a cache index's ``subject`` column).
        protocol: One of :data:`SPLIT_PROTOCOLS`.
        partition_file: The partition JSON (``partition`` protocol).
        test_fraction: Share of test subjects (``random`` protocol).
        seed: Seed of the ``random`` protocol.

    Returns:
        ``(train_subjects, test_subjects)``, sorted and never overlapping.

    Raises:
        EmptyCacheError: No subject at all (the cache is empty).
        ValueError: The protocol cannot split these subjects (the message says why).
    """
    uniq = sorted({str(s) for s in subjects})
    if protocol not in SPLIT_PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of {', '.join(SPLIT_PROTOCOLS)}")
    if not uniq:
        raise EmptyCacheError("no subject to split: the cache is empty (prepare skipped everything; "
                              f"its {REPORT_FILE} says why)")
    if protocol != "partition" and len(uniq) < 2:
        raise ValueError(f"a {protocol} split needs at least 2 subjects, got {len(uniq)}")
    if protocol == "casia_b":
        train, test = _casia_b(uniq)
    elif protocol == "ou_mvlp":
        train, test = _ou_mvlp(uniq)
    elif protocol == "partition":
        train, test = _partition(uniq, partition_file)
    else:
        train, test = _random(uniq, test_fraction, seed)
    train, test = sorted(train), sorted(test)
    if set(train) & set(test):  # defensive: the protocols above are disjoint by construction
        raise AssertionError("train and test subjects overlap")
    if not train or not test:
        raise ValueError(f"the {protocol} split left an empty {'train' if not train else 'test'} set "
                         f"from {len(uniq)} subjects")
    return train, test


@dataclass
class CacheSplit:
    """Row numbers of a cache split by subject, with class labels for the training rows."""

    train_subjects: list[str]
    test_subjects: list[str]
    train_rows: np.ndarray  # int64 cache rows of the training subjects
    train_labels: np.ndarray  # int64 class id of each training row (index into train_subjects)
    test_rows: np.ndarray  # int64 cache rows of the test subjects

    @property
    def num_classes(self) -> int:
        """Number of training subjects (classes)."""
        return len(self.train_subjects)


def split_index(
    index: pd.DataFrame,
    protocol: str,
    partition_file: str | Path | None = None,
    test_fraction: float = 0.5,
    seed: int = 0,
) -> CacheSplit:
    """Split a cache index (column ``subject``) into training and test rows; labels follow the
    sorted training subjects (``train_subjects[label]``). Subjects in neither set are left out.

    Raises:
        EmptyCacheError: The index is empty.
        ValueError: The protocol cannot split these subjects (the message says why).
    """
    if len(index) == 0:
        raise EmptyCacheError("no sequence to split: the cache is empty (prepare skipped everything; "
                              f"its {REPORT_FILE} says why)")
    subjects = index["subject"].astype(str).to_numpy()
    train, test = split_subjects(subjects, protocol, partition_file, test_fraction, seed)
    label_of = {s: i for i, s in enumerate(train)}
    train_mask = np.isin(subjects, train)
    train_rows = np.flatnonzero(train_mask).astype(np.int64)
    labels = np.array([label_of[s] for s in subjects[train_rows]], dtype=np.int64)
    test_rows = np.flatnonzero(np.isin(subjects, test)).astype(np.int64)
    return CacheSplit(train, test, train_rows, labels, test_rows)
