"""The daemon's one owner of what it says about the room: the debounced expression, its
change events, and the privacy switch.

Every output (JSON lines, MQTT, the web page) formats what this decides, so the state and
the events are the same with or without MQTT. Runs on the loop thread only; the switch
is changed through the loop (`Service`), never from another thread directly, and
remembered across restarts (`SwitchMemory`) when it changes.
"""

from __future__ import annotations

from edged.daemon.outputs import ExpressionEvent, ExpressionReport
from edged.daemon.smoothing import Smoother, State, Step
from edged.daemon.switch_state import SwitchMemory
from edged.vision.pipeline import FrameResult


class Expression:
    """The smoother, the switch and the model version, turned into reports for outputs."""

    def __init__(
        self, smoother: Smoother, detect: bool = True, memory: SwitchMemory | None = None
    ) -> None:
        """``memory``: where the switch was left; it overrides ``detect`` and is told
        every change."""
        self._smoother = smoother
        self._memory = memory
        self._detect = memory.load() if memory is not None else detect
        self._model_version: str | None = None
        self._origin: float | None = None  # wall time of the first report (``since`` of start)

    @property
    def detect(self) -> bool:
        """Whether expression detection is on (the privacy switch)."""
        return self._detect

    @property
    def expression(self) -> str:
        return self._smoother.state.expression

    def set_model(self, version: str | None) -> None:
        """The model in use (stated in every report from now on)."""
        if version:
            self._model_version = version

    def update(
        self, result: FrameResult | None, mono: float, wall: float
    ) -> tuple[ExpressionReport | None, ExpressionEvent | None]:
        """One tick (None: no new frame): what to report now, if anything."""
        if not self._detect:
            return None, None
        if result is not None and result.model_version:
            self._model_version = result.model_version
        return self._reports(self._smoother.update(result, mono), mono, wall)

    def switch(
        self, on: bool, mono: float, wall: float
    ) -> tuple[ExpressionReport | None, ExpressionEvent | None]:
        """Turn detection on or off: off forgets what was seen (the state becomes ``none``)."""
        if on == self._detect:
            return None, None
        self._detect = on
        if self._memory is not None:
            self._memory.save(on)
        if on:  # back on: say so in the state at once
            return self._reports(Step(self._smoother.republish(mono)), mono, wall)
        return self._reports(self._smoother.clear(mono), mono, wall)

    def current(self, mono: float, wall: float) -> ExpressionReport:
        """The state as it stands, marked as published now (start-up, reconnects)."""
        return self._report(self._smoother.republish(mono), mono, wall)

    def _reports(
        self, step: Step, mono: float, wall: float
    ) -> tuple[ExpressionReport | None, ExpressionEvent | None]:
        report = self._report(step.state, mono, wall) if step.state is not None else None
        t = step.transition
        event = ExpressionEvent(t.from_, t.to, t.confidence, wall) if t is not None else None
        return report, event

    def _report(self, state: State, mono: float, wall: float) -> ExpressionReport:
        if self._origin is None:
            self._origin = wall
        since = wall - (mono - state.since) if state.since else self._origin
        return ExpressionReport(
            expression=state.expression,
            confidence=state.confidence,
            distance=state.distance,
            faces=state.faces,
            since=since,
            timestamp=wall,
            model_version=self._model_version,
            detect=self._detect,
        )
