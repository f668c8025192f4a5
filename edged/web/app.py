"""The page's routes: what each path answers, behind the checks of `PageHandler`.

A fixed table, built once: the page's three files (held in memory, read once from the
package), the live view, the JSON API, /healthz and /metrics. Nothing in a request names
a file.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from prometheus_client import CollectorRegistry

from edged.daemon.outputs import Commands
from edged.web import metrics
from edged.web.board import Board
from edged.web.security import FailureLimiter, HostCheck
from edged.web.server import PageHandler
from edged.web.stream import LiveView

log = logging.getLogger(__name__)

ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.ico": ("icon.svg", "image/svg+xml"),  # asked for by every browser
}

Route = Callable[[PageHandler], None]


def load_assets() -> dict[str, tuple[str, bytes]]:
    """The page's files, by path: (content type, bytes). Read once, at start."""
    pkg = importlib.resources.files("edged.web") / "static"
    return {path: (ctype, (pkg / name).read_bytes()) for path, (name, ctype) in ASSETS.items()}


@dataclass
class PageApp:
    """Everything a request may reach; the server's threads share it."""

    board: Board
    view: LiveView
    hosts: HostCheck
    limiter: FailureLimiter
    username: str
    password: str | None
    assets: dict[str, tuple[str, bytes]]
    registry: CollectorRegistry
    commands: Commands | None = None  # set when the daemon starts the output

    @property
    def routes(self) -> dict[tuple[str, str], Route]:
        table: dict[tuple[str, str], Route] = {("GET", path): self._asset for path in self.assets}
        table.update(
            {
                ("GET", "/stream.mjpg"): self._stream,
                ("GET", "/api/state"): self._state,
                ("GET", "/api/stats"): self._stats,
                ("GET", "/api/events"): self._events,
                ("GET", "/api/overview"): self._overview,
                ("POST", "/api/detect"): self._detect,
                ("GET", "/healthz"): self._health,
                ("GET", "/metrics"): self._metrics,
            }
        )
        return table

    def _asset(self, h: PageHandler) -> None:
        ctype, body = self.assets[h.path.split("?", 1)[0]]
        h.send_body(HTTPStatus.OK, ctype, body)

    def _stream(self, h: PageHandler) -> None:
        why = self.board.picture()
        if why is not None:
            h.send_text(HTTPStatus.SERVICE_UNAVAILABLE, why)
            return
        h.stream()

    def _state(self, h: PageHandler) -> None:
        state = self.board.state
        if state is None:
            h.send_text(HTTPStatus.SERVICE_UNAVAILABLE, "starting")
            return
        h.send_json(state)

    def _stats(self, h: PageHandler) -> None:
        stats = self.board.stats
        if stats is None:
            h.send_text(HTTPStatus.SERVICE_UNAVAILABLE, "starting: no stats yet (about a second)")
            return
        h.send_json(stats)

    def _events(self, h: PageHandler) -> None:
        h.send_json(list(self.board.events))

    def _overview(self, h: PageHandler) -> None:
        """All the page shows, in one poll."""
        b = self.board
        online, reason = b.camera
        health = b.health()
        h.send_json(
            {
                "state": b.state,
                "events": list(b.events),
                "stats": b.stats,
                "detect": b.detect,
                "camera": {"online": online, "reason": reason},
                "picture": b.picture(),
                "health": {"ok": health.ok, "reason": health.reason},
                "viewers": {"now": self.view.viewers, "max": self.view.max_viewers},
            }
        )

    def _detect(self, h: PageHandler) -> None:
        body = h.read_json()
        if body is None:
            return
        on = body.get("on") if isinstance(body, dict) else None
        if not isinstance(on, bool) or self.commands is None:
            h.send_text(HTTPStatus.BAD_REQUEST, 'send {"on": true} or {"on": false}')
            return
        self.commands.set_detect(on, f"web page, {h.client_address[0]}")
        h.send_json({"detect": on}, HTTPStatus.ACCEPTED)

    def _health(self, h: PageHandler) -> None:
        health = self.board.health()
        status = HTTPStatus.OK if health.ok else HTTPStatus.SERVICE_UNAVAILABLE
        h.send_text(status, health.reason)

    def _metrics(self, h: PageHandler) -> None:
        h.send_body(HTTPStatus.OK, metrics.CONTENT_TYPE, metrics.render(self.registry))
