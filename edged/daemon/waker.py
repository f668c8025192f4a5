"""A self-pipe: wake a waiting thread from any thread or from a signal handler."""

from __future__ import annotations

import contextlib
import os
import select
import weakref


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Waker:
    """A stop flag the loop can sleep on; `set` and `poke` are safe from signal handlers.

    A self-pipe rather than ``threading.Event``: Event.set takes a lock the interrupted
    main thread may hold, and a handler waiting on it would deadlock.

    The pipe is closed by `close`, or when the waker is garbage (then nobody can write
    to it any more, so its fd numbers cannot be reused under a late writer).
    """

    def __init__(self) -> None:
        r, w = os.pipe()
        os.set_blocking(w, False)  # a full pipe already holds a wake-up: never block
        os.set_blocking(r, False)  # draining stops when it is empty
        self._r, self._w = r, w
        self._closer = weakref.finalize(self, _close_fds, r, w)
        self.flag = False

    def set(self) -> None:
        """Raise the stop flag and wake the waiter."""
        self.flag = True
        self.poke()

    def poke(self) -> None:
        """Wake the waiter without stopping it (e.g. work arrived): one ``os.write``."""
        with contextlib.suppress(OSError):  # pipe full (a wake-up is pending) or closed
            os.write(self._w, b"x")

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s or until `set` or `poke`; returns the flag.

        Wake-ups pending when it returns are consumed, so the next wait sleeps again.
        """
        if not self.flag and timeout > 0:
            ready, _, _ = select.select([self._r], [], [], timeout)
            if ready:
                with contextlib.suppress(OSError):  # empty now (BlockingIOError)
                    while len(os.read(self._r, 4096)) == 4096:
                        pass
        return self.flag

    def close(self) -> None:
        """Close the pipe; a later `set` or `poke` only raises the flag."""
        self._r = self._w = -1
        self._closer()
