"""A drift-free fixed-rate schedule: slot k starts at ``origin + k * period``.

Pure arithmetic on times the caller passes in, so it is tested with made-up clocks.
Deadlines are computed from the origin, never by adding the period to "now", so
oversleeping one tick does not push every later tick back (no drift). A tick whose
work runs past the start of later slots does not make those slots run late, one after
another, to catch up: they are skipped and counted, and the loop waits for the next
slot that has not started yet.
"""

from __future__ import annotations

import math


class Ticker:
    """Where the next slot starts, and how many slots were skipped so far."""

    __slots__ = ("origin", "period", "skipped", "slot", "ticks")

    def __init__(self, fps: float, origin: float) -> None:
        if not fps > 0 or math.isinf(fps):
            raise ValueError(f"fps must be a positive finite number, not {fps!r}")
        self.period = 1.0 / fps
        self.origin = origin
        self.slot = 0  # the next slot to run
        self.ticks = 0  # slots run
        self.skipped = 0  # slots skipped because an earlier tick overran

    @property
    def deadline(self) -> float:
        """When the next slot starts (on the caller's clock)."""
        return self.origin + self.slot * self.period

    def delay(self, now: float) -> float:
        """Seconds to wait from ``now`` until the next slot (0 when it has started)."""
        return max(0.0, self.deadline - now)

    def done(self, now: float) -> int:
        """Call when a tick's work is finished at ``now``; moves on, returns slots skipped.

        The next slot is the one after the slot just run, unless slots after it have
        already started: those are skipped, and the next slot is the first one that
        starts after ``now``.
        """
        self.ticks += 1
        nxt = self.slot + 1
        first_free = math.floor((now - self.origin) / self.period) + 1
        skipped = first_free - nxt if first_free > nxt else 0
        self.slot = nxt + skipped
        self.skipped += skipped
        return skipped
