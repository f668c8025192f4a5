"""What the page shows, as the daemon last told it: written by the frame loop (through
`WebOutput`), read by the server's threads.

Every value is replaced whole, never changed in place, so a reader sees an old value or
a new one and needs no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from edged.daemon.outputs import ModelStatus

EVENTS_SHOWN = 10


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    reason: str


class Board:
    """The page's copy of the daemon's news."""

    def __init__(self, loop_fps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # A stall: no tick for 3 slots, and never less than 2 s (a slow first model load
        # happens before the loop starts, when /healthz says "starting").
        self.stall_after = max(2.0, 3.0 / loop_fps)
        self.last_tick: float | None = None
        self.state: dict[str, object] | None = None
        self.events: tuple[dict[str, object], ...] = ()
        self.stats: dict[str, object] | None = None  # live (about once a second)
        self.detect = True
        self.camera: tuple[bool, str] = (False, "starting")
        self.model: ModelStatus | None = None
        self.stopping = False

    def ticked(self) -> None:
        self.last_tick = self._clock()

    def add_event(self, body: dict[str, object]) -> None:
        self.events = (body, *self.events[: EVENTS_SHOWN - 1])

    def health(self) -> Health:
        """Whether the frame loop ticks: for /healthz and uptime monitors."""
        if self.stopping:
            return Health(False, "stopping")
        if self.last_tick is None:
            return Health(False, "starting: the frame loop has not ticked yet")
        age = self._clock() - self.last_tick
        if age > self.stall_after:
            return Health(False, f"stalled: the frame loop has not ticked for {age:.1f} s")
        return Health(True, "ok")

    def picture(self) -> str | None:
        """Why there is no picture, in words; None when there is one."""
        online, reason = self.camera
        if not online:
            return f"The camera is offline: {reason}"
        if not self.detect:
            return "Expression detection is switched off (privacy): no picture is taken."
        return None
