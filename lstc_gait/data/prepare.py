"""Raw silhouettes -> cache: a parallel, resumable, atomic job with a report of everything skipped.

Each sequence is pretreated by a worker process and written to ``CACHE/entries/<key>.npy`` (+ a
small JSON holding what was dropped) atomically (:mod:`lstc_gait.utils.fileio`); the JSON goes
last and marks the entry valid. At the end all valid sequences are packed into one memory-mapped
file (see :mod:`lstc_gait.data.cache`). A re-run reuses the current pack and every valid entry,
so an interrupted run loses at most the sequences in flight. Bad input (unreadable image, empty
frame, odd size or mode, empty or too-short sequence) is skipped, listed in
``CACHE/prepare_report.csv`` and counted by cause in the console summary; it never stops the run.
A run that keeps nothing raises :class:`~lstc_gait.data.cache.EmptyCacheError` (one line: the top
causes and the report file). The pretreatment is PROTOCOLS.md's (see :mod:`lstc_gait.data.pretreat`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils.fileio import atomic_output
from ..utils.locking import exclusive_lock
from .cache import (
    FRAME_SHAPE,
    REPORT_FILE,
    EmptyCacheError,
    SequenceCache,
    read_meta,
    summarise_report,
    write_pack,
    write_text_synced,
)
from .frames import (
    DEFAULT_MASK_THRESHOLD,
    READER_VERSION,
    check_mask_threshold,
    read_masks,
    read_pickle_sequence,
)
from .layouts import LayoutError, detect_layout, duplicate_rows, list_frames, scan_roots
from .pretreat import EMPTY_THRESHOLD, FrameError, pretreat_frame

log = logging.getLogger(__name__)

DEFAULT_MIN_FRAMES = 5
REPORT_COLUMNS = ["level", "cause", "path", "reason", "subject", "type", "view", "seq", "key"]


@dataclass
class SkipGroup:
    """Skips of one level and cause: how many, and one example.

    Attributes:
        level: ``"sequence"`` or ``"frame"``.
        cause: Short, file-independent reason, e.g. ``"empty frame"``.
        count: How many were skipped for it.
        example: Path of one skipped frame or sequence.
    """

    level: str  # "sequence" or "frame"
    cause: str  # short reason, e.g. "empty frame", "too few usable frames"
    count: int
    example: str  # path of one skipped frame or sequence


@dataclass
class PrepareSummary:
    """What a prepare run did; ``str()`` is the multi-line console summary.

    Attributes:
        cache_dir: The cache folder.
        layout: The layout the roots follow (detected when ``auto`` was asked).
        sequences: Sequences in the cache after the run.
        frames: Frames in the cache after the run.
        processed: Sequences pretreated by this run.
        reused: Sequences taken over from an earlier (finished or interrupted) run.
        skipped_sequences: Sequences skipped (listed in the report).
        skipped_frames: Frames dropped from kept or skipped sequences (listed in the report).
        report_path: ``cache_dir/prepare_report.csv``.
        seconds: Wall time of the run, in seconds.
        skips: Every skipped frame and sequence grouped by level and cause (sequences first,
            most frequent cause first).
    """

    cache_dir: Path
    layout: str
    sequences: int  # sequences in the cache after the run
    frames: int  # frames in the cache after the run
    processed: int  # sequences pretreated by this run
    reused: int  # sequences taken over from an earlier (finished or interrupted) run
    skipped_sequences: int
    skipped_frames: int
    report_path: Path
    seconds: float
    skips: list[SkipGroup] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"cache {self.cache_dir} ({self.layout}): {self.sequences} sequences, {self.frames} frames; "
            f"{self.processed} pretreated now, {self.reused} reused; {self.seconds:.1f} s"
        ]
        for level, total in (("sequence", self.skipped_sequences), ("frame", self.skipped_frames)):
            groups = [g for g in self.skips if g.level == level]
            if not total:
                continue
            lines.append(f"skipped {total} {level}s:")
            width = max(len(str(g.count)) for g in groups) if groups else 1
            cause_w = min(40, max((len(g.cause) for g in groups), default=0))
            lines.extend(f"  {g.count:>{width}}  {g.cause:<{cause_w}}  e.g. {g.example}" for g in groups)
        if self.skipped_sequences or self.skipped_frames:
            lines.append(f"every skip, with its reason: {self.report_path}")
        return "\n".join(lines)


def sequence_key(kind: str, source: str) -> str:
    """Stable, file-system-safe id of one raw sequence.

    Args:
        kind: ``"frames"`` or ``"pickle"`` (the index's ``kind`` column).
        source: The sequence's folder or pickle; made absolute against the working directory.

    Returns:
        The first 20 hex digits of the SHA-1 of ``kind`` and the absolute ``source``.
    """
    return hashlib.sha1(f"{kind}\0{os.path.abspath(source)}".encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------ one sequence
def _read_frames_folder(
    folder: str, empty_threshold: int, mask_threshold: float
) -> tuple[list[np.ndarray], list[tuple[str, str, str]]]:
    """Pretreated frames of one folder, and the dropped ones as (path, cause, reason)."""
    paths = list_frames(folder)
    decoded: list[tuple[str, np.ndarray]] = []
    dropped: list[tuple[str, str, str]] = []
    for p, mask in zip(paths, read_masks(paths, mask_threshold)):
        if isinstance(mask, FrameError):
            dropped.append((p, mask.cause, str(mask)))
        else:
            decoded.append((p, mask))
    if not decoded:
        return [], dropped
    # The sequence's frame size is its most common one; a frame of another size is a stray file.
    sizes = Counter(img.shape for _, img in decoded)
    expected = sizes.most_common(1)[0][0]
    frames: list[np.ndarray] = []
    for p, img in decoded:
        if img.shape != expected:
            dropped.append((p, "frame size differs from the sequence's",
                            f"{p}: unexpected image size {img.shape[1]}x{img.shape[0]} "
                            f"(the sequence's frames are {expected[1]}x{expected[0]})"))
            continue
        out = pretreat_frame(img, empty_threshold=empty_threshold)
        if out is None:
            dropped.append((p, "empty frame", f"{p}: empty frame (pixel sum <= {empty_threshold})"))
        else:
            frames.append(out)
    return frames, dropped


def _write_entry(entries: Path, key: str, arr: np.ndarray, info: dict) -> None:
    # A file handle, not the temporary path: np.save would append ".npy" to a name without it.
    with atomic_output(entries / f"{key}.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)
    # The JSON is written last: an entry without it is not valid (interrupted write).
    write_text_synced(entries / f"{key}.json", json.dumps(info))


def _params(min_frames: int, empty_threshold: int, mask_threshold: float) -> list:
    """What an entry or a cache was made with; another value means it is made again."""
    return [min_frames, empty_threshold, mask_threshold, READER_VERSION]


def process_sequence(task: tuple) -> dict:
    """Pretreat one sequence and write its entry; never raises (errors become a skip reason).

    Frames are decoded by :func:`lstc_gait.data.frames.read_masks` and pretreated by
    :func:`lstc_gait.data.pretreat.pretreat_frame` (PROTOCOLS.md); a frame whose size differs from
    the sequence's most common one is dropped as a stray file. The entry is written to
    ``entries/<key>.npy`` (``(T, 64, 64)`` uint8) and ``entries/<key>.json``. Top level so worker
    processes can import it.

    Args:
        task: ``(key, source, kind, entries folder, min_frames, empty_threshold, mask_threshold)``:
            the sequence key, its folder or pickle, ``"frames"`` or ``"pickle"``, the entries
            folder (str), and the settings of :func:`prepare_cache`.

    Returns:
        ``{"key", "status": "ok" | "skipped", "dropped": [(path, cause, reason)], ...}``; a skipped
        sequence also has ``cause`` and ``reason``, a kept one ``num_frames``.
    """
    key, source, kind, entries, min_frames, empty_threshold, mask_threshold = task
    dropped: list[tuple[str, str, str]] = []

    def skipped(cause: str, reason: str) -> dict:
        return {"key": key, "status": "skipped", "cause": cause, "reason": reason, "dropped": dropped}

    try:
        if kind == "pickle":
            arr = read_pickle_sequence(source)
        else:
            if not os.path.isdir(source):
                return skipped("folder vanished", f"{source}: folder vanished")
            frames, dropped = _read_frames_folder(source, empty_threshold, mask_threshold)
            if not frames and not dropped:
                return skipped("no image files", f"{source}: no image files")
            arr = np.stack(frames) if frames else np.zeros((0, *FRAME_SHAPE), np.uint8)
        if arr.shape[0] < min_frames:
            return skipped(f"fewer than min_frames={min_frames} usable frames",
                           f"{source}: only {arr.shape[0]} usable frame(s) (< min_frames={min_frames})")
        info = {"key": key, "source": source, "num_frames": int(arr.shape[0]), "dropped": dropped,
                "params": _params(min_frames, empty_threshold, mask_threshold)}
        _write_entry(Path(entries), key, arr, info)
        return {"key": key, "status": "ok", "num_frames": int(arr.shape[0]), "dropped": dropped}
    except FrameError as exc:
        return skipped(exc.cause, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad sequence must never stop the run
        return skipped(f"error ({exc.__class__.__name__})", f"{source}: {exc.__class__.__name__}: {exc}")


def _valid_entry(entries: Path, key: str, params: list) -> dict | None:
    try:
        info = json.loads((entries / f"{key}.json").read_text(encoding="utf-8"))
        arr = np.load(entries / f"{key}.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if info.get("params") != params:  # made with other settings or an older reader
        return None
    if arr.dtype != np.uint8 or arr.shape[1:] != FRAME_SHAPE or arr.shape[0] != info.get("num_frames"):
        return None
    return info


# --------------------------------------------------------------------------------- the job
def _meta_params(meta: dict) -> list:
    return [meta.get("min_frames"), meta.get("empty_threshold"), meta.get("mask_threshold"), meta.get("reader")]


def _load_previous(cache_dir: Path, params: list) -> tuple[SequenceCache | None, pd.DataFrame]:
    prev = None
    meta = read_meta(cache_dir)
    if meta is not None and _meta_params(meta) != params:
        log.info("%s was prepared with other settings or an older frame reader (min_frames, empty threshold, "
                 "mask threshold, reader = %s); preparing it again with %s", cache_dir, _meta_params(meta), params)
    elif meta is not None:
        try:
            prev = SequenceCache(cache_dir)
        except ValueError as exc:
            log.warning("ignoring the damaged previous cache pack in %s: %s", cache_dir, exc)
    report = pd.DataFrame(columns=REPORT_COLUMNS)
    rp = cache_dir / REPORT_FILE
    if prev is not None and rp.exists():
        try:
            report = pd.read_csv(rp, dtype=str, keep_default_na=False)
            if "cause" not in report.columns:
                report["cause"] = "skipped by an earlier run"
        except (OSError, ValueError):
            log.warning("could not read the previous report %s; its frame rows are not carried over", rp)
    return prev, report


def _run_tasks(tasks: list[tuple], workers: int, progress: bool) -> list[dict]:
    from tqdm import tqdm

    results: list[dict] = []
    bar = tqdm(total=len(tasks), desc="prepare", unit="seq", disable=not progress or not tasks)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                results.append(process_sequence(t))
                bar.update()
        else:
            chunk = max(1, min(16, len(tasks) // (workers * 8)))
            try:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    for r in pool.map(process_sequence, tasks, chunksize=chunk):
                        results.append(r)
                        bar.update()
            except BrokenProcessPool as exc:
                # A worker died (e.g. out of memory); what it finished is on disk and re-validated.
                log.error("a prepare worker died (%s); packing what is done, re-run to resume", exc)
    finally:
        bar.close()
    return results


def prepare_cache(
    roots: str | Path | Sequence[str | Path],
    layout: str = "auto",
    cache_dir: str | Path | None = None,
    workers: int = 2,
    min_frames: int = DEFAULT_MIN_FRAMES,
    progress: bool = True,
    empty_threshold: int = EMPTY_THRESHOLD,
    mask_threshold: float = DEFAULT_MASK_THRESHOLD,
) -> PrepareSummary:
    """Pretreat every sequence under ``roots`` into the cache at ``cache_dir`` (resumable).

    Frames are read by :func:`lstc_gait.data.frames.read_mask` (pickles by
    :func:`~lstc_gait.data.frames.read_pickle_sequence`). Bad frames and sequences are skipped and
    listed in ``cache_dir/prepare_report.csv``; the summary groups them by cause. A re-run reuses
    everything already done. Concurrent calls on one cache folder run one after the other.

    Args:
        roots: One raw root or several (one per camera); they must follow one layout
            (CASIA-B, Yu et al. 2006; OU-MVLP, Takemura et al. 2018; flat; OpenGait pickles).
        layout: ``auto`` or one of :data:`lstc_gait.data.layouts.LAYOUTS`.
        cache_dir: The cache folder (created). Required: None raises ValueError.
        workers: Worker processes (0 or 1: in this process).
        min_frames: Sequences with fewer usable frames are skipped.
        progress: Show progress bars and print the summary on stderr.
        empty_threshold: Frames whose 0/255 pixel sum is at most this are dropped (OpenGait: 10000).
        mask_threshold: Share of the mask encoding's maximum that is foreground, in (0, 1).

    Returns:
        The run's :class:`PrepareSummary` (its ``str()`` is the console summary).

    Raises:
        FileNotFoundError: A root does not exist or is not a folder (checked before anything is written).
        LayoutError: A root follows no (or not the given) layout, or roots mix layouts.
        EmptyCacheError: No sequence was usable; the one-line message names the most frequent
            skip causes and the report file (the empty cache and the report are still written).
        ValueError: No ``cache_dir``, ``min_frames`` < 1, or ``mask_threshold`` not in (0, 1).
        OSError: The cache folder or one of its files cannot be written.
    """
    if cache_dir is None:
        raise ValueError("prepare_cache needs a cache_dir")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    mask_threshold = check_mask_threshold(mask_threshold, "mask_threshold")
    for r in [roots] if isinstance(roots, str | os.PathLike) else list(roots):
        if not os.path.isdir(r):  # fail before creating anything
            raise FileNotFoundError(f"dataset root does not exist or is not a folder: {os.fspath(r)}")
    with exclusive_lock(Path(cache_dir) / ".prepare.lock"):
        return _prepare(roots, layout, Path(cache_dir), workers, min_frames, progress, empty_threshold,
                        mask_threshold)


def _prepare(
    roots: str | Path | Sequence[str | Path],
    layout: str,
    cache_dir: Path,
    workers: int,
    min_frames: int,
    progress: bool,
    empty_threshold: int,
    mask_threshold: float,
) -> PrepareSummary:
    t0 = time.perf_counter()
    root_list = [roots] if isinstance(roots, str | os.PathLike) else list(roots)
    root_list = [os.path.abspath(os.fspath(r)) for r in root_list]
    if layout == "auto":
        layouts = sorted({detect_layout(r) for r in root_list})
        if len(layouts) > 1:
            raise LayoutError(f"roots follow different layouts ({', '.join(layouts)}): {', '.join(root_list)}")
        layout = layouts[0]
    index = scan_roots(root_list, layout)
    entries = cache_dir / "entries"
    entries.mkdir(parents=True, exist_ok=True)
    # half-written files of an interrupted run (utils.fileio's temporary names, and older versions')
    for stale in [*entries.glob(".*.tmp"), *entries.glob("*.tmp-*")]:
        stale.unlink(missing_ok=True)

    index["key"] = [sequence_key(k, s) for k, s in zip(index["kind"], index["source"])]
    report_rows: list[dict] = []

    def row_info(r) -> dict:
        return {"subject": r.subject, "type": r.type, "view": r.view, "seq": r.seq, "key": r.key}

    dup = duplicate_rows(index)
    for r in index[dup].itertuples():
        report_rows.append({"level": "sequence", "cause": "duplicate of an earlier root's sequence",
                            "path": r.source, **row_info(r),
                            "reason": f"{r.source}: duplicate of subject {r.subject} type {r.type} "
                                      f"view {r.view} seq {r.seq} from an earlier root"})
    index = index[~dup].reset_index(drop=True)

    params = _params(min_frames, empty_threshold, mask_threshold)
    prev, prev_report = _load_previous(cache_dir, params)
    prev_pos = {k: i for i, k in enumerate(prev.keys)} if prev is not None else {}
    from_entries: dict[str, dict] = {}
    tasks = []
    for r in index.itertuples():
        if r.key in prev_pos:
            continue
        info = _valid_entry(entries, r.key, params)
        if info is not None:
            from_entries[r.key] = info
        else:
            tasks.append((r.key, r.source, r.kind, str(entries), min_frames, empty_threshold, mask_threshold))
    reused = len(index) - len(tasks)

    results = _run_tasks(tasks, workers, progress)
    by_key = {r.key: r for r in index.itertuples()}
    skipped_keys = set()
    for res in results:
        r = by_key[res["key"]]
        if res["status"] != "ok":
            skipped_keys.add(res["key"])
            report_rows.append({"level": "sequence", "cause": res["cause"], "path": r.source,
                                "reason": res["reason"], **row_info(r)})
            for p, cause, why in res["dropped"]:
                report_rows.append({"level": "frame", "cause": cause, "path": p, "reason": why, **row_info(r)})
            log.debug("skipped sequence: %s", res["reason"])
    # Entries written by this run (or an interrupted one) are re-validated from disk.
    for key in [t[0] for t in tasks]:
        if key not in skipped_keys:
            info = _valid_entry(entries, key, params)
            if info is not None:
                from_entries[key] = info

    keep = index[index["key"].isin(prev_pos.keys() | from_entries.keys())].reset_index(drop=True)
    for r in keep.itertuples():
        if r.key in from_entries:
            for p, cause, why in from_entries[r.key]["dropped"]:
                report_rows.append({"level": "frame", "cause": cause, "path": p, "reason": why, **row_info(r)})
                log.debug("skipped frame: %s", why)
    if len(prev_report) and prev_pos:
        carried = prev_report[(prev_report["level"] == "frame") & prev_report["key"].isin(
            set(keep["key"]) - from_entries.keys())]
        report_rows.extend(carried.to_dict("records"))

    same_as_prev = prev is not None and not from_entries and keep["key"].tolist() == prev.keys
    if not same_as_prev:
        def load(j: int) -> np.ndarray:
            key = keep.at[j, "key"]
            if key in from_entries:
                return np.load(entries / f"{key}.npy", mmap_mode="r")
            return prev.frames(prev_pos[key])

        extra = {"layout": layout, "roots": root_list, "min_frames": min_frames, "empty_threshold": empty_threshold,
                 "mask_threshold": mask_threshold, "reader": READER_VERSION}
        write_pack(cache_dir, keep, load, extra_meta=extra, progress=progress)
    shutil.rmtree(entries, ignore_errors=True)

    report = pd.DataFrame(report_rows, columns=REPORT_COLUMNS)
    report = report.sort_values(["level", "path"], kind="stable")
    buf = io.StringIO()
    report.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
    report_path = cache_dir / REPORT_FILE
    write_text_synced(report_path, buf.getvalue())

    final = SequenceCache(cache_dir)
    summary = PrepareSummary(
        cache_dir=cache_dir,
        layout=layout,
        sequences=len(final),
        frames=final.total_frames,
        processed=len(tasks),
        reused=reused,
        skipped_sequences=int((report["level"] == "sequence").sum()),
        skipped_frames=int((report["level"] == "frame").sum()),
        report_path=report_path,
        seconds=time.perf_counter() - t0,
        skips=[SkipGroup(*g) for g in summarise_report(report)],
    )
    log.info("%s", summary)
    if progress and not log.isEnabledFor(logging.INFO):  # under Hydra the log line is on the console
        print(summary, file=sys.stderr)
    if len(final) == 0:
        raise EmptyCacheError.from_report(cache_dir, report, what=f"under {', '.join(root_list)}")
    short = final.index["num_frames"] < max(min_frames, 10)
    if short.any():
        log.warning("%d sequence(s) have fewer than %d frames (kept; training repeats frames)",
                    int(short.sum()), max(min_frames, 10))
    return summary
