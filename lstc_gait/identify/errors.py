"""User errors of the identify commands (a missing file, a clip nobody walks through, a foreign gallery).

``IdentifyError`` is a :class:`lstc_gait.errors.UserError` (and a ``ValueError``): the entry points
print it as one line ``lstc_gait.<command>: error: <message>`` and exit 2.
"""

from __future__ import annotations

from lstc_gait.errors import UserError


class IdentifyError(UserError, ValueError):
    """A user error of silhouettes / enroll / identify; the message names the file concerned."""
