"""Repeated log lines, said once: the first of each kind, then at most one summary a minute.

Anything outside edged can make a log line happen (1,000 garbage messages on a command
topic gave 1,000 WARNING lines): a flood must not become a flood in the journal, and the
count must still be told. `LogLimiter.log` says the first occurrence of a kind in full and
counts the rest; a summary ("ignored 999 more invalid detect/set messages") comes when
the window has passed: on the next occurrence, on `flush` from a periodic duty, or at
the end (`flush(force=True)`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 60.0  # s: at most one summary per kind this often


@dataclass(slots=True)
class _Kind:
    level: int
    summary: str  # %-format with one %d: the number of lines not said
    since: float  # when the current window began (its first line was said)
    held: int = 0  # occurrences counted but not said in this window
    total: int = 0  # every occurrence, said or not


class LogLimiter:
    """Rate-limits log lines per ``key``; thread-safe (paho's thread logs, the loop flushes)."""

    def __init__(
        self,
        logger: logging.Logger,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[str, _Kind] = {}

    def log(self, level: int, key: str, summary: str, msg: str, *args: object) -> None:
        """``msg % args`` for the first of ``key`` (or the first after a quiet window);
        the rest are counted and said as ``summary`` (one ``%d``, e.g. "ignored %d more
        invalid detect/set messages") at most once per window.
        """
        now = self._clock()
        values: tuple[object, ...]
        with self._lock:
            kind = self._kinds.get(key)
            if kind is None:
                kind = self._kinds[key] = _Kind(level, summary, now)
            kind.total += 1
            if kind.total > 1 and now < kind.since + self._window:
                kind.held += 1
                return
            if kind.held:  # the window passed during a flood: this one joins the summary
                kind.held += 1
                text, values = summary, (self._reset(kind, now),)
            else:
                self._reset(kind, now)
                text, values = msg, args
        self._log.log(level, text, *values)

    def flush(self, force: bool = False) -> None:
        """Say the summaries whose window has passed (every one with ``force``)."""
        now = self._clock()
        with self._lock:
            due = [
                (k.level, k.summary, self._reset(k, now))
                for k in self._kinds.values()
                if k.held and (force or now >= k.since + self._window)
            ]
        for level, summary, held in due:
            self._log.log(level, summary, held)

    def total(self, key: str) -> int:
        """How many times ``key`` happened, said or not."""
        with self._lock:
            kind = self._kinds.get(key)
            return 0 if kind is None else kind.total

    @staticmethod
    def _reset(kind: _Kind, now: float) -> int:
        held, kind.held, kind.since = kind.held, 0, now
        return held
