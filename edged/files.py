"""Opening the files users point edged at (models, photos): regular files only.

One rule for every reader: open without blocking (a FIFO must never hang a command or
the daemon) and look at what was opened before reading it (a device such as /dev/zero
never ends).
"""

from __future__ import annotations

import os
import stat

# Never blocks (a FIFO), never makes the file our terminal; the descriptor is ours alone.
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_regular(mode: int) -> str | None:
    """What a file of this ``st_mode`` is when it is not a regular file ("a named pipe",
    "a folder", ...); None for a regular file, the only kind edged reads."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")
