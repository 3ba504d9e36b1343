"""Enrolment and open-set identification of walkers from videos or silhouette folders.

Each input becomes one silhouette sequence, then exactly the training pretreatment
(:func:`lstc_gait.data.pretreat.pretreat_frame`, the central ``width`` columns) and the evaluation's
embedding code (:func:`lstc_gait.evaluation.embed.extract_embeddings`) with the checkpoint's model
(loaded by the platform's checkpoint reader). Enrolment appends to a :class:`~.gallery.Gallery`;
identification ranks the enrolled *subjects* by their best distance over their entries and accepts
a match when the distance is within the open-set threshold (calibrated on the gallery at a target
false-accept rate when ``threshold=auto``).
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IdentifyError
from .gallery import Gallery, sha256_file, sha256_files
from .video import SilhouetteOptions, Silhouettes, extract_silhouettes, is_video_file

CSV_COLUMNS = ("probe", "rank", "subject", "distance", "accepted")


@dataclass
class Source:
    """One input sequence: a video (RGB or masks) or a folder of silhouette frames.

    Attributes:
        path: the file or folder.
        kind: ``video`` or ``frames``.
        subject: the subject id (enrolment), or None.
    """

    path: Path
    kind: str
    subject: str | None = None


@dataclass
class PreparedInput:
    """A pretreated input: uint8 (T, 64, 64) frames and where they came from."""

    source: Source
    frames: np.ndarray
    content_hash: str
    info: dict[str, Any] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------- inputs


def _source_of(path: Path, subject: str | None) -> Source:
    if path.is_dir():
        return Source(path, "frames", subject)
    if path.is_file() and is_video_file(path):
        return Source(path, "video", subject)
    if not path.exists():
        raise IdentifyError(f"{path}: no such file or folder")
    raise IdentifyError(f"{path}: neither a video ({', '.join(sorted(e[1:] for e in _video_exts()))}), "
                        "a folder of silhouette frames, nor a CSV list")


def _video_exts():
    from .video import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS


def list_sources(path: str | os.PathLike, subject: str | None = None, need_subject: bool = False,
                 base_dir: str | os.PathLike | None = None) -> list[Source]:
    """The sequences an ``input=`` names: one video or frame folder, or every row of a CSV list.

    Args:
        path: a video, a folder of frames, or a ``.csv`` with a ``path`` column (and ``subject`` for
            enrolment); relative paths in the CSV are relative to the CSV's folder.
        subject: the subject of a single input (enrolment).
        need_subject: every source must have a subject (enrolment).
        base_dir: folder that a relative ``path`` is relative to (default: the working folder).

    Returns:
        The sources, each checked to exist.

    Raises:
        IdentifyError: a missing file (named), a CSV without the needed columns, a missing subject.
    """
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if p.suffix.lower() == ".csv":
        if not p.is_file():
            raise IdentifyError(f"{p}: no such CSV file")
        with open(p, newline="") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            if "path" not in cols or (need_subject and "subject" not in cols):
                need = "path,subject" if need_subject else "path"
                raise IdentifyError(f"{p}: a CSV list needs the header {need!r} (it has {','.join(cols) or 'none'})")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
        if not rows:
            raise IdentifyError(f"{p}: the CSV list has no rows")
        out = []
        for n, r in enumerate(rows, start=2):
            if not r.get("path"):
                raise IdentifyError(f"{p}: line {n} has an empty path")
            q = Path(r["path"]).expanduser()
            q = q if q.is_absolute() else p.parent / q
            subj = r.get("subject") or None
            if need_subject and not subj:
                raise IdentifyError(f"{p}: line {n} ({q}) has no subject")
            if not q.exists():
                raise IdentifyError(f"{q}: no such file or folder (listed in {p}, line {n})")
            out.append(_source_of(q, subj))
        return out
    src = _source_of(p, None if subject is None else str(subject))
    if need_subject and not src.subject:
        raise IdentifyError(f"{p}: give the walker's subject=ID (or enrol from a CSV with columns path,subject)")
    return [src]


def read_frame_folder(folder: str | os.PathLike) -> list[np.ndarray]:
    """The silhouette frames of one folder as 2-D uint8 arrays, in name order (the training reader).

    Raises:
        IdentifyError: no image in the folder, or an unreadable frame (named).
    """
    from lstc_gait.data.frames import read_masks
    from lstc_gait.data.layouts import list_frames

    paths = list_frames(folder)
    if not paths:
        raise IdentifyError(f"{folder}: no image files (a folder of silhouette frames is expected)")
    masks = read_masks(paths)
    for m in masks:
        if isinstance(m, Exception):
            raise IdentifyError(str(m)) from m
    return masks


def pretreat_sequence(masks: Sequence[np.ndarray], name: str) -> np.ndarray:
    """Raw silhouettes -> uint8 (T, 64, 64) with the training pretreatment; empty frames are dropped.

    Raises:
        IdentifyError: fewer than 1 usable frame.
    """
    from lstc_gait.data.pretreat import pretreat_frame

    out = [f for f in (pretreat_frame(np.asarray(m, dtype=np.uint8)) for m in masks) if f is not None]
    if not out:
        raise IdentifyError(f"{name}: no frame with a silhouette left after pretreatment")
    return np.stack(out)


def load_sequence(source: Source, opts: SilhouetteOptions, background: str | os.PathLike | None = None,
                  min_frames: int = 5) -> PreparedInput:
    """Silhouettes of one source, pretreated, with the content hash of its bytes.

    Raises:
        IdentifyError: unreadable input or too few usable frames (named).
    """
    from lstc_gait.data.layouts import list_frames

    info: dict[str, Any] = {}
    if source.kind == "video":
        sil: Silhouettes = extract_silhouettes(source.path, background, opts)
        masks = list(sil.masks)
        content = sha256_file(source.path)
        info = sil.summary()
    else:
        masks = read_frame_folder(source.path)
        content = sha256_files(list_frames(source.path))
        info = {"kind": "frames", "total_frames": len(masks)}
    frames = pretreat_sequence(masks, str(source.path))
    if len(frames) < min_frames:
        raise IdentifyError(f"{source.path}: only {len(frames)} usable frame(s) (need {min_frames})")
    return PreparedInput(source, frames, content, info)


# ------------------------------------------------------------------------------------------------ model


@dataclass
class Embedder:
    """A loaded checkpoint ready to embed sequences.

    Attributes:
        model: eval-mode model returning ``{"embedding": ...}``.
        width: input width (central columns of the 64x64 frames).
        checkpoint: ``{"path", "sha256"}``.
        model_config: the checkpoint's model config, when it has one.
        device: torch device string.
    """

    model: Any
    width: int
    checkpoint: dict[str, str]
    model_config: dict[str, Any] | None
    device: str = "cpu"
    batch_size: int = 4

    def embed(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings float32 (N, D) of pretreated sequences (uint8 (T, 64, 64) each)."""
        from lstc_gait.evaluation.embed import extract_embeddings

        return extract_embeddings(self.model, _InMemorySequences(sequences, self.width), batch_size=self.batch_size,
                                  device=self.device, progress=False)


