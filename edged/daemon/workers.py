"""Supervised worker threads: no thread of the daemon dies silently.

Every long-running thread (camera grabber, model loader, MQTT network loop, ...) runs
its function inside a `Worker`. An exception escaping that function is logged once at
ERROR with its traceback, and the function is started again after a backoff; a worker
that keeps failing (or one that must not be restarted) calls ``on_fatal``, and the
daemon exits non-zero so systemd restarts the whole process from a clean state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

# Called with a one-line reason; the daemon then stops with a non-zero exit status.
FatalHandler = Callable[[str], None]

# Every long-running thread the daemon runs, by its `Worker` name. tests/test_supervised.py
# injects a failure into each and checks this list against the ``Worker(`` calls in the
# code: a new worker is added here, and so cannot go untested.
WORKERS = {
    "edged-capture": "camera grabber",
    "edged-model": "model loader (model file and enrolled faces)",
    "edged-mqtt": "MQTT network loop (paho)",
    "edged-web": "web page server",
    "edged-web-encode": "live view encoder",
}


class Deadline:
    """One moment that every wait of a shutdown shares: each join or stop gets what is
    left, so stuck parts cannot add up past the promise (SIGTERM → exit within 2 s)."""

    def __init__(self, at: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.at = at
        self._clock = clock

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - self._clock())


def describe(e: Exception) -> str:
    """``Type: first line of the message``: fits the one-line reason and log lines."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


class Worker:
    """A named, supervised thread.

    ``target`` returning means the work is done. An `Exception` escaping it is a bug or
    an unforeseen failure: logged (with its traceback the first time it is seen), then
    ``target`` runs again after a backoff (``backoff[0]`` doubling up to ``backoff[1]``
    with each failure inside ``window`` s), unless ``restart`` is False or
    ``max_failures`` failures fell inside the last ``window`` s: then ``on_fatal``.
    """

    def __init__(
        self,
        name: str,
        target: Callable[[], None],
        *,
        on_fatal: FatalHandler | None = None,
        restart: bool = True,
        max_failures: int = 5,
        window: float = 300.0,
        backoff: tuple[float, float] = (1.0, 30.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._target: Callable[[], None] | None = target
        self._on_fatal = on_fatal
        self._restart = restart
        self._max_failures = max_failures
        self._window = window
        self._backoff = backoff
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"worker {self.name} started twice")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask it to end: a backoff wait returns at once, and no restart follows.

        ``target`` must notice its own stop signal; this only tells the supervisor that
        an exception from now on is part of shutting down, not a failure.
        """
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True if the thread ended (or never started).

        From the worker's own thread it returns False at once: a thread cannot wait
        for itself.
        """
        t = self._thread
        if t is None:
            return True
        if t is threading.current_thread():
            return False
        t.join(timeout)
        return not t.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def failures(self) -> int:
        """Unexpected exceptions so far (not those raised while stopping)."""
        return self._failures

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the supervised thread --------------------------------------------------------

    def _run(self) -> None:
        try:
            self._supervise()
        finally:
            # Like threading.Thread: the target often points back at its owner, which
            # points at this worker; dropping it lets the owner be freed (and its pipes
            # closed) by reference counting once the thread is over.
            self._target = None

    def _supervise(self) -> None:
        target = self._target
        recent: deque[float] = deque()  # failure times inside the window
        seen: set[tuple[type[Exception], str]] = set()
        while target is not None and not self._stop.is_set():
            try:
                target()
            except Exception as e:
                if self._stop.is_set():
                    log.debug("worker %s raised while stopping", self.name, exc_info=True)
                    return
                if self._failed(e, recent, seen):
                    return
            else:
                return

    def _failed(
        self, e: Exception, recent: deque[float], seen: set[tuple[type[Exception], str]]
    ) -> bool:
        """Log the failure and wait out the backoff; True when the worker must end."""
        self._failures += 1
        now = self._clock()
        recent.append(now)
        while recent and recent[0] <= now - self._window:
            recent.popleft()
        what = describe(e)
        give_up = not self._restart or len(recent) >= self._max_failures
        delay = min(self._backoff[0] * 2 ** (len(recent) - 1), self._backoff[1])
        then = "" if give_up else f"; restart {self._failures} in {delay:g} s"
        key = (type(e), str(e))
        if key not in seen:
            seen.add(key)
            log.error("worker %s failed: %s%s", self.name, what, then, exc_info=True)
        elif not give_up:
            log.warning("worker %s failed again (same error)%s", self.name, then)
        if give_up:
            self._fatal(what, len(recent))
            return True
        return self._stop.wait(delay)

    def _fatal(self, what: str, recent: int) -> None:
        if self._restart:
            reason = f"worker {self.name} failed {recent} times in {self._window:g} s ({what})"
        else:
            reason = f"worker {self.name} failed and is not restarted ({what})"
        log.error("%s: giving up; stopping edged so systemd restarts it", reason)
        if self._on_fatal is None:
            return
        try:
            self._on_fatal(reason)
        except Exception:
            log.exception("worker %s: the fatal-error handler failed", self.name)
