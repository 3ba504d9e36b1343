"""The gallery: enrolled embeddings in a folder, written atomically, tied to one checkpoint.

Layout of ``DIR``::

    gallery.json          format, checkpoint (path, sha256), model config, distance metric,
                          embedding size, threshold (value, far, how calibrated), entries[]:
                          {subject, source, content_hash, frames_used, time}
    embeddings-<n>.npy    float32 (N, D), row i = entries[i]; <n> counts the writes

A write saves a new ``embeddings-<n>.npy`` first, then replaces ``gallery.json`` (the commit point,
through ``os.replace``), then removes the previous embeddings file. A failure at any point leaves the
previous ``gallery.json`` and the file it names untouched, so nothing enrolled is ever lost.
Writers take an exclusive lock on ``DIR/.lock``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IdentifyError

GALLERY_FORMAT = "lstc_gait.gallery/1"
GALLERY_FILE = "gallery.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: Iterable[str | os.PathLike]) -> str:
    """Hex SHA-256 over the bytes of several files in the given order (a folder of frames)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file beside ``path`` that replaces it on success (utils.fileio)."""
    from lstc_gait.utils.fileio import atomic_output

    with atomic_output(path) as tmp:
        write(str(tmp))


@dataclass
class Gallery:
    """An in-memory gallery (read with :meth:`open`, written with :meth:`save`).

    Attributes:
        folder: the gallery folder.
        checkpoint: ``{"path", "sha256"}`` of the model that made the embeddings.
        model_config: the checkpoint's model config (for humans; the hash decides compatibility).
        metric: distance metric (``euclidean`` or ``cosine``).
        entries: one dict per enrolled sequence.
        embeddings: float32 (N, D) as stored; part embeddings (N, D, P) are kept flattened to
            (N, D * P) and :attr:`item_shape` restores them.
        item_shape: one entry's embedding shape, ``(D,)`` or ``(D, P)``; () before the first entry.
        threshold: the open-set threshold record, or None before calibration.
        generation: how many times the gallery was written.
    """

    folder: Path
    checkpoint: dict[str, str]
    model_config: dict[str, Any] | None
    metric: str = "euclidean"
    entries: list[dict[str, Any]] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    threshold: dict[str, Any] | None = None
    generation: int = 0
    item_shape: tuple[int, ...] = ()

    # ------------------------------------------------------------------------------------------ reading
    @classmethod
    def open(cls, folder: str | os.PathLike) -> Gallery:
        """Read a gallery folder.

        Raises:
            IdentifyError: no gallery there, or its files are damaged or inconsistent.
        """
        folder = Path(folder)
        meta_path = folder / GALLERY_FILE
        if not meta_path.is_file():
            raise IdentifyError(f"{folder}: not a gallery (no {GALLERY_FILE}); enrol someone first")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise IdentifyError(f"{meta_path}: unreadable gallery file ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != GALLERY_FORMAT:
            raise IdentifyError(f"{meta_path}: not a {GALLERY_FORMAT} gallery")
        entries = list(meta.get("entries") or [])
        emb_name = meta.get("embeddings_file")
        if entries:
            try:
                emb = np.load(folder / str(emb_name), allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise IdentifyError(f"{folder / str(emb_name)}: unreadable gallery embeddings ({exc})") from exc
            if emb.ndim != 2 or emb.shape[0] != len(entries):
                raise IdentifyError(f"{folder / str(emb_name)}: {emb.shape} embeddings for {len(entries)} entries")
        else:
            emb = np.zeros((0, int(meta.get("embedding_dim") or 0)), np.float32)
        item_shape = tuple(int(v) for v in meta.get("item_shape") or emb.shape[1:])
        return cls(folder, dict(meta["checkpoint"]), meta.get("model_config"), str(meta.get("metric", "euclidean")),
                   entries, emb.astype(np.float32), meta.get("threshold"), int(meta.get("generation", 0)),
                   item_shape)

    @classmethod
    def open_or_create(cls, folder: str | os.PathLike, checkpoint: dict[str, str],
                       model_config: dict[str, Any] | None, metric: str) -> Gallery:
        """The gallery in ``folder``, or a new empty one for this checkpoint when there is none.

        Raises:
            IdentifyError: the folder holds a gallery made with another checkpoint or metric.
        """
        folder = Path(folder)
        if not (folder / GALLERY_FILE).exists():
            return cls(folder, dict(checkpoint), model_config, metric)
        gal = cls.open(folder)
        if gal.checkpoint.get("sha256") != checkpoint.get("sha256"):
            raise IdentifyError(
                f"{folder}: gallery was built with checkpoint {gal.checkpoint.get('path')} "
                f"(sha256 {str(gal.checkpoint.get('sha256'))[:12]}), not {checkpoint.get('path')} "
                f"(sha256 {str(checkpoint.get('sha256'))[:12]}); embeddings of two models cannot be mixed: "
                "use another gallery folder")
        if gal.metric != metric:
            raise IdentifyError(f"{folder}: gallery uses metric={gal.metric}, not {metric}")
        return gal

    # ------------------------------------------------------------------------------------------- content
    def __len__(self) -> int:
        return len(self.entries)

    @property
    def subjects(self) -> np.ndarray:
        """Subject id of every entry, str (N,)."""
        return np.asarray([str(e["subject"]) for e in self.entries])

    def find(self, content_hash: str) -> dict[str, Any] | None:
        """The entry with this content hash, or None."""
        for e in self.entries:
            if e.get("content_hash") == content_hash:
                return e
        return None

    @property
    def item_embeddings(self) -> np.ndarray:
        """The embeddings in the model's own shape, float32 (N, D) or (N, D, P) (part-wise distances)."""
        return self.embeddings.reshape(len(self.embeddings), *self.item_shape) if self.item_shape else self.embeddings

    def add(self, embeddings: np.ndarray, entries: Sequence[dict[str, Any]]) -> None:
        """Append entries (in memory; :meth:`save` writes them). The threshold becomes stale.

        Args:
            embeddings: float32 (len(entries), D) or (len(entries), D, P), the model's embeddings.
            entries: One record per embedding (subject, source, content hash, frames, time).

        Raises:
            IdentifyError: The embeddings' shape differs from the gallery's.
        """
        raw = np.asarray(embeddings, dtype=np.float32)
        shape = tuple(int(v) for v in raw.shape[1:])
        if len(self.entries) and self.item_shape and shape != tuple(self.item_shape):
            raise IdentifyError(f"{self.folder}: embeddings of shape {shape} do not fit the gallery's "
                                f"{tuple(self.item_shape)}")
        emb = raw.reshape(len(entries), -1)
        if len(self.entries) and emb.shape[1] != self.embeddings.shape[1]:
            raise IdentifyError(f"{self.folder}: embeddings of size {emb.shape[1]} do not fit the gallery's "
                                f"{self.embeddings.shape[1]}")
        self.item_shape = shape
        self.embeddings = emb if not len(self.entries) else np.concatenate([self.embeddings, emb])
        self.entries.extend(dict(e) for e in entries)

    # ------------------------------------------------------------------------------------------- writing
    def save(self) -> None:
        """Write the gallery atomically (see the module docstring); the old version stays until the commit."""
        self.folder.mkdir(parents=True, exist_ok=True)
        previous = None
        if (self.folder / GALLERY_FILE).is_file():
            try:
                previous = json.loads((self.folder / GALLERY_FILE).read_text()).get("embeddings_file")
            except (OSError, json.JSONDecodeError):
                previous = None
        self.generation += 1
        emb_name = f"embeddings-{self.generation:06d}.npy"
        _atomic_write(self.folder / emb_name, lambda tmp: _save_npy(tmp, self.embeddings))
        meta = {
            "format": GALLERY_FORMAT,
            "generation": self.generation,
            "checkpoint": self.checkpoint,
            "model_config": self.model_config,
            "metric": self.metric,
            "embedding_dim": int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0,
            "item_shape": list(self.item_shape),
            "threshold": self.threshold,
            "embeddings_file": emb_name,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "entries": self.entries,
        }
        text = json.dumps(meta, indent=1, default=str)
        _atomic_write(self.folder / GALLERY_FILE, lambda tmp: Path(tmp).write_text(text))
        if previous and previous != emb_name:
            (self.folder / previous).unlink(missing_ok=True)


def _save_npy(tmp: str, arr: np.ndarray) -> None:
    with open(tmp, "wb") as fh:
        np.save(fh, np.asarray(arr, dtype=np.float32))
