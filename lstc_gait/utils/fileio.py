"""Atomic file output: write a temporary file in the target's folder, then ``os.replace`` it.

Readers never see a half-written file, and an interrupted write leaves the previous version in place.
The temporary file is created with ``open(..., "xb")``, so the final file gets the mode the umask
gives (``0o666 & ~umask``, 0644 usually), not ``mkstemp``'s 0600: colleagues on a shared filesystem
can read checkpoints, tables and reports. This module is the one place that calls ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file exists (empty, with the umask's mode) when the block starts; the block may
    write it itself or hand its name to a library (``torch.save``, ``np.savez``, ``fig.savefig``).
    Missing parent folders are created. On an exception the temporary file is removed and ``path``
    is left untouched.

    Args:
        path: The final file.

    Yields:
        The temporary file's path (same folder, hidden name ending in ``.tmp``).

    Raises:
        OSError: The folder cannot be created or written.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(final)
    with open(tmp, "xb"):
        pass
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`).

    Args:
        path: The final file.
        data: Its whole content.

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: The folder cannot be created or written.
    """
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`).

    Args:
        path: The final file.
        text: Its whole content.
        encoding: Text encoding.

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: The folder cannot be created or written.
    """
    return atomic_write_bytes(path, text.encode(encoding))


__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text"]
