"""Embeddings files (``.npz``): what ``python -m lstc_gait.extract`` writes and ``evaluate embeddings=`` reads.

An embeddings file holds ``embeddings`` float32 (N, D) or (N, C, parts), ``subjects``, ``types``,
``views`` (N,) unicode strings, optional extra per-row arrays (``seqs``) and ``meta``, a JSON string
(checkpoint, weights, dataset, split, protocol). Any other framework can write one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lstc_gait.errors import UserError
from lstc_gait.utils.fileio import atomic_output

NPZ_KEYS = ("embeddings", "subjects", "types", "views")


class EmbeddingsFileError(UserError, ValueError):
    """An embeddings file that is missing, unreadable or malformed (the message names the file)."""


@dataclass
class EmbeddingSet:
    """Labelled embeddings read from a file.

    Attributes:
        embeddings: float32 (N, D) or (N, C, parts).
        subjects: (N,) str subject ids.
        types: (N,) str sequence types.
        views: (N,) str view labels.
        meta: The file's metadata.
    """

    embeddings: np.ndarray
    subjects: np.ndarray
    types: np.ndarray
    views: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def save_embeddings(path: str | os.PathLike, embeddings: np.ndarray, subjects: Sequence[str],
                    types: Sequence[str], views: Sequence[str], meta: Mapping[str, Any] | None = None,
                    **extra: Sequence[Any]) -> Path:
    """Write an embeddings ``.npz`` atomically (the umask's file mode).

    Args:
        path: The file to write.
        embeddings: (N, D) or (N, C, parts) numbers (stored as float32).
        subjects: (N,) subject ids.
        types: (N,) sequence types.
        views: (N,) view labels.
        meta: JSON-serialisable metadata.
        **extra: More (N,) per-row arrays (stored as strings).

    Returns:
        ``path`` as a Path.

    Raises:
        EmbeddingsFileError: A label array does not have N entries.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    n = emb.shape[0]
    arrays: dict[str, np.ndarray] = {"embeddings": emb}
    for key, values in {"subjects": subjects, "types": types, "views": views, **extra}.items():
        arr = np.asarray([str(v) for v in values])
        if arr.shape[0] != n:
            raise EmbeddingsFileError(f"{key} has {arr.shape[0]} entries for {n} embeddings")
        arrays[key] = arr
    arrays["meta"] = np.asarray(json.dumps(dict(meta or {}), default=str))
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)


def load_embeddings(path: str | os.PathLike) -> EmbeddingSet:
    """Read and check an embeddings ``.npz``.

    Args:
        path: The file.

    Returns:
        The embeddings (as float32) with their labels and metadata.

    Raises:
        EmbeddingsFileError: Missing or unreadable file, missing arrays, wrong shapes, non-numeric or
            non-finite embeddings.
    """
    p = Path(path)
    if not p.is_file():
        raise EmbeddingsFileError(f"embeddings file {str(p)!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as data:
            present = set(data.files)
            missing = [k for k in NPZ_KEYS if k not in present]
            if missing:
                raise EmbeddingsFileError(
                    f"{str(p)!r} lacks array(s) {', '.join(missing)}; an embeddings npz holds "
                    f"{', '.join(NPZ_KEYS)} (it has {', '.join(sorted(present)) or 'nothing'})")
            emb = np.asarray(data["embeddings"])
            labels = {k: np.asarray(data[k]).astype(str) for k in NPZ_KEYS[1:]}
            meta = json.loads(str(data["meta"])) if "meta" in present else {}
    except EmbeddingsFileError:
        raise
    except Exception as exc:  # zip/pickle/format errors
        raise EmbeddingsFileError(f"cannot read embeddings file {str(p)!r}: {exc}") from exc
    if emb.ndim not in (2, 3) or emb.shape[0] == 0:
        raise EmbeddingsFileError(f"{str(p)!r}: embeddings must be a non-empty (N, D) or (N, C, parts) array, "
                                  f"got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.number):
        raise EmbeddingsFileError(f"{str(p)!r}: embeddings have non-numeric dtype {emb.dtype}")
    for key, arr in labels.items():
        if arr.shape != (emb.shape[0],):
            raise EmbeddingsFileError(f"{str(p)!r}: {key} has shape {arr.shape}, expected ({emb.shape[0]},)")
    emb = emb.astype(np.float32)
    if not np.isfinite(emb).all():
        raise EmbeddingsFileError(f"{str(p)!r}: embeddings contain NaN or inf")
    return EmbeddingSet(emb, labels["subjects"], labels["types"], labels["views"], meta)


__all__ = ["NPZ_KEYS", "EmbeddingSet", "EmbeddingsFileError", "load_embeddings", "save_embeddings"]
