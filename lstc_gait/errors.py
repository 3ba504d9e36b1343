"""The platform's one user-error type and the wrappers every command's ``main`` runs in.

A :class:`UserError` is an expected mistake by the person running a command (a missing file, a wrong
option, a checkpoint of another model, an unwritable output folder). Entry points print
``lstc_gait.<command>: error: <message>`` (one line) on stderr and exit with status 2, without a
traceback; ``LSTC_GAIT_TRACEBACK=1`` in the environment re-raises instead, so the traceback is shown.
Any other exception is a bug and propagates unchanged.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TRACEBACK_ENV = "LSTC_GAIT_TRACEBACK"

# OSErrors that say something about the user's files and folders, not about the program.
_ENVIRONMENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENOENT", "EEXIST", "EISDIR", "ENOTDIR", "ENAMETOOLONG")
    if hasattr(errno, name))
_ACCESS_ERRNOS = frozenset(getattr(errno, name) for name in ("EACCES", "EPERM", "EROFS") if hasattr(errno, name))


_ENVIRONMENT_CLASSES = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


class UserError(Exception):
    """An expected user error; its message says what was wrong and how to fix it."""


def traceback_requested() -> bool:
    """Whether ``$LSTC_GAIT_TRACEBACK`` asks for tracebacks of user errors.

    Returns:
        True when the variable is set to anything but empty, ``0``, ``false``, ``no`` or ``off``.
    """
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _environment_error(exc: BaseException) -> OSError | None:
    """The file-system error behind ``exc`` (itself or a cause), when there is one."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and (cur.errno in _ENVIRONMENT_ERRNOS or isinstance(cur, _ENVIRONMENT_CLASSES)):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of an expected user error, or None when ``exc`` is a bug.

    User errors: :class:`UserError` and its subclasses, OmegaConf's ``MissingMandatoryValue`` (a
    required ``key=???`` not given on the command line), and file-system errors about the user's files
    and folders (missing, unwritable, read-only, full), also when another exception wraps them (as
    Hydra's logging set-up does when the run folder is read-only).

    Args:
        exc: The exception.

    Returns:
        The message on one line (continuation lines joined with ``; ``), or None.
    """
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(exc, (UserError, MissingMandatoryValue)):
        text = str(exc)
    else:
        os_error = _environment_error(exc)
        if os_error is None:
            return None
        where = os_error.filename if os_error.filename is not None else ""
        text = f"{os_error.strerror or os_error}: {where}" if where and os_error.strerror else str(os_error)
        if os_error.errno in _ACCESS_ERRNOS:
            text += " (a folder this user cannot write to: fix its permissions or choose another output folder)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(exc).__name__


def run_command(command: str, body: Callable[[], T]) -> T:
    """Run a command's body, turning user errors into one line on stderr and exit status 2.

    Args:
        command: The command's name as in ``python -m lstc_gait.<command>`` (used in the message).
        body: Zero-argument callable doing the work.

    Returns:
        Whatever ``body`` returns.

    Raises:
        SystemExit: Status 2 after a user error (unless ``LSTC_GAIT_TRACEBACK=1``, which re-raises it);
            status 1 after one of Hydra's own compact errors (a bad override), printed in Hydra's words.
    """
    try:
        return body()
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            hydra_text = _hydra_compact_text(exc)
            if hydra_text is None:
                raise
            print(hydra_text, file=sys.stderr, flush=True)
            sys.exit(1)
        if traceback_requested():
            raise
        print(f"lstc_gait.{command}: error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


def _hydra_compact_text(exc: BaseException) -> str | None:
    """Hydra's own wording of its compact errors (compose, override and instantiation errors), else None."""
    if os.environ.get(_HYDRA_REPORTS_ENV):  # Hydra was asked to report its errors itself
        return None
    try:
        from hydra.errors import CompactHydraException
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, CompactHydraException):
        return None
    text = str(exc)
    if isinstance(exc.__cause__, OmegaConfBaseException):
        text += os.linesep + str(exc.__cause__)
    return text


def run_job(command: str, body: Callable[[], T]) -> T:
    """Run the body of a Hydra job: one line for a user error in a single run, the exception in a multirun.

    In a multirun the exception must reach Hydra, which records the job as FAILED with its reason and
    hands it to the sweep's callbacks (``on_job_end``) before stopping the sweep; :func:`run_hydra_main`
    then prints it as one line. A single run reports it at once, without Hydra's
    ``Error executing job`` line.

    Args:
        command: The command's name (``train``, ``evaluate``, ...).
        body: Zero-argument callable doing the job's work.

    Returns:
        Whatever ``body`` returns.

    Raises:
        SystemExit: After a user error in a single run (see :func:`run_command`).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return body() if multirun else run_command(command, body)


_HYDRA_FULL_ERROR = "HYDRA_FULL_ERROR"
_HYDRA_REPORTS_ENV = "_LSTC_GAIT_HYDRA_FULL_ERROR_BY_USER"


def run_hydra_main(command: str, hydra_main: Callable[[], T]) -> T:
    """Run a ``@hydra.main`` function so that every user error ends as one line, wherever it is raised.

    Hydra reports an exception itself (a stripped traceback, exit status 1). For the duration of the
    call Hydra is asked to re-raise instead (``HYDRA_FULL_ERROR=1``), so that :func:`run_command` sees
    the user errors raised by the job, by Hydra's own set-up of the run folder and its log file (a
    read-only folder), and by the failed jobs of a multirun (which Hydra records as FAILED and hands to
    the sweep's callbacks first: the job function must let them propagate). Hydra's own compact
    errors (a bad override, a missing config option) keep Hydra's wording and exit status 1. When the
    user set ``HYDRA_FULL_ERROR`` themselves, Hydra's errors are re-raised with full tracebacks.

    Args:
        command: The command's name (``train``, ``evaluate``, ...).
        hydra_main: The function decorated with ``hydra.main``, called without arguments.

    Returns:
        Whatever ``hydra_main`` returns.

    Raises:
        SystemExit: See :func:`run_command`.
    """
    before = os.environ.get(_HYDRA_FULL_ERROR)
    if before:
        os.environ[_HYDRA_REPORTS_ENV] = "1"
    os.environ[_HYDRA_FULL_ERROR] = "1"
    try:
        return run_command(command, hydra_main)
    finally:
        os.environ.pop(_HYDRA_REPORTS_ENV, None)
        if before is None:
            os.environ.pop(_HYDRA_FULL_ERROR, None)
        else:
            os.environ[_HYDRA_FULL_ERROR] = before


__all__ = ["TRACEBACK_ENV", "UserError", "run_command", "run_hydra_main", "run_job", "traceback_requested",
           "user_error_message"]
