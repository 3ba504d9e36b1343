"""Raw silhouettes -> cache: a parallel, resumable, atomic job with a report of everything skipped.

Each sequence is pretreated by a worker process and written to ``CACHE/entries/<key>.npy`` (+ a
small JSON holding what was dropped) through a temporary file and ``os.replace``; the JSON goes
last and marks the entry valid. At the end all valid sequences are packed into one memory-mapped
file (see :mod:`lstc_gait.data.cache`). A re-run reuses the current pack and every valid entry,
so an interrupted run loses at most the sequences in flight. Bad input (unreadable image, empty
frame, odd size or mode, empty or too-short sequence) is skipped, counted, warned about and
listed in ``CACHE/prepare_report.csv``; it never stops the run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import (
    FRAME_SHAPE,
    REPORT_FILE,
    SequenceCache,
    atomic_write_text,
    read_meta,
    write_pack,
)
from .layouts import LayoutError, detect_layout, duplicate_rows, list_frames, scan_roots
from .locking import exclusive_lock
from .pretreat import EMPTY_THRESHOLD, FrameError, pretreat_frame, read_silhouette

log = logging.getLogger(__name__)

DEFAULT_MIN_FRAMES = 5
REPORT_COLUMNS = ["level", "path", "reason", "subject", "type", "view", "seq", "key"]
_MAX_WARNINGS = 20


@dataclass
class PrepareSummary:
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

    def __str__(self) -> str:
        return (
            f"cache {self.cache_dir} ({self.layout}): {self.sequences} sequences, {self.frames} frames; "
            f"{self.processed} pretreated now, {self.reused} reused; skipped {self.skipped_sequences} "
            f"sequences and {self.skipped_frames} frames (see {self.report_path}); {self.seconds:.1f} s"
        )


def sequence_key(kind: str, source: str) -> str:
    """Stable file-system-safe id of one raw sequence (its absolute source path)."""
    return hashlib.sha1(f"{kind}\0{os.path.abspath(source)}".encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------ one sequence
def _read_frames_folder(folder: str, empty_threshold: int) -> tuple[list[np.ndarray], list[tuple[str, str]]]:
    paths = list_frames(folder)
    decoded: list[tuple[str, np.ndarray]] = []
    dropped: list[tuple[str, str]] = []
    for p in paths:
        try:
            decoded.append((p, read_silhouette(p)))
        except FrameError as exc:
            dropped.append((p, str(exc)))
    if not decoded:
        return [], dropped
    # The sequence's frame size is its most common one; a frame of another size is a stray file.
    sizes = Counter(img.shape for _, img in decoded)
    expected = sizes.most_common(1)[0][0]
    frames: list[np.ndarray] = []
    for p, img in decoded:
        if img.shape != expected:
            dropped.append((p, f"{p}: unexpected image size {img.shape[1]}x{img.shape[0]} "
                               f"(the sequence's frames are {expected[1]}x{expected[0]})"))
            continue
        out = pretreat_frame(img, empty_threshold=empty_threshold)
        if out is None:
            dropped.append((p, f"{p}: empty frame (pixel sum <= {empty_threshold})"))
        else:
            frames.append(out)
    return frames, dropped


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays only: a pickle naming any other callable is refused, not run."""

    def find_class(self, module: str, name: str):
        if module == "numpy" or module.startswith("numpy.") or (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name} (only numpy arrays are accepted)")


def _read_pickle(path: str) -> np.ndarray:
    if os.path.isdir(path):
        raise FrameError(f"{path}: folder holds no .pkl file")
    try:
        with open(path, "rb") as fh:
            arr = _ArrayUnpickler(fh).load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise FrameError(f"{path}: unreadable pickle ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise FrameError(f"{path}: pickle holds {type(arr).__name__}, expected a numpy uint8 array [T, 64, 64]")
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[1:] != FRAME_SHAPE:
        raise FrameError(f"{path}: array is {arr.dtype} {tuple(arr.shape)}, expected uint8 [T, 64, 64] "
                         "(OpenGait's pretreated form)")
    return np.ascontiguousarray(arr)


def _write_entry(entries: Path, key: str, arr: np.ndarray, info: dict) -> None:
    tag = f"tmp-{os.getpid()}"
    npy = entries / f"{key}.npy"
    tmp = entries / f"{key}.npy.{tag}"
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, npy)
    # The JSON is written last: an entry without it is not valid (interrupted write).
    atomic_write_text(entries / f"{key}.json", json.dumps(info))


def process_sequence(task: tuple) -> dict:
    """Pretreat one sequence and write its entry; never raises (errors become a skip reason)."""
    key, source, kind, entries, min_frames, empty_threshold = task
    dropped: list[tuple[str, str]] = []
    try:
        if kind == "pickle":
            arr = _read_pickle(source)
        else:
            if not os.path.isdir(source):
                return {"key": key, "status": "skipped", "reason": f"{source}: folder vanished", "dropped": []}
            frames, dropped = _read_frames_folder(source, empty_threshold)
            if not frames and not dropped:
                return {"key": key, "status": "skipped", "reason": f"{source}: no image files", "dropped": []}
            arr = np.stack(frames) if frames else np.zeros((0, *FRAME_SHAPE), np.uint8)
        if arr.shape[0] < min_frames:
            return {"key": key, "status": "skipped", "dropped": dropped,
                    "reason": f"{source}: only {arr.shape[0]} usable frame(s) (< min_frames={min_frames})"}
        info = {"key": key, "source": source, "num_frames": int(arr.shape[0]), "dropped": dropped,
                "params": [min_frames, empty_threshold]}
        _write_entry(Path(entries), key, arr, info)
        return {"key": key, "status": "ok", "num_frames": int(arr.shape[0]), "dropped": dropped}
    except FrameError as exc:
        return {"key": key, "status": "skipped", "reason": str(exc), "dropped": dropped}
    except Exception as exc:  # noqa: BLE001 - one bad sequence must never stop the run
        return {"key": key, "status": "skipped", "dropped": dropped,
                "reason": f"{source}: {exc.__class__.__name__}: {exc}"}


