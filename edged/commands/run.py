"""``edged run``: the daemon's command line, and its composition root.

Flags become the top layer of the settings; `build_service` makes every part and hands
them to `Service`, so the daemon never imports MQTT and tests can wire their own parts.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edged.arguments import number
from edged.credentials import read_password
from edged.daemon.capture import FrameGrabber
from edged.daemon.expression import Expression
from edged.daemon.inbox import Inbox
from edged.daemon.model_store import ModelStore
from edged.daemon.notify import Notifier
from edged.daemon.outputs import JsonLinesOutput, Output
from edged.daemon.service import Service
from edged.daemon.smoothing import Smoother, SmoothingConfig
from edged.daemon.switch_state import SwitchMemory
from edged.enrollment.store import EnrollmentStore
from edged.errors import ConfigError, ListenError
from edged.logs import setup_logging
from edged.mqtt.client import make_client
from edged.mqtt.publisher import MqttPublisher
from edged.settings import HttpSettings, Settings, load_settings
from edged.vision.detector import DetectorConfig, FaceDetector
from edged.vision.motion import MotionGate
from edged.vision.pipeline import Pipeline
from edged.vision.tracker import TrackConfig
from edged.web.app import PageApp, load_assets
from edged.web.board import Board
from edged.web.metrics import make_registry
from edged.web.output import WebOutput
from edged.web.security import FailureLimiter, HostCheck
from edged.web.server import PageServer
from edged.web.stream import LiveView

log = logging.getLogger(__name__)

EPILOG = """\
settings come from (lowest first): defaults < --config FILE < environment
(EDGED_SECTION__KEY, e.g. EDGED_MQTT__HOST=broker.lan) < these flags.
Every option is documented in config/edged.toml (or: edged config example).

signals: SIGTERM/SIGINT stop cleanly (a second SIGINT forces exit); SIGHUP reloads the
model file. The model file is also reloaded by itself when it changes, and the model
remade when the enrolled faces (enroll.store, see edged enroll) change.

examples:
  edged run --config /etc/edged/edged.toml
  edged run --source clip.mp4 --loop --stdout --no-mqtt --model trainer.yml
  edged run --source /dev/video0 --fps 2 --log-level debug
"""


_positive = number(float, above=0.0)
HTTP_CREDENTIAL = "http_password"  # systemd LoadCredential=http_password:/etc/...
EXTRA_CONNECTIONS = 8  # besides the live views: the page's polls, /metrics, /healthz


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the daemon: camera -> faces -> expressions -> outputs",
        description="Read the camera at a fixed rate, detect faces, classify their\n"
        "expression with the model file, and publish each result (MQTT, JSON lines on\n"
        "stdout). Runs until stopped; reloads the model file when it changes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    p.add_argument(
        "--source",
        metavar="SRC",
        help="camera: device index (0), /dev/videoN, video file, URL, GStreamer pipeline, "
        "or picamera2 (camera.source)",
    )
    p.add_argument("--fps", type=_positive, help="frames processed per second (loop.fps)")
    p.add_argument("--model", type=Path, metavar="FILE", help="model file to watch (model.path)")
    p.add_argument(
        "--stdout",
        "--json",
        dest="stdout",
        action="store_true",
        default=None,
        help="print each result as a JSON line on stdout (output.stdout)",
    )
    p.add_argument(
        "--no-mqtt",
        dest="mqtt",
        action="store_false",
        default=None,
        help="do not publish over MQTT",
    )
    p.add_argument(
        "--loop",
        action="store_true",
        default=None,
        help="loop a video file source when it ends (camera.loop)",
    )
    p.add_argument(
        "--duration",
        type=_positive,
        metavar="SECONDS",
        help="stop by itself after this long (loop.duration)",
    )
    p.add_argument(
        "--stats-interval",
        type=_positive,
        metavar="SECONDS",
        help="seconds between stats reports (loop.stats_interval)",
    )
    p.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log level (log.level)"
    )
    p.set_defaults(func=run)


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The flags that were given, nested like the TOML file."""
    flags = {
        ("camera", "source"): args.source,
        ("camera", "loop"): args.loop,
        ("loop", "fps"): args.fps,
        ("loop", "duration"): args.duration,
        ("loop", "stats_interval"): args.stats_interval,
        ("model", "path"): args.model,
        ("output", "stdout"): args.stdout,
        ("mqtt", "enabled"): args.mqtt,
        ("log", "level"): args.log_level,
    }
    out: dict[str, dict[str, Any]] = {}
    for (section, key), value in flags.items():
        if value is not None:
            out.setdefault(section, {})[key] = value
    return out


