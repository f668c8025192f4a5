"""Signals that arrive while edged is still starting.

Importing OpenCV and paho takes hundreds of milliseconds (seconds on a Pi), and until a
handler is installed SIGHUP kills the process (exit 129) and SIGTERM skips the clean
shutdown. So the entry point calls `catch` before any heavy import: the handlers only
record the signal. The daemon's `Service` then `take`s what arrived and honours it (a
SIGTERM stops it before anything goes online, a SIGHUP is the model reload it means);
any other command `release`s them, which delivers them as if never held back.

Only the standard library here: this module is imported first.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_pending: list[tuple[int, float]] = []  # (signal, monotonic time it arrived)
_previous: dict[int, Any] = {}  # the handlers `catch` replaced


def _record(signum: int, frame: FrameType | None) -> None:
    """Remember the signal; a second stop request forces the exit, as later on."""
    stops = [s for s, _ in _pending if s != signal.SIGHUP]
    if signum != signal.SIGHUP and stops:
        os.write(2, b"edged: forced exit\n")
        os._exit(128 + signum)
    _pending.append((signum, time.monotonic()))  # list.append: safe in a handler


def catch() -> None:
    """Record SIGTERM, SIGINT and SIGHUP from now on (main thread only; idempotent)."""
    if _previous or threading.current_thread() is not threading.main_thread():
        return
    for s in SIGNALS:
        _previous[s] = signal.signal(s, _record)


def take() -> list[tuple[int, float]]:
    """The signals recorded so far, oldest first, and when each came; forgotten here."""
    got = list(_pending)
    del _pending[: len(got)]
    return got


def release(deliver: bool = True) -> None:
    """Put the handlers `catch` replaced back and deliver what arrived meanwhile, so a
    command that does not handle signals itself behaves as if they were never held
    (``deliver=False``: forget them; the process is ending anyway)."""
    if not _previous:
        return
    for s, handler in _previous.items():
        signal.signal(s, handler)
    _previous.clear()
    for s, _ in take():
        if deliver:
            signal.raise_signal(s)
