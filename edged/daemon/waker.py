"""A self-pipe: wake a waiting thread from any thread or from a signal handler."""

from __future__ import annotations

import contextlib
import os
import select


class Waker:
    """A stop flag the loop can sleep on; `set` is safe from signal handlers and threads.

    A self-pipe rather than ``threading.Event``: Event.set takes a lock the interrupted
    main thread may hold, and a handler waiting on it would deadlock.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self.flag = False

    def set(self) -> None:
        self.flag = True
        with contextlib.suppress(OSError):  # pipe full: a wake-up is already pending
            os.write(self._w, b"x")

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s or until `set`; returns the flag."""
        if not self.flag and timeout > 0:
            ready, _, _ = select.select([self._r], [], [], timeout)
            if ready:
                with contextlib.suppress(OSError):
                    os.read(self._r, 64)
        return self.flag

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)