class _InMemorySequences:
    """Dataset of pretreated sequences: item i -> (uint8 tensor (T, 64, width), i), as the test datasets."""

    def __init__(self, sequences: Sequence[np.ndarray], width: int):
        self.sequences = list(sequences)
        self.width = int(width)
        self.lengths = np.asarray([len(s) for s in self.sequences], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int):
        import torch

        from lstc_gait.data.pretreat import center_crop_width

        return torch.from_numpy(np.ascontiguousarray(center_crop_width(self.sequences[i], self.width))), int(i)


def load_embedder(checkpoint: str | os.PathLike, device: str = "auto", use_ema: bool = True) -> Embedder:
    """Load a checkpoint with the platform's reader (platform or original lstc-gait format).

    Raises:
        IdentifyError: the checkpoint is missing or unusable (the message names it).
    """
    from lstc_gait.engine.checkpoint import load_model
    from lstc_gait.engine.device import resolve_device

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise IdentifyError(f"{path}: no such checkpoint file")
    loaded = load_model(path, use_ema=use_ema)  # CheckpointError: a UserError naming the file
    dev = resolve_device(device)
    model_cfg = (loaded.config or {}).get("model") if loaded.config else {"reference": loaded.extra}
    return Embedder(loaded.model.to(dev).eval(), int(loaded.input_size[1]),
                    {"path": str(path.resolve()), "sha256": sha256_file(path)}, model_cfg, str(dev))


