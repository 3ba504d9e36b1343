"""The platform's one user-error type and the wrapper every command's ``main`` runs its body in.

A :class:`UserError` is an expected mistake by the person running a command (a missing file, a wrong
option, a checkpoint of another model). Entry points print ``lstc_gait.<command>: error: <message>``
on stderr and exit with status 2, without a traceback; ``LSTC_GAIT_TRACEBACK=1`` in the environment
re-raises instead, so the traceback is shown. Any other exception is a bug and propagates unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TRACEBACK_ENV = "LSTC_GAIT_TRACEBACK"


class UserError(Exception):
    """An expected user error; its message says what was wrong and how to fix it."""


def traceback_requested() -> bool:
    """Whether ``$LSTC_GAIT_TRACEBACK`` asks for tracebacks of user errors.

    Returns:
        True when the variable is set to anything but empty, ``0``, ``false``, ``no`` or ``off``.
    """
    return os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def run_command(command: str, body: Callable[[], T], also: tuple[type[BaseException], ...] = ()) -> T:
    """Run a command's body, turning user errors into one line on stderr and exit status 2.

    Also treated as user errors: OmegaConf's ``MissingMandatoryValue`` (a required ``key=???`` not
    given on the command line) and ``FileNotFoundError``.

    Args:
        command: The command's name as in ``python -m lstc_gait.<command>`` (used in the message).
        body: Zero-argument callable doing the work.
        also: More exception classes to treat as user errors (error classes of modules that do not
            derive from UserError yet, e.g. :func:`lstc_gait.data.selection.data_errors`).

    Returns:
        Whatever ``body`` returns.

    Raises:
        SystemExit: Status 2 after a user error (unless ``LSTC_GAIT_TRACEBACK=1``, which re-raises it).
    """
    from omegaconf.errors import MissingMandatoryValue

    try:
        return body()
    except (UserError, MissingMandatoryValue, FileNotFoundError, *also) as exc:
        if traceback_requested():
            raise
        print(f"lstc_gait.{command}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


__all__ = ["TRACEBACK_ENV", "UserError", "run_command", "traceback_requested"]
