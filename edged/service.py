"""The daemon: the fixed-rate frame loop, its outputs, signals, stats.

Skeleton: the `Output` interface and `Controls` are stable (the MQTT publisher implements
them); the loop itself follows.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

from edged.pipeline import FrameResult

if TYPE_CHECKING:
    from edged.model_store import ModelStatus
    from edged.settings import Settings


class Output(Protocol):
    """Where results go. Every method is called from the loop thread and must not block."""

    def start(self) -> None:
        """Non-blocking: connect in the background."""

    def on_frame(self, result: FrameResult | None, now: float) -> None:
        """Every tick; None = no new frame, or detection switched off this tick."""

    def on_camera(self, online: bool, reason: str) -> None:
        """The camera went online or offline (``reason`` says why)."""

    def on_model(self, status: ModelStatus) -> None:
        """The model changed: loaded, reload failed (old one kept), or missing."""

    def on_stats(self, stats: dict[str, object]) -> None:
        """Every ``loop.stats_interval`` seconds."""

    def stop(self) -> None:
        """Publish offline, disconnect; quick."""


class Controls:
    """Switches set from other threads, read by the loop once per tick."""

    def __init__(self) -> None:
        # Set = classify and publish expressions (the privacy switch; default on).
        self.detect = threading.Event()
        self.detect.set()
        # SIGHUP sets it; the loop asks the model store to reload and clears it.
        self.reload = threading.Event()


def build_outputs(settings: Settings, controls: Controls) -> list[Output]:
    """The outputs ``edged run`` feeds, from settings."""
    outputs: list[Output] = []
    # --- MQTT: the publisher is constructed here (edged/publisher.py) ---
    return outputs