def _valid_entry(entries: Path, key: str, params: list) -> dict | None:
    try:
        info = json.loads((entries / f"{key}.json").read_text(encoding="utf-8"))
        arr = np.load(entries / f"{key}.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if info.get("params") != params:  # made with another min_frames / empty threshold
        return None
    if arr.dtype != np.uint8 or arr.shape[1:] != FRAME_SHAPE or arr.shape[0] != info.get("num_frames"):
        return None
    return info


# --------------------------------------------------------------------------------- the job
def _load_previous(cache_dir: Path, params: list) -> tuple[SequenceCache | None, pd.DataFrame]:
    prev = None
    meta = read_meta(cache_dir)
    if meta is not None and [meta.get("min_frames"), meta.get("empty_threshold")] != params:
        log.info("%s was prepared with other settings (min_frames, empty threshold = %s); preparing "
                 "it again with %s", cache_dir, [meta.get("min_frames"), meta.get("empty_threshold")], params)
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
) -> PrepareSummary:
    """Pretreat every sequence under ``roots`` into the cache at ``cache_dir`` (resumable).

    Bad frames and sequences are skipped and listed in ``cache_dir/prepare_report.csv``; a re-run
    reuses everything already done. Concurrent calls on one cache folder run one after the other.
    """
    if cache_dir is None:
        raise ValueError("prepare_cache needs a cache_dir")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    for r in [roots] if isinstance(roots, str | os.PathLike) else list(roots):
        if not os.path.isdir(r):  # fail before creating anything
            raise FileNotFoundError(f"dataset root does not exist or is not a folder: {os.fspath(r)}")
    with exclusive_lock(Path(cache_dir) / ".prepare.lock"):
        return _prepare(roots, layout, Path(cache_dir), workers, min_frames, progress, empty_threshold)


def _prepare(
    roots: str | Path | Sequence[str | Path],
    layout: str,
    cache_dir: Path,
    workers: int,
    min_frames: int,
    progress: bool,
    empty_threshold: int,
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
    for stale in entries.glob("*.tmp-*"):  # half-written files of an interrupted run
        stale.unlink(missing_ok=True)

    index["key"] = [sequence_key(k, s) for k, s in zip(index["kind"], index["source"])]
    report_rows: list[dict] = []

    def row_info(r) -> dict:
        return {"subject": r.subject, "type": r.type, "view": r.view, "seq": r.seq, "key": r.key}

    dup = duplicate_rows(index)
    for r in index[dup].itertuples():
        report_rows.append({"level": "sequence", "path": r.source, **row_info(r),
                            "reason": f"{r.source}: duplicate of subject {r.subject} type {r.type} "
                                      f"view {r.view} seq {r.seq} from an earlier root"})
    index = index[~dup].reset_index(drop=True)

    params = [min_frames, empty_threshold]
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
            tasks.append((r.key, r.source, r.kind, str(entries), min_frames, empty_threshold))
    reused = len(index) - len(tasks)

    results = _run_tasks(tasks, workers, progress)
    by_key = {r.key: r for r in index.itertuples()}
    warned = 0
    skipped_keys = set()
    for res in results:
        r = by_key[res["key"]]
        if res["status"] != "ok":
            skipped_keys.add(res["key"])
            report_rows.append({"level": "sequence", "path": r.source, "reason": res["reason"], **row_info(r)})
            for p, why in res["dropped"]:
                report_rows.append({"level": "frame", "path": p, "reason": why, **row_info(r)})
            if warned < _MAX_WARNINGS:
                log.warning("skipped sequence: %s", res["reason"])
                warned += 1
    # Entries written by this run (or an interrupted one) are re-validated from disk.
    for key in [t[0] for t in tasks]:
        if key not in skipped_keys:
            info = _valid_entry(entries, key, params)
            if info is not None:
                from_entries[key] = info

    keep = index[index["key"].isin(prev_pos.keys() | from_entries.keys())].reset_index(drop=True)
    for r in keep.itertuples():
        if r.key in from_entries:
            for p, why in from_entries[r.key]["dropped"]:
                report_rows.append({"level": "frame", "path": p, "reason": why, **row_info(r)})
                # Empty frames are routine (walk-in/out); only real damage is worth a warning.
                if "empty frame" not in why and warned < _MAX_WARNINGS:
                    log.warning("skipped frame: %s", why)
                    warned += 1
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

        extra = {"layout": layout, "roots": root_list, "min_frames": min_frames, "empty_threshold": empty_threshold}
        write_pack(cache_dir, keep, load, extra_meta=extra, progress=progress)
    shutil.rmtree(entries, ignore_errors=True)

    report = pd.DataFrame(report_rows, columns=REPORT_COLUMNS)
    report = report.sort_values(["level", "path"], kind="stable")
    buf = io.StringIO()
    report.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
    report_path = cache_dir / REPORT_FILE
    atomic_write_text(report_path, buf.getvalue())

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
    )
    if len(final) == 0:
        log.warning("no usable sequence under %s: the cache %s is empty (see %s)", ", ".join(root_list),
                    cache_dir, report_path)
    short = final.index["num_frames"] < max(min_frames, 10)
    if short.any():
        log.warning("%d sequence(s) have fewer than %d frames (kept; training repeats frames)",
                    int(short.sum()), max(min_frames, 10))
    log.info("%s", summary)
    if progress:
        print(summary, file=sys.stderr)
    return summary
