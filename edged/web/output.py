"""`WebOutput`: the page as one of the daemon's outputs.

The daemon tells it what it tells MQTT (state, events, switch, camera, model, stats) and
hands it each processed frame; it keeps the news on a `Board` for the server's threads,
passes frames to the `LiveView` (which ignores them while nobody watches), and runs the
server in a supervised thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from edged.daemon.outputs import Commands, ExpressionEvent, ExpressionReport, ModelStatus
from edged.daemon.payloads import event_body, state_body, stats_body
from edged.daemon.workers import FatalHandler, Worker
from edged.vision.pipeline import FrameResult
from edged.web.app import PageApp
from edged.web.server import PageServer

log = logging.getLogger(__name__)

POLL = 0.2  # s: how soon serve_forever notices a shutdown request


class WebOutput:
    """The live page's `Output` (and `ImageOutput`, `LiveOutput`, `StatsSource`)."""

    wants_images = True  # the live view; copied only while someone watches

    def __init__(
        self,
        app: PageApp,
        server: PageServer,
        *,
        url: str,
        on_fatal: FatalHandler | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.board = app.board
        self.view = app.view
        self.server = server
        self.url = url
        self._on_fatal = on_fatal
        self._wall = wall
        self._worker: Worker | None = None

    # -- Output -----------------------------------------------------------------------

    def start(self, commands: Commands) -> None:
        self.app.commands = commands
        self.view.start()
        self._worker = Worker("edged-web", self._serve, on_fatal=self._on_fatal, max_failures=3)
        self._worker.start()
        log.info("web page at %s", self.url)

    def _serve(self) -> None:
        self.server.serve_forever(poll_interval=POLL)

    def on_frame(self, result: FrameResult | None, now: float) -> None:
        self.board.ticked()

    def on_image(self, image: np.ndarray, result: FrameResult, now: float) -> None:
        self.view.offer(image, result)

    def on_state(self, report: ExpressionReport) -> None:
        self.board.state = state_body(report)

    def on_event(self, event: ExpressionEvent) -> None:
        self.board.add_event(event_body(event))

    def on_detect(self, on: bool) -> None:
        self.board.detect = on
        if not on:
            self.view.blank()

    def on_camera(self, online: bool, reason: str) -> None:
        self.board.camera = (online, reason)
        if not online:
            self.view.blank()

    def on_model(self, status: ModelStatus) -> None:
        self.board.model = status

    def on_stats(self, stats: dict[str, object]) -> None:
        if self.board.stats is None:
            self.on_live_stats(stats)

    def on_live_stats(self, stats: dict[str, object]) -> None:
        self.board.stats = stats_body(stats, self._wall())

    def stats_fields(self) -> dict[str, object]:
        return {"http_viewers": self.view.viewers, "http_auth_failures": self.app.limiter.total}

    def stop(self) -> None:
        """Quick: end every stream, stop serving, close the socket."""
        self.board.stopping = True
        self.view.stop(timeout=0.3)
        self.server.drop_all()
        worker = self._worker
        if worker is not None:
            worker.stop()
            if worker.alive:
                self.server.shutdown()  # returns within POLL
        self.server.server_close()
        self.server.drop_all()
