"""Readers for the on-disk silhouette layouts users already have.

Each reader turns a root folder into one index of sequences (a pandas DataFrame with the columns
``subject, type, view, seq, source, kind``), without opening any frame: listing and decoding
frames is the prepare job's work, done in parallel.

Layouts (see docs/data.md):

- ``flat``     ROOT/<subject>/<sequence>/<frame>.<image ext>   (original lstc-gait)
- ``casia_b``  ROOT/<subject>/<type>/<view>/<frame>.png        (e.g. 001/nm-01/090/)
- ``ou_mvlp``  ROOT/Silhouette_<view>-<seq>/<subject>/<frame>.png
- ``opengait`` ROOT/<id>/<type>/<view>/<anything>.pkl          ([T, 64, 64] or [T, 64, 44], pretreated)

Column meaning: ``type`` is the condition a protocol reads (CASIA-B ``nm-01``, OU-MVLP ``00``/``01``);
``seq`` is the sequence's own name, unique together with subject and view; ``kind`` is ``frames``
(a folder of images) or ``pickle`` (one OpenGait pickle).

Sources: the layouts table of /work/shared/docs/PROTOCOLS.md; CASIA-B is Yu et al. 2006, OU-MVLP
Takemura et al. 2018.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from lstc_gait.errors import UserError

LAYOUTS: tuple[str, ...] = ("flat", "casia_b", "ou_mvlp", "opengait")
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm", ".pbm"}
)
INDEX_COLUMNS: tuple[str, ...] = ("subject", "type", "view", "seq", "source", "kind")

_OU_DIR = re.compile(r"^Silhouette_(?P<view>\d+)-(?P<seq>\d+)$")
_CASIA_TYPE = re.compile(r"^[A-Za-z]+-\d+$")
# A flat sequence folder named like CASIA-B's own flattening ("nm-01-090") carries type and view.
_FLAT_TYPE_VIEW = re.compile(r"^(?P<type>[A-Za-z]+-\d+)-(?P<view>\d{3})$")


class LayoutError(UserError, ValueError):
    """A root folder does not match the requested (or any) layout."""


def is_image_file(name: str) -> bool:
    """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive).

    Args:
        name: A file name or path (only its extension is looked at).

    Returns:
        True for an image extension.
    """
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_frames(folder: str | Path) -> list[str]:
    """Image files of one sequence folder, sorted by name (full paths).

    Args:
        folder: The sequence folder (not searched recursively).

    Returns:
        ``os.path.join(folder, name)`` of every regular file with an image extension (see
        :func:`is_image_file`), sorted by name.

    Raises:
        OSError: ``folder`` cannot be listed (``FileNotFoundError``, ``NotADirectoryError``,
            ``PermissionError``).
    """
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.is_file() and is_image_file(e.name))
    return [os.path.join(folder, n) for n in names]


def _subdirs(folder: str) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if e.is_dir()), key=lambda e: e.name)


def _has_files(folder: str, predicate) -> bool:
    with os.scandir(folder) as it:
        return any(e.is_file() and predicate(e.name) for e in it)


# ----------------------------------------------------------------------------------- detection
def _looks_ou_mvlp(root: str) -> bool:
    return any(_OU_DIR.match(d.name) for d in _subdirs(root))


def _walk_depth(root: str, depth: int, limit: int = 200) -> Iterable[str]:
    """Folders exactly ``depth`` levels below root (at most ``limit``, for cheap detection)."""
    level = [root]
    for _ in range(depth):
        nxt: list[str] = []
        for folder in level:
            nxt.extend(d.path for d in _subdirs(folder))
            if len(nxt) >= limit:
                break
        level = nxt[:limit]
    return level


def _looks_opengait(root: str) -> bool:
    return any(_has_files(f, lambda n: n.endswith(".pkl")) for f in _walk_depth(root, 3))


def _looks_casia_b(root: str) -> bool:
    for f in _walk_depth(root, 3):
        type_name = os.path.basename(os.path.dirname(f))
        if _CASIA_TYPE.match(type_name) and _has_files(f, is_image_file):
            return True
    return False


def _looks_flat(root: str) -> bool:
    return any(_has_files(f, is_image_file) for f in _walk_depth(root, 2))


_DETECTORS = (
    ("ou_mvlp", _looks_ou_mvlp),
    ("opengait", _looks_opengait),
    ("casia_b", _looks_casia_b),
    ("flat", _looks_flat),
)


def _check_root(root: str | Path) -> str:
    path = os.fspath(root)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset root does not exist: {path}")
    if not os.path.isdir(path):
        raise LayoutError(f"dataset root is not a folder: {path}")
    return path


def detect_layout(root: str | Path) -> str:
    """Name of the layout ``root`` follows.

    The layouts are tried in the order ``ou_mvlp``, ``opengait``, ``casia_b``, ``flat``: by the
    names of the root's subfolders (``Silhouette_<view>-<seq>``), then by the files in (at most
    200 of) the folders 3 or 2 levels down. No frame is read.

    Args:
        root: The dataset root folder.

    Returns:
        One of :data:`LAYOUTS`.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        LayoutError: ``root`` is not a folder, or it matches no layout (the message names the
            root, the layouts tried and an example path of each).
        OSError: A folder under ``root`` cannot be listed.
    """
    path = _check_root(root)
    for name, looks in _DETECTORS:
        if looks(path):
            return name
    tried = ", ".join(n for n, _ in _DETECTORS)
    raise LayoutError(
        f"{path} matches no known silhouette layout (tried: {tried}); expected e.g. "
        "ROOT/<subject>/<sequence>/<frame>.png (flat), ROOT/001/nm-01/090/*.png (casia_b), "
        "ROOT/Silhouette_090-00/00001/*.png (ou_mvlp) or ROOT/<id>/<type>/<view>/*.pkl (opengait)"
    )


# ------------------------------------------------------------------------------------- readers
def _scan_flat(root: str, view_label: str) -> list[tuple]:
    rows = []
    for subj in _subdirs(root):
        for seq in _subdirs(subj.path):
            m = _FLAT_TYPE_VIEW.match(seq.name)
            typ, view = (m["type"], m["view"]) if m else (seq.name, view_label)
            rows.append((subj.name, typ, view, seq.name, seq.path, "frames"))
    return rows


def _scan_casia_b(root: str, view_label: str) -> list[tuple]:
    rows = []
    for subj in _subdirs(root):
        for typ in _subdirs(subj.path):
            for view in _subdirs(typ.path):
                rows.append((subj.name, typ.name, view.name, typ.name, view.path, "frames"))
    return rows


def _scan_ou_mvlp(root: str, view_label: str) -> list[tuple]:
    rows = []
    for top in _subdirs(root):
        m = _OU_DIR.match(top.name)
        if not m:
            continue
        for subj in _subdirs(top.path):
            rows.append((subj.name, m["seq"], m["view"], m["seq"], subj.path, "frames"))
    return rows


def _scan_opengait(root: str, view_label: str) -> list[tuple]:
    rows = []
    for subj in _subdirs(root):
        for typ in _subdirs(subj.path):
            for view in _subdirs(typ.path):
                with os.scandir(view.path) as it:
                    pkls = sorted(e.name for e in it if e.is_file() and e.name.endswith(".pkl"))
                # One sequence per folder: several pickles in one folder are other modalities of
                # the same walk (OpenGait convention); the first by name is the silhouette one.
                if pkls:
                    rows.append(
                        (subj.name, typ.name, view.name, typ.name, os.path.join(view.path, pkls[0]), "pickle")
                    )
                else:
                    # Keep it so the prepare report names the empty folder.
                    rows.append((subj.name, typ.name, view.name, typ.name, view.path, "pickle"))
    return rows


_READERS = {"flat": _scan_flat, "casia_b": _scan_casia_b, "ou_mvlp": _scan_ou_mvlp, "opengait": _scan_opengait}


def scan_root(root: str | Path, layout: str = "auto", view_label: str = "000") -> pd.DataFrame:
    """Index of the sequences under one root (no frame is opened).

    Args:
        root: The dataset root folder.
        layout: ``"auto"`` (see :func:`detect_layout`) or one of :data:`LAYOUTS`: ``casia_b`` is
            CASIA-B's raw tree (Yu et al. 2006), ``ou_mvlp`` OU-MVLP's (Takemura et al. 2018).
        view_label: The view given to flat sequences whose folder name carries none (a flat
            sequence named like ``nm-01-090`` gets type ``nm-01`` and view ``090``).

    Returns:
        One row per sequence with the columns :data:`INDEX_COLUMNS` (all strings), in the order
        the folders sort by name. An OpenGait folder without a pickle still gets a row (its
        ``source`` is the folder), so that prepare reports it.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        LayoutError: ``root`` is not a folder, ``layout`` is unknown, ``root`` does not follow
            ``layout`` (the message says which layout it looks like) or holds no sequence.
        OSError: A folder under ``root`` cannot be listed.
    """
    path = _check_root(root)
    if layout == "auto":
        layout = detect_layout(path)
    elif layout not in _READERS:
        raise LayoutError(f"unknown layout {layout!r} for {path}; choose one of: auto, {', '.join(LAYOUTS)}")
    elif not dict(_DETECTORS)[layout](path):
        try:
            hint = f"it looks like the {detect_layout(path)} layout"
        except LayoutError:
            hint = "it matches no known layout"
        raise LayoutError(f"{path} does not follow the {layout} layout ({hint}); see docs/data.md for the patterns")
    rows = _READERS[layout](path, view_label)
    if not rows:
        raise LayoutError(f"{path} holds no sequence in the {layout} layout")
    return pd.DataFrame(rows, columns=list(INDEX_COLUMNS))


def scan_roots(roots: str | Path | Sequence[str | Path], layout: str = "auto") -> pd.DataFrame:
    """One index over several roots (e.g. one root per camera view).

    With several flat roots, a sequence whose folder name carries no view gets the root's folder
    name as its view, so ``cam1/`` and ``cam2/`` stay apart. Rows are sorted by
    subject, type, view, seq, source. Duplicates are kept here; :func:`duplicate_rows` marks
    every copy of a (subject, type, view, seq) key after the first in this order (the one with the
    smallest source path).

    Args:
        roots: One root or a sequence of roots. With ``layout="auto"`` each root is detected on
            its own (prepare refuses roots of different layouts).
        layout: ``"auto"`` or one of :data:`LAYOUTS` (see :func:`scan_root`).

    Returns:
        The rows of every root (columns :data:`INDEX_COLUMNS`), sorted, with a fresh RangeIndex.

    Raises:
        LayoutError: ``roots`` is empty, or a root fails as in :func:`scan_root`.
        FileNotFoundError: A root does not exist.
        OSError: A folder cannot be listed.
    """
    root_list = [roots] if isinstance(roots, str | os.PathLike) else list(roots)
    if not root_list:
        raise LayoutError("no dataset root given")
    frames = []
    for r in root_list:
        label = os.path.basename(os.path.normpath(os.fspath(r))) if len(root_list) > 1 else "000"
        frames.append(scan_root(r, layout, view_label=label))
    index = pd.concat(frames, ignore_index=True)
    return index.sort_values(["subject", "type", "view", "seq", "source"], kind="stable").reset_index(drop=True)


def duplicate_rows(index: pd.DataFrame) -> pd.Series:
    """Boolean mask of rows whose (subject, type, view, seq) was already seen in an earlier row.

    Args:
        index: An index as returned by :func:`scan_roots` (at least those four columns).

    Returns:
        A bool Series aligned with ``index``: True for every copy after the first.

    Raises:
        KeyError: ``index`` lacks one of the four columns.
    """
    return index.duplicated(subset=["subject", "type", "view", "seq"], keep="first")


def read_partition(path: str | Path) -> tuple[list[str], list[str]]:
    """Read an OpenGait partition JSON ``{"TRAIN_SET": [...], "TEST_SET": [...]}``.

    Args:
        path: The JSON file.

    Returns:
        ``(train ids, test ids)``, each a list of subject ids as strings, in file order.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: The file cannot be read or decoded, is not JSON, is not a JSON object, lacks
            ``TRAIN_SET`` or ``TEST_SET``, or one of them is not a list.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"partition file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"partition file {p} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"partition file {p} must hold a JSON object with TRAIN_SET and TEST_SET")
    missing = [k for k in ("TRAIN_SET", "TEST_SET") if k not in data]
    if missing:
        raise ValueError(f"partition file {p} lacks key(s) {', '.join(missing)} (needs TRAIN_SET and TEST_SET)")
    for k in ("TRAIN_SET", "TEST_SET"):
        if not isinstance(data[k], list):
            raise ValueError(f"partition file {p}: {k} must be a list of subject ids")
    return [str(s) for s in data["TRAIN_SET"]], [str(s) for s in data["TEST_SET"]]
