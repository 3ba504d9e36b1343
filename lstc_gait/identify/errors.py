"""User errors of the identify commands (a missing file, a clip nobody walks through, a foreign gallery).

``IdentifyError`` subclasses the platform's ``UserError`` (``lstc_gait/errors.py``) when it exists, and
``ValueError`` so today's command wrapper (``lstc_gait.evaluation.commands.run_command``) prints it as
one line ``lstc_gait.<command>: error: <message>`` and exits 2.
"""

from __future__ import annotations

try:  # the platform-wide base class (architecture work); a local stand-in until it lands
    from lstc_gait.errors import UserError
except ImportError:  # pragma: no cover - depends on merge order

    class UserError(Exception):  # type: ignore[no-redef]
        """An expected user error: entry points print one line and exit 2."""


class IdentifyError(UserError, ValueError):
    """A user error of silhouettes / enroll / identify; the message names the file concerned."""
