"""Compact on-disk cache of pretreated sequences: one packed uint8 file, memory-mapped.

Layout of a cache folder::

    CACHE/meta.json              written last, atomically (fsynced): names the current pack (the valid marker)
    CACHE/pack-<token>/frames.u8 all frames, (total_frames, 64, 64) uint8, back to back
    CACHE/pack-<token>/offsets.npy  int64 (N + 1,) frame offsets of the N sequences
    CACHE/pack-<token>/index.csv subject, type, view, seq, source, num_frames, key
    CACHE/entries/<key>.npy|json per-sequence results of an unfinished prepare run (resume)
    CACHE/prepare_report.csv     every skipped frame or sequence, and why

A new pack is written beside the old one and only becomes visible when meta.json is replaced, so
an interrupted run leaves the previous cache readable and never a half-written one. Files are
renamed into place by :mod:`lstc_gait.utils.fileio`.
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

from lstc_gait.errors import UserError
from lstc_gait.utils.fileio import atomic_output

FORMAT_NAME = "lstc_gait-cache"
FORMAT_VERSION = 1
FRAME_SHAPE = (64, 64)
FRAME_BYTES = FRAME_SHAPE[0] * FRAME_SHAPE[1]
META_FILE = "meta.json"
REPORT_FILE = "prepare_report.csv"
INDEX_COLUMNS = ["subject", "type", "view", "seq", "source", "num_frames"]
_STR_COLUMNS = ["subject", "type", "view", "seq", "source", "key"]


class CacheError(UserError, ValueError):
    """A cache folder is missing, incomplete or inconsistent (the message names the file)."""


def summarise_report(report: pd.DataFrame) -> list[tuple[str, str, int, str]]:
    """Group a prepare report's rows by level and cause.

    Args:
        report: The rows of ``prepare_report.csv`` (columns ``level``, ``cause``, ``path``; a
            report without ``cause``, from an older version, is grouped by ``reason``).

    Returns:
        ``(level, cause, count, example path)`` tuples: sequences first, then frames; the most
        frequent cause first within each level (ties by cause name). Empty for a None or empty
        report.

    Raises:
        KeyError: A non-empty ``report`` lacks the ``level``, ``path`` or ``cause``/``reason``
            column.
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
            The error (to raise). An unreadable or missing report file only shortens the message.

        Raises:
            KeyError: The report (given or read) has rows but lacks a column
                :func:`summarise_report` needs.
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


def write_text_synced(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, its data fsynced before the rename.

    :func:`lstc_gait.utils.fileio.atomic_output` plus an ``fsync``: used for the files whose
    presence marks something finished (``meta.json``, a prepare entry's JSON) and for the prepare
    report, so a crash right after the rename cannot leave them empty.

    Args:
        path: The final file (its folder is created if missing).
        text: Its whole content.

    Raises:
        OSError: The folder cannot be created or written.
    """
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def read_meta(cache_dir: str | Path) -> dict | None:
    """Read the ``meta.json`` of a cache folder.

    Args:
        cache_dir: The cache folder.

    Returns:
        The decoded metadata (``format``, ``version``, ``pack``, ``num_sequences``,
        ``num_frames``, ``frame_shape`` and the prepare settings), or None when the file is
        missing, unreadable, not JSON, or not a :data:`FORMAT_NAME` object.
    """
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

    Args:
        path: A finished cache folder (see the module docstring for its layout).

    Attributes:
        path: The cache folder.
        meta: Its decoded ``meta.json`` (see :func:`read_meta`).
        pack_dir: The current pack folder.
        index: One row per sequence: ``subject, type, view, seq, source`` (str) and
            ``num_frames`` (int64).
        keys: Each sequence's prepare key (``sequence_key``), aligned with ``index``.
        offsets: ``(N + 1,)`` int64 frame offsets; sequence ``i`` is frames
            ``offsets[i]:offsets[i + 1]``.
        total_frames: Frames in the pack.

    Raises:
        CacheError: The folder does not exist, has no valid ``meta.json`` (not a finished
            cache), or its pack is damaged or inconsistent (unreadable ``index.csv`` or
            ``offsets.npy``, missing columns, offsets or ``frames.u8`` size not matching the
            index); the message names the file.
        KeyError: ``meta.json`` has the cache format but no ``pack`` entry.
        OSError: The frames file cannot be memory-mapped.
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
        """Number of frames of one sequence.

        Args:
            i: Sequence position, ``0 <= i < len(self)`` (negative ``i`` is not supported here).

        Returns:
            Its frame count.

        Raises:
            IndexError: ``i + 1`` is outside the offsets.
        """
        return int(self.offsets[i + 1] - self.offsets[i])

    def frames(self, i: int) -> np.ndarray:
        """One sequence's frames.

        Args:
            i: Sequence position, ``-len(self) <= i < len(self)`` (negative counts from the end).

        Returns:
            A read-only ``(T, 64, 64)`` uint8 view into the memory-mapped pack, 0/255.

        Raises:
            IndexError: ``i`` is out of range.
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} out of range for a cache of {len(self)}")
        i = int(i) % len(self)
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def __repr__(self) -> str:
        return f"SequenceCache({str(self.path)!r}, sequences={len(self)}, frames={self.total_frames})"


def open_cache(path: str | Path) -> SequenceCache:
    """Open a finished cache folder.

    Args:
        path: The cache folder.

    Returns:
        The :class:`SequenceCache` reading it.

    Raises:
        CacheError: ``path`` is not a finished, consistent cache (see :class:`SequenceCache`).
        OSError: The frames file cannot be memory-mapped.
    """
    return SequenceCache(path)


def write_pack(
    cache_dir: str | Path,
    rows: pd.DataFrame,
    load: Callable[[int], np.ndarray],
    extra_meta: dict | None = None,
    progress: bool = False,
) -> Path:
    """Write a new pack from ``rows`` and make it current by replacing meta.json last.

    The frames file is fsynced before ``meta.json`` is written (atomically, see
    :func:`write_text_synced`). The previous pack and leftovers of interrupted packs are removed
    only after the switch.

    Args:
        cache_dir: The cache folder (created if missing).
        rows: One row per sequence, in the order to store, with the columns ``subject, type, view,
            seq, source, key`` (other columns are ignored).
        load: ``load(j)`` returns row ``j``'s frames, ``(T, 64, 64)`` uint8, 0/255 (T may be 0).
        extra_meta: More ``meta.json`` entries (the prepare settings; they override the standard
            ones of the same name).
        progress: Show a tqdm bar on stderr.

    Returns:
        The new pack folder.

    Raises:
        CacheError: ``load`` returned an array that is not ``(T, 64, 64)`` uint8 (the new pack
            is left unreferenced; the next successful write removes it).
        KeyError: ``rows`` lacks one of the columns.
        OSError: A file cannot be written.
    """
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
    write_text_synced(cache_dir / META_FILE, json.dumps(meta, indent=1))
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

    Rows are stored sorted by subject, type, view, seq, source (values stored as strings); the
    keys are ``"a"`` + the record's position in ``records``, 8 digits.

    Args:
        cache_dir: The cache folder (created if missing; an existing cache there is replaced).
        records: ``(metadata, frames)`` pairs: metadata has ``subject, type, view, seq, source``,
            frames are ``(T, 64, 64)`` uint8, 0/255.
        extra_meta: More ``meta.json`` entries (see :func:`write_pack`).

    Returns:
        The new cache, open.

    Raises:
        ValueError: A record's metadata lacks one of the five keys.
        CacheError: A record's frames are not ``(T, 64, 64)`` uint8.
        OSError: A file cannot be written.
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
