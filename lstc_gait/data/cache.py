"""Compact on-disk cache of pretreated sequences: one packed uint8 file, memory-mapped.

Layout of a cache folder::

    CACHE/meta.json              written last, atomically: names the current pack (the valid marker)
    CACHE/pack-<token>/frames.u8 all frames, (total_frames, 64, 64) uint8, back to back
    CACHE/pack-<token>/offsets.npy  int64 (N + 1,) frame offsets of the N sequences
    CACHE/pack-<token>/index.csv subject, type, view, seq, source, num_frames, key
    CACHE/entries/<key>.npy|json per-sequence results of an unfinished prepare run (resume)
    CACHE/prepare_report.csv     every skipped frame or sequence, and why

A new pack is written beside the old one and only becomes visible when meta.json is replaced, so
an interrupted run leaves the previous cache readable and never a half-written one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

FORMAT_NAME = "lstc_gait-cache"
FORMAT_VERSION = 1
FRAME_SHAPE = (64, 64)
FRAME_BYTES = FRAME_SHAPE[0] * FRAME_SHAPE[1]
META_FILE = "meta.json"
REPORT_FILE = "prepare_report.csv"
INDEX_COLUMNS = ["subject", "type", "view", "seq", "source", "num_frames"]
_STR_COLUMNS = ["subject", "type", "view", "seq", "source", "key"]


class CacheError(ValueError):
    """A cache folder is missing, incomplete or inconsistent (the message names the file)."""


def summarise_report(report: pd.DataFrame) -> list[tuple[str, str, int, str]]:
    """Group a prepare report's rows by level and cause.

    Args:
        report: The rows of ``prepare_report.csv`` (columns ``level``, ``cause``, ``path``; a
            report without ``cause``, from an older version, is grouped by ``reason``).

    Returns:
        ``(level, cause, count, example path)`` tuples: sequences first, then frames; the most
        frequent cause first within each level.
    """
    if report is None or not len(report):
        return []
    cause_col = "cause" if "cause" in report.columns else "reason"
    groups = []
    for level in ("sequence", "frame"):
        rows = report[report["level"] == level]
        for cause, part in rows.groupby(cause_col, sort=False):
            groups.append((level, str(cause), len(part), str(part["path"].iloc[0])))
    order = {"sequence": 0, "frame": 1}
    return sorted(groups, key=lambda g: (order[g[0]], -g[2], g[1]))


class EmptyCacheError(CacheError):
    """A cache holds no sequence: everything was skipped (the message names the top causes)."""

    @classmethod
    def from_report(cls, cache_dir: str | Path, report: pd.DataFrame | None = None, what: str = "") -> EmptyCacheError:
        """The one-line error for an empty cache, naming the most frequent skip causes.

        Args:
            cache_dir: The cache folder; its ``prepare_report.csv`` is read when ``report`` is None.
            report: The prepare report's rows, if at hand.
            what: Where the data came from (e.g. ``"under /data/raw"``), for the message.

        Returns:
            The error (to raise).
        """
        cache_dir = Path(cache_dir)
        report_path = cache_dir / REPORT_FILE
        if report is None:
            try:
                report = pd.read_csv(report_path, dtype=str, keep_default_na=False)
            except (OSError, ValueError):
                report = None
        groups = summarise_report(report) if report is not None else []
        parts = []
        for level in ("sequence", "frame"):
            mine = [g for g in groups if g[0] == level]
            if mine:
                top = "; ".join(f"{cause} ({count}, e.g. {example})" for _, cause, count, example in mine[:3])
                more = f"; {len(mine) - 3} more cause(s)" if len(mine) > 3 else ""
                parts.append(f"{sum(g[2] for g in mine)} {level}(s) skipped: {top}{more}")
        where = f" {what}" if what else ""
        reasons = (" -- " + " -- ".join(parts)) if parts else ""
        see = f"; every skip is listed in {report_path}" if report_path.exists() or report is not None else ""
        return cls(f"no usable sequence{where}: the cache {cache_dir} is empty{reasons}{see}")


def require_sequences(cache: SequenceCache) -> SequenceCache:
    """Check that a cache holds at least one sequence.

    Args:
        cache: An open cache.

    Returns:
        ``cache`` itself.

    Raises:
        EmptyCacheError: The cache is empty; the message names the most frequent skip causes of
            the prepare run and its report file.
    """
    if len(cache) == 0:
        roots = cache.meta.get("roots") or []
        raise EmptyCacheError.from_report(cache.path, what=f"under {', '.join(map(str, roots))}" if roots else "")
    return cache


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_meta(cache_dir: str | Path) -> dict | None:
    """meta.json of a cache, or None when there is no (valid) one."""
    path = Path(cache_dir) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        return None
    return meta


class SequenceCache:
    """Read side of a cache: ``len(cache)``, ``cache.index``, ``cache.frames(i)``.

    ``frames(i)`` returns a read-only (T, 64, 64) uint8 view into the memory-mapped pack, so it
    costs nothing until the pixels are touched. Safe to pickle into DataLoader workers (the map
    is reopened lazily in each process).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = read_meta(self.path)
        if meta is None:
            if not self.path.exists():
                raise CacheError(f"cache folder does not exist: {self.path}")
            raise CacheError(
                f"{self.path} is not a finished cache ({META_FILE} missing or unreadable); "
                "run `python -m lstc_gait.prepare` (it resumes an interrupted run)"
            )
        self.meta = meta
        self.pack_dir = self.path / meta["pack"]
        index_path = self.pack_dir / "index.csv"
        offsets_path = self.pack_dir / "offsets.npy"
        try:
            table = pd.read_csv(index_path, dtype={c: str for c in _STR_COLUMNS}, keep_default_na=False)
            self.offsets = np.load(offsets_path).astype(np.int64)
        except (OSError, ValueError) as exc:
            raise CacheError(f"cache pack {self.pack_dir} is damaged: {exc}") from exc
        missing = [c for c in [*INDEX_COLUMNS, "key"] if c not in table.columns]
        if missing:
            raise CacheError(f"{index_path} lacks column(s) {', '.join(missing)}")
        n = len(table)
        if self.offsets.shape != (n + 1,):
            raise CacheError(f"{offsets_path} has shape {self.offsets.shape}, expected ({n + 1},)")
        self.keys: list[str] = table["key"].tolist()
        self.index: pd.DataFrame = table[INDEX_COLUMNS].copy()
        self.index["num_frames"] = self.index["num_frames"].astype(np.int64)
        self.total_frames = int(self.offsets[-1])
        if not np.array_equal(np.diff(self.offsets), self.index["num_frames"].to_numpy()):
            raise CacheError(f"{index_path}: num_frames disagree with {offsets_path}")
        frames_path = self.pack_dir / "frames.u8"
        size = frames_path.stat().st_size if frames_path.exists() else -1
        if size != self.total_frames * FRAME_BYTES:
            raise CacheError(
                f"{frames_path} holds {size} bytes, expected {self.total_frames * FRAME_BYTES} "
                f"({self.total_frames} frames of 64x64)"
            )
        self._frames_path = frames_path
        self._data: np.ndarray | None = None
        _ = self.data  # map now: a later re-prepare may replace this pack; the open map stays valid

    # memory map opened on first use (and again after unpickling in a worker process)
    @property
    def data(self) -> np.ndarray:
        """All frames, ``(total_frames, 64, 64)`` uint8, read-only memory map (opened on first use)."""
        if self._data is None:
            if self.total_frames == 0:
                self._data = np.zeros((0, *FRAME_SHAPE), dtype=np.uint8)
            else:
                mm = np.memmap(self._frames_path, dtype=np.uint8, mode="r", shape=(self.total_frames, *FRAME_SHAPE))
                self._data = mm.view(np.ndarray)
        return self._data

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_data"] = None
        return state

    def __len__(self) -> int:
        return len(self.keys)

    def num_frames(self, i: int) -> int:
        """Number of frames of sequence ``i``."""
        return int(self.offsets[i + 1] - self.offsets[i])

    def frames(self, i: int) -> np.ndarray:
        """Sequence ``i`` as a read-only (T, 64, 64) uint8 array."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} out of range for a cache of {len(self)}")
        i = int(i) % len(self)
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def __repr__(self) -> str:
        return f"SequenceCache({str(self.path)!r}, sequences={len(self)}, frames={self.total_frames})"


def open_cache(path: str | Path) -> SequenceCache:
    """Open a finished cache folder (CacheError naming the folder when it is not one)."""
    return SequenceCache(path)


def write_pack(
    cache_dir: str | Path,
    rows: pd.DataFrame,
    load: Callable[[int], np.ndarray],
    extra_meta: dict | None = None,
    progress: bool = False,
) -> Path:
    """Write a new pack from ``rows`` (columns subject, type, view, seq, source, key; in order) and
    make it current by replacing meta.json last. ``load(j)`` returns row j's (T, 64, 64) uint8
    frames. Older packs are removed only after the switch. Returns the new pack folder."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    old_meta = read_meta(cache_dir)
    pack_name = f"pack-{secrets.token_hex(6)}"
    pack = cache_dir / pack_name
    pack.mkdir()
    counts = np.zeros(len(rows), dtype=np.int64)
    iterator: Iterable[int] = range(len(rows))
    if progress and len(rows):
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="pack", unit="seq", leave=False)
    with open(pack / "frames.u8", "wb") as fh:
        for j in iterator:
            arr = load(j)
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[1:] != FRAME_SHAPE:
                raise CacheError(f"sequence {rows.iloc[j]['source']}: bad frames {arr.dtype} {arr.shape}")
            fh.write(np.ascontiguousarray(arr).tobytes())
            counts[j] = arr.shape[0]
        fh.flush()
        os.fsync(fh.fileno())
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    np.save(pack / "offsets.npy", offsets)
    table = rows[["subject", "type", "view", "seq", "source", "key"]].copy()
    table.insert(5, "num_frames", counts)
    table.to_csv(pack / "index.csv", index=False)
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "pack": pack_name,
        "num_sequences": int(len(rows)),
        "num_frames": int(offsets[-1]),
        "frame_shape": list(FRAME_SHAPE),
        **(extra_meta or {}),
    }
    atomic_write_text(cache_dir / META_FILE, json.dumps(meta, indent=1))
    if old_meta is not None and old_meta.get("pack") != pack_name:
        shutil.rmtree(cache_dir / old_meta["pack"], ignore_errors=True)
    # Leftovers of interrupted packs (never referenced by meta.json) go too.
    for stale in cache_dir.glob("pack-*"):
        if stale.name != pack_name and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return pack


def write_cache_from_arrays(
    cache_dir: str | Path, records: list[tuple[dict, np.ndarray]], extra_meta: dict | None = None
) -> SequenceCache:
    """Build a cache directly from pretreated arrays (for generators that already produce 64x64).

    ``records``: (metadata with subject, type, view, seq, source; uint8 (T, 64, 64)) pairs.
    Rows are stored sorted by subject, type, view, seq, source.
    """
    meta_rows = []
    for j, (m, _arr) in enumerate(records):
        missing = [k for k in ("subject", "type", "view", "seq", "source") if k not in m]
        if missing:
            raise ValueError(f"record {j} lacks {', '.join(missing)}")
        meta_rows.append({k: str(m[k]) for k in ("subject", "type", "view", "seq", "source")} | {"_j": j})
    rows = pd.DataFrame(meta_rows, columns=["subject", "type", "view", "seq", "source", "_j"])
    rows = rows.sort_values(["subject", "type", "view", "seq", "source"], kind="stable").reset_index(drop=True)
    rows["key"] = [f"a{j:08d}" for j in rows["_j"]]
    order = rows["_j"].tolist()
    write_pack(cache_dir, rows, lambda j: records[order[j]][1], extra_meta=extra_meta)
    return open_cache(cache_dir)
