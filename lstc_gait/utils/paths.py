"""Path resolution shared by every command: user paths are relative to the launch folder."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_path(path: str | os.PathLike | None, base_dir: str | os.PathLike | None = None) -> Path | None:
    """An absolute path for a user-given path, or None when none is given.

    ``~`` is expanded; a relative path is taken relative to ``base_dir`` (the folder the command was
    launched from; the current directory when None). The path need not exist.

    Args:
        path: The path as given (``None`` and ``""`` mean "not given").
        base_dir: Folder relative paths start from.

    Returns:
        The absolute path, or None.
    """
    if path is None or str(path) in ("", "None", "null"):
        return None
    p = Path(str(path)).expanduser()
    if not p.is_absolute():
        p = Path(base_dir if base_dir is not None else Path.cwd()).expanduser().absolute() / p
    return p.absolute()


def resolve_path_str(path: str | os.PathLike | None, base_dir: str | os.PathLike | None = None) -> str | None:
    """:func:`resolve_path` as a string (for config dataclasses holding ``str | None``).

    Args:
        path: The path as given.
        base_dir: Folder relative paths start from.

    Returns:
        The absolute path as a string, or None.
    """
    resolved = resolve_path(path, base_dir)
    return None if resolved is None else str(resolved)


__all__ = ["resolve_path", "resolve_path_str"]
