"""An exclusive inter-process file lock.

Parallel sweep jobs and DDP ranks may build the same data (:mod:`lstc_gait.data.prepare`, the
SynthGait generator) or create the same MLflow SQLite store (:mod:`lstc_gait.tracking.store`);
each of them holds this lock on a file beside what it creates.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the duration of the block.

    The lock is ``fcntl.flock`` on an open file: it is released when the block ends or the process
    dies, so a killed holder never leaves a stale lock. The lock file gets the umask's mode and is
    left in place. On non-POSIX systems there is no ``fcntl``: the block runs unlocked, which is still
    safe for a single job because every write under it is atomic.

    Args:
        path: The lock file (its folder is created when missing).

    Yields:
        None, while the lock is held.

    Raises:
        OSError: The lock file cannot be created or opened.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            import fcntl
        except ImportError:
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


__all__ = ["exclusive_lock"]
