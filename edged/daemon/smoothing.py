"""The expression a dashboard shows: per-frame answers debounced into a steady state.

A single frame's answer is noisy: a blink or a head turn flips it. A new expression
becomes the state only when K of the last N frames agree on it with a confidence above
the threshold (or when every frame has said it for ``min_hold`` seconds). The state goes
to ``none`` when no face has been seen for ``clear_after`` seconds, and is re-published
at least every ``heartbeat`` seconds so a subscriber can tell the daemon is alive.

Pure: the caller passes the frame result and a monotonic ``now``; no clock, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edged.daemon.outputs import NONE
from edged.vision.pipeline import FrameResult

if TYPE_CHECKING:
    from edged.settings import Settings


@dataclass(frozen=True, slots=True)
class SmoothingConfig:
    enabled: bool = True
    window: int = 5  # N
    agree: int = 3  # K
    min_hold: float = 0.0  # s; 0 = off
    threshold: float = 0.3  # frames below this confidence do not vote
    clear_after: float = 3.0  # s without a face -> "none"
    heartbeat: float = 60.0  # s between re-publications of an unchanged state

    @classmethod
    def from_settings(cls, settings: Settings) -> SmoothingConfig:
        s = settings.smoothing
        return cls(
            enabled=s.enabled,
            window=s.window,
            agree=s.agree,
            min_hold=s.min_hold,
            threshold=s.threshold,
            clear_after=settings.publish.clear_after,
            heartbeat=settings.publish.heartbeat,
        )

    def __post_init__(self) -> None:
        if not 1 <= self.agree <= self.window:
            raise ValueError(f"need 1 <= agree ({self.agree}) <= window ({self.window})")


@dataclass(frozen=True, slots=True)
class State:
    """What the ``state`` topic says. ``since`` is the monotonic time of the last change."""

    expression: str
    confidence: float
    distance: float
    faces: int
    since: float


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of the state's expression: what the ``event`` topic says."""

    from_: str
    to: str
    confidence: float
    at: float  # monotonic


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one tick: a state to publish (or None) and the transition, if any."""

    state: State | None = None
    transition: Transition | None = None


_NOTHING = Step()


class Smoother:
    """Owns the debounce window and the current state; called once per tick from one thread."""

    def __init__(self, config: SmoothingConfig | None = None) -> None:
        self.config = config or SmoothingConfig()
        n = self.config.window if self.config.enabled else 1
        # Each vote: (expression or None, confidence, distance). None = face but no vote.
        self._votes: deque[tuple[str | None, float, float]] = deque(maxlen=n)
        self._agree = self.config.agree if self.config.enabled else 1
        self._threshold = self.config.threshold if self.config.enabled else 0.0
        self._hold_expr: str | None = None  # the unbroken run for min_hold
        self._hold_start = 0.0
        self._last_face = -math.inf
        self._faces = 0
        self._last_publish = -math.inf
        self.state = State(NONE, 0.0, 0.0, 0, since=0.0)

    def update(self, result: FrameResult | None, now: float) -> Step:
        """Feed one tick (None: no new frame); returns what to publish now."""
        if result is not None:
            self._faces = len(result.faces)
            top = result.top
            if top is not None:
                self._last_face = now
                self._vote(top.expression, top.confidence, top.distance, now)
                candidate = self._candidate(now)
                if candidate is not None:
                    if candidate[0] != self.state.expression:
                        return self._change(*candidate, now)
                    # The same expression: keep its numbers fresh for the next heartbeat.
                    self.state = State(
                        candidate[0], candidate[1], candidate[2], self._faces, self.state.since
                    )
            else:  # a frame without a face is a frame that does not agree
                self._votes.append((None, 0.0, 0.0))
                self._hold_expr = None
        gone = now - self._last_face >= self.config.clear_after and self._last_face != now
        if gone and self.state.expression != NONE:
            return self._change(NONE, 0.0, 0.0, now)
        if now - self._last_publish >= self.config.heartbeat:
            return self._publish(now)
        return _NOTHING

    def clear(self, now: float) -> Step:
        """Forget everything seen (the privacy switch went off): the state becomes ``none``."""
        self._votes.clear()
        self._hold_expr = None
        self._last_face = -math.inf
        self._faces = 0
        if self.state.expression != NONE:
            return self._change(NONE, 0.0, 0.0, now)
        return self._publish(now)

    def republish(self, now: float) -> State:
        """The current state, marked as published now (e.g. sent on reconnect)."""
        self._last_publish = now
        return self.state

    # -- internals -------------------------------------------------------------------

    def _vote(self, expression: str | None, confidence: float, distance: float, now: float) -> None:
        ok = expression is not None and confidence >= self._threshold
        self._votes.append((expression if ok else None, confidence, distance))
        if not ok:
            self._hold_expr = None
        elif expression != self._hold_expr:
            self._hold_expr, self._hold_start = expression, now

    def _candidate(self, now: float) -> tuple[str, float, float] | None:
        """The expression the window agrees on, with its latest confidence and distance."""
        if not self._votes:
            return None
        counts: dict[str, int] = {}
        best: str | None = None
        for expr, _, _ in self._votes:
            if expr is None:
                continue
            c = counts[expr] = counts.get(expr, 0) + 1
            if c >= self._agree and (best is None or c > counts[best]):
                best = expr
        if best is None and self.config.enabled and self.config.min_hold > 0:
            held = self._hold_expr
            if held is not None and now - self._hold_start >= self.config.min_hold:
                best = held
        if best is None:
            return None  # no agreement: the current state stays
        for expr, conf, dist in reversed(self._votes):
            if expr == best:
                return best, conf, dist
        return None  # pragma: no cover - best always has a vote

    def _change(self, expression: str, confidence: float, distance: float, now: float) -> Step:
        old = self.state.expression
        faces = self._faces if expression != NONE else 0
        self.state = State(expression, confidence, distance, faces, since=now)
        if expression == NONE:
            self._votes.clear()
            self._hold_expr = None
        self._last_publish = now
        return Step(self.state, Transition(old, expression, confidence, now))

    def _publish(self, now: float) -> Step:
        self._last_publish = now
        if self.state.expression == NONE:
            self.state = State(NONE, 0.0, 0.0, self._faces, self.state.since)
        return Step(self.state)