def web_password(h: HttpSettings, environ: Mapping[str, str] = os.environ) -> str | None:
    """The page's password; a `ConfigError` when the page would be open to the network
    without one (a camera must never be one URL away from anyone on the LAN)."""
    password = read_password(
        "http.password_file", h.password, h.password_file, HTTP_CREDENTIAL, environ
    )
    if password == "":
        raise ConfigError("http: the password is empty")
    if h.enabled and not h.loopback and password is None:
        port = h.port or "PORT"  # 0: any free port, logged at start
        raise ConfigError(
            f"http.bind = {h.bind!r} opens the page (a live camera view) to the network: "
            f"set http.password_file (or the {HTTP_CREDENTIAL} systemd credential), or "
            f"bind to 127.0.0.1 and reach it with 'ssh -L {port}:localhost:{port} <this host>'"
        )
    return password


def tls_context(h: HttpSettings) -> ssl.SSLContext | None:
    if h.cert_file is None or h.key_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(h.cert_file, h.key_file)
    except (OSError, ssl.SSLError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"http.cert_file/key_file: cannot load {h.cert_file}: {why}") from None
    return ctx


def build_web(settings: Settings, inbox: Inbox) -> WebOutput:
    """The web page: settings checked, the port bound (so a taken port fails at start)."""
    h = settings.http
    password = web_password(h)
    tls = tls_context(h)
    if password is not None and not h.loopback and tls is None:
        log.warning(
            "web page: the password goes over the network unencrypted (http.bind = %s "
            "without TLS): set http.cert_file and key_file, or use a reverse proxy or ssh -L",
            h.bind,
        )
    board = Board(settings.loop.fps)
    view = LiveView(
        h.max_viewers,
        min(h.stream_fps, settings.loop.fps),
        h.jpeg_quality,
        on_fatal=inbox.worker_failed,
    )
    app = PageApp(
        board=board,
        view=view,
        hosts=HostCheck.for_machine(socket.gethostname(), h.hostnames),
        limiter=FailureLimiter(),
        username=h.username,
        password=password,
        assets=load_assets(),
        registry=make_registry(board),
    )
    try:
        server = PageServer(
            (h.bind, h.port),
            app,
            max_connections=h.max_viewers + EXTRA_CONNECTIONS,
            timeout=h.request_timeout,
            tls=tls,
        )
    except OSError as e:
        raise ListenError(
            f"web page: cannot listen on {h.bind} port {h.port}: {e.strerror or e} "
            "(another program on that port? set http.port, or http.enabled = false)"
        ) from None
    port = server.server_address[1]
    host = "localhost" if h.loopback else socket.gethostname()
    url = f"{'https' if tls else 'http'}://{host}:{port}/"
    return WebOutput(app, server, url=url, on_fatal=inbox.worker_failed)


def build_outputs(settings: Settings, inbox: Inbox) -> list[Output]:
    """The outputs ``edged run`` feeds, from settings (the one place outputs are made)."""
    outputs: list[Output] = []
    if settings.output.stdout:
        outputs.append(JsonLinesOutput(sys.stdout))
    if settings.mqtt.enabled:
        client = make_client(settings, will=True)
        outputs.append(MqttPublisher(settings, client, on_fatal=inbox.worker_failed))
    if settings.http.enabled:
        outputs.append(build_web(settings, inbox))
    return outputs


def build_service(
    settings: Settings,
    outputs: list[Output],
    *,
    inbox: Inbox | None = None,
    grabber: FrameGrabber | None = None,
    notifier: Notifier | None = None,
) -> Service:
    """The composition root: every part of the daemon, wired; `Service` only runs them.

    A caller may bring its own ``grabber`` or ``notifier`` (wired to its ``inbox``).
    """
    inbox = inbox or Inbox()
    d, m = settings.detector, settings.model
    return Service(
        settings.loop,
        grabber=grabber
        or FrameGrabber(
            settings.camera, on_state=inbox.camera_changed, on_fatal=inbox.worker_failed
        ),
        store=ModelStore(
            m.path,
            m.labels,
            m.poll_interval,
            on_change=inbox.model_changed,
            on_fatal=inbox.worker_failed,
            max_bytes=m.max_bytes,
            enrolled=EnrollmentStore(store) if (store := settings.enroll.store) else None,
        ),
        pipeline=Pipeline(
            FaceDetector(DetectorConfig.from_settings(d)),
            max_faces=settings.loop.max_faces,
            # Video: scan near known faces, and (motion) for new ones only where it moved.
            track=TrackConfig(full_scan_every=d.full_scan_frames(settings.loop.fps))
            if d.track
            else None,
            gate=MotionGate() if d.track and d.motion else None,
        ),
        outputs=outputs,
        notifier=notifier or Notifier(),
        expression=Expression(
            Smoother(SmoothingConfig.from_settings(settings)),
            memory=SwitchMemory(settings.privacy.state_file),
        ),
        inbox=inbox,
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, overrides(args))
    setup_logging(settings.log.level)
    inbox = Inbox()
    outputs = build_outputs(settings, inbox)
    if not outputs:
        log.warning(
            "no outputs enabled (output.stdout and mqtt.enabled are off): results go nowhere"
        )
    return build_service(settings, outputs, inbox=inbox).run()