# ---------------------------------------------------------------------------------------------- enrol


@dataclass
class EnrolReport:
    """What an enrolment did: entries added, sources already there (skipped), the threshold now."""

    added: list[dict[str, Any]]
    skipped: list[str]
    gallery_size: int
    subjects: int
    threshold: dict[str, Any] | None


def _distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    from lstc_gait.evaluation.metrics import pairwise_distance

    return pairwise_distance(a, b, metric).numpy().astype(np.float64)


def calibrate_threshold(gallery: Gallery, far: float) -> dict[str, Any] | None:
    """Open-set threshold from the gallery: genuine vs impostor distances among its entries at ``far``.

    Genuine pairs are two entries of one subject, impostor pairs entries of two subjects. Returns
    None when there are fewer than two subjects (no impostor pair).
    """
    from lstc_gait.evaluation.verification import threshold_at_far

    subj = gallery.subjects
    if len(set(subj.tolist())) < 2:
        return None
    d = _distances(gallery.item_embeddings, gallery.item_embeddings, gallery.metric)
    iu = np.triu_indices(len(subj), k=1)
    same = (subj[:, None] == subj[None, :])[iu]
    rec = threshold_at_far(d[iu][same], d[iu][~same], far)
    rec.update({"method": "auto", "entries": len(subj), "subjects": len(set(subj.tolist())),
                "calibrated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return rec


def enroll(checkpoint: str | os.PathLike, gallery_dir: str | os.PathLike, input_path: str | os.PathLike,
           subject: str | None = None, background: str | os.PathLike | None = None,
           opts: SilhouetteOptions | None = None, metric: str = "euclidean", far: float = 0.01,
           device: str = "auto", min_frames: int = 5, base_dir: str | os.PathLike | None = None) -> EnrolReport:
    """Enrol one input or a CSV list into a gallery folder (created when missing).

    Every input is read and embedded before the gallery is touched: one bad input aborts the whole
    enrolment with the gallery unchanged. Sources whose content is already enrolled are skipped.
    The gallery's threshold is recalibrated at ``far`` after every enrolment.

    Args:
        checkpoint: the model checkpoint (platform or original lstc-gait format).
        gallery_dir: the gallery folder.
        input_path: video, frames folder, or CSV ``path,subject``.
        subject: subject id for a single input.
        background: empty-scene image for RGB videos (optional).
        opts: silhouette extraction settings.
        metric: ``euclidean`` or ``cosine``; fixed for a gallery at its creation.
        far: target false-accept rate of the stored threshold.
        device: ``auto`` | ``cpu`` | ``cuda[:N]``.
        min_frames: fewer usable frames in an input is an error.
        base_dir: folder relative input paths are relative to.

    Returns:
        :class:`EnrolReport`.

    Raises:
        IdentifyError: bad input, a gallery from another checkpoint, ...; the gallery is unchanged.
    """
    from lstc_gait.utils.locking import exclusive_lock

    opts = opts or SilhouetteOptions()
    sources = list_sources(input_path, subject, need_subject=True, base_dir=base_dir)
    embedder = load_embedder(checkpoint, device)
    gallery_dir = Path(gallery_dir)
    # fail early (before the slow part) on a gallery of another checkpoint
    Gallery.open_or_create(gallery_dir, embedder.checkpoint, embedder.model_config, metric)
    seqs = [load_sequence(s, opts, background, min_frames) for s in sources]
    gallery_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(gallery_dir / ".lock"):
        gal = Gallery.open_or_create(gallery_dir, embedder.checkpoint, embedder.model_config, metric)
        new, skipped, seen = [], [], set()
        for s in seqs:
            if gal.find(s.content_hash) is not None or s.content_hash in seen:
                skipped.append(str(s.source.path))
                continue
            seen.add(s.content_hash)
            new.append(s)
        added: list[dict[str, Any]] = []
        if new:
            emb = embedder.embed([s.frames for s in new])
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            added = [{"subject": str(s.source.subject), "source": str(Path(s.source.path).resolve()),
                      "content_hash": s.content_hash, "frames_used": int(len(s.frames)), "time": stamp,
                      "input": s.info} for s in new]
            gal.add(emb, added)
            gal.threshold = calibrate_threshold(gal, far)
            gal.save()
        return EnrolReport(added, skipped, len(gal), len(set(gal.subjects.tolist())), gal.threshold)


# ------------------------------------------------------------------------------------------- identify


@dataclass
class Identification:
    """Ranked subjects per probe and the threshold used.

    Attributes:
        rows: one dict per (probe, rank): probe, rank, subject, distance, accepted.
        threshold: the threshold value used.
        threshold_info: how it was obtained (the gallery's calibration record, or ``{"method": "fixed"}``).
    """

    rows: list[dict[str, Any]]
    threshold: float
    threshold_info: dict[str, Any]


def rank_subjects(distances: np.ndarray, subjects: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
    """Per probe, the enrolled subjects ordered by their best (smallest) distance over their entries.

    Args:
        distances: float (P, N) probe x gallery-entry distances.
        subjects: str (N,) subject of each entry.
        top_k: rows per probe at most.

    Returns:
        For each probe, up to ``top_k`` ``(subject, distance)`` pairs, closest first (ties: subject id).
    """
    names = sorted(set(subjects.tolist()))
    best = np.stack([distances[:, subjects == s].min(axis=1) for s in names], axis=1)  # (P, S)
    out = []
    for row in best:
        order = sorted(range(len(names)), key=lambda j: (row[j], names[j]))[:top_k]
        out.append([(names[j], float(row[j])) for j in order])
    return out


def identify(gallery_dir: str | os.PathLike, input_path: str | os.PathLike, out_csv: str | os.PathLike | None,
             checkpoint: str | os.PathLike | None = None, top_k: int = 5, threshold: str | float = "auto",
             far: float = 0.01, background: str | os.PathLike | None = None,
             opts: SilhouetteOptions | None = None, device: str = "auto", min_frames: int = 5,
             base_dir: str | os.PathLike | None = None) -> Identification:
    """Identify the walkers of one input or a CSV list (column ``path``) against a gallery.

    Args:
        gallery_dir: the gallery folder.
        input_path: video, frames folder, or CSV with column ``path``.
        out_csv: CSV to write (columns ``probe, rank, subject, distance, accepted``); None: none.
        checkpoint: model checkpoint; default the gallery's. Another checkpoint than the gallery's is refused.
        top_k: rows per probe.
        threshold: ``auto`` (calibrated on the gallery at ``far``; stored there) or a distance.
        far: target false-accept rate for ``auto``.
        background: empty-scene image for RGB videos.
        opts: silhouette extraction settings.
        device: torch device.
        min_frames: fewer usable frames in a probe is an error.
        base_dir: folder relative input paths are relative to.

    Returns:
        :class:`Identification`.

    Raises:
        IdentifyError: bad input, an empty gallery, a checkpoint that is not the gallery's, ...
    """
    from lstc_gait.utils.locking import exclusive_lock

    if int(top_k) < 1:
        raise IdentifyError(f"top_k must be >= 1, got {top_k}")
    gallery_dir = Path(gallery_dir)
    gal = Gallery.open(gallery_dir)
    if len(gal) == 0:
        raise IdentifyError(f"{gallery_dir}: the gallery is empty; enrol someone first")
    sources = list_sources(input_path, base_dir=base_dir)
    ckpt = Path(checkpoint).expanduser() if checkpoint else Path(gal.checkpoint["path"])
    if not ckpt.is_file():
        raise IdentifyError(f"{ckpt}: no such checkpoint file (the gallery's; pass checkpoint=PATH where it lies now)")
    embedder = load_embedder(ckpt, device)
    if embedder.checkpoint["sha256"] != gal.checkpoint.get("sha256"):
        raise IdentifyError(f"{ckpt}: not the checkpoint gallery {gallery_dir} was built with "
                            f"({gal.checkpoint.get('path')}); its embeddings are not comparable")
    opts = opts or SilhouetteOptions()
    seqs = [load_sequence(s, opts, background, min_frames) for s in sources]
    info = _threshold(gal, threshold, far)
    if info.get("method") == "auto" and (gal.threshold or {}).get("far") != info.get("far"):
        with exclusive_lock(gallery_dir / ".lock"):  # store the calibration for this far
            fresh = Gallery.open(gallery_dir)
            if fresh.generation == gal.generation:
                fresh.threshold = info
                fresh.save()
    value = float(info["value"])
    emb = embedder.embed([s.frames for s in seqs])
    d = _distances(emb, gal.item_embeddings, gal.metric)
    ranked = rank_subjects(d, gal.subjects, int(top_k))
    rows = []
    for s, ranking in zip(seqs, ranked):
        for r, (subj, dist) in enumerate(ranking, start=1):
            rows.append({"probe": str(s.source.path), "rank": r, "subject": subj, "distance": round(dist, 6),
                         "accepted": bool(dist <= value)})
    if out_csv is not None:
        write_csv(rows, out_csv)
    return Identification(rows, value, info)


def _threshold(gal: Gallery, threshold: str | float, far: float) -> dict[str, Any]:
    if isinstance(threshold, str) and threshold.strip().lower() == "auto":
        if gal.threshold and gal.threshold.get("far") == float(far) and gal.threshold.get("entries") == len(gal):
            return dict(gal.threshold)
        rec = calibrate_threshold(gal, float(far))
        if rec is None:
            raise IdentifyError(f"{gal.folder}: threshold=auto needs at least two enrolled subjects "
                                "(give threshold=DISTANCE instead)")
        return rec
    try:
        value = float(threshold)
    except (TypeError, ValueError) as exc:
        raise IdentifyError(f"threshold={threshold!r} is neither 'auto' nor a number") from exc
    if not np.isfinite(value) or value < 0:
        raise IdentifyError(f"threshold={threshold!r} must be a finite distance >= 0")
    return {"method": "fixed", "value": value}


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write identification rows as CSV (columns ``probe, rank, subject, distance, accepted``), atomically."""
    import io

    from .gallery import _atomic_write

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (str(r[k]).lower() if k == "accepted" else r[k]) for k in CSV_COLUMNS})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = buf.getvalue()
    _atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    return out


def format_ranking(result: Identification) -> str:
    """The identification as a printable table per probe, with the threshold."""
    from tabulate import tabulate

    lines = []
    th = result.threshold_info
    how = (f"auto at FAR {th.get('far'):g} from {th.get('genuine_pairs')} genuine / {th.get('impostor_pairs')} "
           f"impostor gallery pairs (gallery TAR {th.get('tar') if th.get('tar') is None else format(th['tar'], '.2f')})"
           if th.get("method") == "auto" else "fixed")
    lines.append(f"threshold {result.threshold:.4f} ({how})")
    probes: dict[str, list] = {}
    for r in result.rows:
        probes.setdefault(r["probe"], []).append(r)
    for probe, rows in probes.items():
        lines.append(f"\n{probe}")
        lines.append(tabulate([[r["rank"], r["subject"], f"{r['distance']:.4f}", "yes" if r["accepted"] else "no"]
                               for r in rows], headers=["rank", "subject", "distance", "accepted"]))
    return "\n".join(lines)
