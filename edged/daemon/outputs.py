"""Where the daemon's results go: the `Output` protocol, the values it hands outputs, and
JSON lines on stdout.

The daemon decides (the expression, its events, the privacy switch); outputs only format
and deliver. MQTT (`edged.mqtt.publisher`) is another implementation of this protocol, and
imports nothing else of the daemon.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from edged.vision.pipeline import FrameResult

log = logging.getLogger(__name__)

NONE = "none"  # the expression when no face is in view (or detection is off)


@dataclass(frozen=True, slots=True)
class ExpressionReport:
    """The room's expression as the daemon decided it (debounced): what ``state`` says.

    Times are wall clock (``time.time()``): ``since`` is when the expression began,
    ``timestamp`` when this report was made.
    """

    expression: str
    confidence: float
    distance: float
    faces: int
    since: float
    timestamp: float
    model_version: str | None
    detect: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "expression": self.expression,
            "confidence": round(self.confidence, 4) if math.isfinite(self.confidence) else None,
            "distance": round(self.distance, 2) if math.isfinite(self.distance) else None,
            "faces": self.faces,
            "since": self.since,
            "timestamp": self.timestamp,
            "model_version": self.model_version,
            "detect": self.detect,
        }


@dataclass(frozen=True, slots=True)
class ExpressionEvent:
    """One change of the expression (``from_`` → ``to``) at wall-clock ``time``."""

    from_: str
    to: str
    confidence: float
    time: float

    def as_dict(self) -> dict[str, object]:
        return {
            "from": self.from_,
            "to": self.to,
            "confidence": round(self.confidence, 4),
            "time": self.time,
        }


ModelState = Literal["loaded", "no model", "error"]


@dataclass(frozen=True)
class ModelStatus:
    """What the store has and why; ``error`` is the current problem, even while ``loaded``.

    ``state``: "loaded" (a model is in use), "no model" (no file yet), "error" (a file
    that cannot be used, and no older model to fall back on).
    """

    state: ModelState
    version: str | None = None
    error: str | None = None
    loaded_at: float | None = None  # wall clock of the last successful load
    load_ms: float | None = None
    reloads: int = 0  # successful loads after the first
    failures: int = 0  # changes that did not give a usable model (bad file, deleted file)
    samples: int = 0
    classes: list[str] = field(default_factory=list)
    # From the enrollment store, used as exemplars: counts only, never names (private).
    enrolled_people: int = 0
    enrolled_faces: int = 0


class Commands(Protocol):
    """What an output may ask of the daemon (from any thread); the loop carries it out."""

    def set_detect(self, on: bool, source: str) -> None:
        """Turn expression detection on or off (the privacy switch); ``source`` is for the log."""

    def reload_model(self) -> None:
        """Reload the model file now (as SIGHUP does)."""


class Output(Protocol):
    """Where results go. Every method is called from the loop thread and must not block."""

    def start(self, commands: Commands) -> None:
        """Non-blocking: connect in the background; ``commands`` is how to ask the daemon."""

    def on_frame(self, result: FrameResult | None, now: float) -> None:
        """Every tick; None = no new frame, or detection switched off this tick.

        ``now`` is the wall clock (``time.time()``), for timestamps in payloads; it can
        jump (NTP), so measure intervals with ``time.monotonic()`` instead.
        """

    def on_state(self, report: ExpressionReport) -> None:
        """The expression changed, or is re-stated (heartbeat, switch, model change)."""

    def on_event(self, event: ExpressionEvent) -> None:
        """The expression changed from one value to another (once per change)."""

    def on_detect(self, on: bool) -> None:
        """The privacy switch is now ``on`` (also once at start, with its initial value)."""

    def on_camera(self, online: bool, reason: str) -> None:
        """The camera went online or offline (``reason`` says why)."""

    def on_model(self, status: ModelStatus) -> None:
        """The model changed: loaded, reload failed (old one kept), or missing."""

    def on_stats(self, stats: dict[str, object]) -> None:
        """Every ``loop.stats_interval`` seconds, and once more at shutdown."""

    def stop(self) -> None:
        """Publish offline, disconnect; quick."""


@runtime_checkable
class ImageOutput(Protocol):
    """An output that asked for the camera image itself (the MQTT snapshot, the live view).

    ``on_image`` gets the frame only while detection is on; the image is the grabber's
    buffer, valid during the call only: copy what you keep, and return quickly.
    """

    wants_images: bool

    def on_image(self, image: np.ndarray, result: FrameResult, now: float) -> None: ...


@runtime_checkable
class StatsSource(Protocol):
    """An output with counters of its own (the broker connection, the page's viewers).

    The daemon merges them into every stats report, so every output reports the same
    stats. Called from the loop thread; must be quick and must not block.
    """

    def stats_fields(self) -> dict[str, object]: ...


@runtime_checkable
class StatusSource(Protocol):
    """An output with something systemd's STATUS= line must show (the broker's twin
    clash: this daemon publishes nothing). The daemon asks once a second, on the loop
    thread, and sends STATUS= when a note changed; must be quick and must not block."""

    def status_note(self) -> str | None: ...


@runtime_checkable
class LiveOutput(Protocol):
    """An output that shows the stats live (the web page): the daemon hands it a fresh
    stats dict about once a second, besides the periodic ``on_stats`` report."""

    def on_live_stats(self, stats: dict[str, object]) -> None: ...


class JsonLinesOutput:
    """One JSON object per line: ``frame``, ``state``, ``event``, ``detect``, ``camera``,
    ``model`` and ``stats`` records.

    For pipes and log collectors (``edged run --stdout | jq``). A closed pipe turns the
    output off instead of stopping the daemon.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._open = True

    def _write(self, record: dict[str, Any]) -> None:
        if not self._open:
            return
        try:
            self._stream.write(json.dumps(record) + "\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError):  # reader went away / stream closed
            self._open = False
            log.warning("stdout is closed: no more JSON lines")
            with contextlib.suppress(OSError, ValueError):
                # So the interpreter's final flush does not fail again at exit.
                os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    @property
    def open(self) -> bool:
        """False once the reader went away."""
        return self._open

    def start(self, commands: Commands) -> None:
        pass

    def on_frame(self, result: FrameResult | None, now: float) -> None:
        if result is None:
            return
        self._write(
            {
                "type": "frame",
                "time": round(result.timestamp or now, 3),
                "model_version": result.model_version,
                "faces": [f.as_dict() for f in result.faces],
                "detect_ms": round(result.detect_ms, 2),
                "classify_ms": round(result.classify_ms, 2),
            }
        )

    def on_state(self, report: ExpressionReport) -> None:
        record = report.as_dict()
        record["since"] = round(report.since, 3)
        record["timestamp"] = round(report.timestamp, 3)
        self._write({"type": "state", **record})

    def on_event(self, event: ExpressionEvent) -> None:
        self._write({"type": "event", **event.as_dict(), "time": round(event.time, 3)})

    def on_detect(self, on: bool) -> None:
        self._write({"type": "detect", "on": on})

    def on_camera(self, online: bool, reason: str) -> None:
        self._write({"type": "camera", "online": online, "reason": reason})

    def on_model(self, status: ModelStatus) -> None:
        self._write(
            {
                "type": "model",
                "state": status.state,
                "version": status.version,
                "error": status.error,
                "classes": list(status.classes),
                "load_ms": None if status.load_ms is None else round(status.load_ms, 1),
                "reloads": status.reloads,
                "failures": status.failures,
                "enrolled_people": status.enrolled_people,
            }
        )

    def on_stats(self, stats: dict[str, object]) -> None:
        self._write({"type": "stats", **stats})

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()
