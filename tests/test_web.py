"""The web page's security and robustness promises, on the real server of real daemons.

Most tests share one ``edged run`` (module scope: a looped face clip, a password from a
password file, two viewer slots, ``request_timeout = 1``, MQTT on) and talk to it over
real sockets: raw ones where a test must control every byte (a silent client, a viewer
that stops reading), `http.client` elsewhere. A test that stops its daemon or needs other
settings starts one of its own. Failed logins count per client address, so tests that send
wrong passwords do it from addresses of their own (127.0.0.x) and never lock out the rest.

Waits are for sentinels (a log line, a status, the viewer count of /api/overview, the
next live stats), with generous liveness deadlines. The only times asserted are promises:
SIGTERM -> exit within 2 s (README), and a silent client dropped within a few seconds of
``request_timeout = 1``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE, Segment, write_video
from fixtures_broker import (
    PASSWORD,
    USER,
    Broker,
    TlsFiles,
    device_id_for,
    make_tls_files,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from edged.web.app import PageApp, load_assets
from edged.web.board import Board, Health
from edged.web.metrics import make_registry
from edged.web.security import FailureLimiter, HostCheck
from edged.web.server import PageServer
from edged.web.stream import LiveView

HAPPY = SAMPLE / "images" / "Aaron_Guiel_0001.jpg"
LIVENESS = 20.0  # s: a generous deadline for something that should happen, not a speed claim
SHORT = 5.0  # s: "within a few seconds" (request_timeout = 1 on the shared daemon)
USERNAME = "edged"
PAGE_PW = "pAge-pw-7c1e"
AUTH = (USERNAME, PAGE_PW)
MAX_VIEWERS = 2
CONNECTION_CAP = MAX_VIEWERS + 8  # edged.commands.run.EXTRA_CONNECTIONS
ROUTES = [
    ("GET", "/"),
    ("GET", "/app.js"),
    ("GET", "/style.css"),
    ("GET", "/stream.mjpg"),
    ("GET", "/api/state"),
    ("GET", "/api/stats"),
    ("GET", "/api/events"),
    ("GET", "/api/overview"),
    ("POST", "/api/detect"),
    ("GET", "/metrics"),
]

# -- a daemon -------------------------------------------------------------------------------


def toml(config: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [
            f"{k} = {json.dumps(str(v) if isinstance(v, Path) else v)}" for k, v in values.items()
        ]
    return "\n".join(lines) + "\n"


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without any EDGED_* or systemd variable, plus ``extra``."""
    drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "CREDENTIALS_DIRECTORY")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_") and k not in drop}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class Daemon:
    """``python -m edged <command> --config FILE`` with stderr kept in a file."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        config: dict[str, dict[str, Any]],
        *args: str,
        command: tuple[str, ...] = ("run",),
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = tmp / f"{name}.toml"
        self.config.write_text(toml(config))
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edged", *command, "--config", str(self.config), *args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=tmp,
            env=clean_environ(**(env or {})),
        )
        self.port = 0
        self.scheme = ""

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def lines(self) -> list[str]:
        return [line for line in self.log().splitlines() if line.strip()]

    def started(self) -> int:
        """Wait until the loop runs; the page's port (from 'web page at URL')."""
        up = wait_until(lambda: "running at" in self.log() or self.proc.poll() is not None, 30)
        assert up and self.proc.poll() is None, f"not running\n{self.log()}"
        m = re.search(r"web page at (https?)://[^/\s]+:(\d+)/", self.log())
        assert m, self.log()
        self.scheme, self.port = m[1], int(m[2])
        return self.port

    def wait(self, timeout: float = LIVENESS) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running\n{self.log()}") from None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``daemons(name, config, *args)`` -> a started `Daemon`, killed afterwards."""
    made: list[Daemon] = []

    def start(name: str, config: dict[str, dict[str, Any]], *args: str, **kw: Any) -> Daemon:
        d = Daemon(tmp_path, name, config, *args, **kw)
        made.append(d)
        return d

    yield start
    for d in made:
        d.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("web-tls"))


def make_clip(path: Path) -> Path:
    write_video(path, [Segment(HAPPY, 2.0)], fps=10)
    return path


# -- HTTP clients ---------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str = "GET",
    path: str = "/api/state",
    *,
    host: str | None = None,
    auth: tuple[str, str] | None = AUTH,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    source: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
    server: str = "127.0.0.1",
) -> Reply:
    """One request on a connection of its own (closed after it, freeing its server slot)."""
    hdrs = {"Host": host or f"localhost:{port}", "Connection": "close"}
    if auth is not None:
        hdrs["Authorization"] = basic(*auth)
    hdrs.update(headers or {})
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection(
            server, port, timeout=LIVENESS, source_address=(source, 0), context=tls
        )
    else:
        conn = http.client.HTTPConnection(
            server, port, timeout=LIVENESS, source_address=(source, 0)
        )
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def api(port: int, path: str, auth: tuple[str, str] | None = AUTH) -> Any:
    reply = request(port, "GET", path, auth=auth)
    assert reply.status == 200, (path, reply.status, reply.text)
    return reply.json()


def raw_request(port: int, path: str, auth: tuple[str, str] | None = AUTH) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: localhost:{port}"]
    if auth is not None:
        lines.append(f"Authorization: {basic(*auth)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Stream:
    """A live view watched as a browser does: every MJPEG part read, on a thread."""

    def __init__(self, port: int, auth: tuple[str, str] | None = AUTH) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=LIVENESS)
        self.sock.sendall(raw_request(port, "/stream.mjpg", auth))
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline().strip()) != b"":
            name, _, value = line.decode().partition(":")
            self.headers[name.lower()] = value.strip()
        self.frames = 0
        self.bytes = 0
        self.last = b""
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._thread.start()
        else:
            self.ended.set()

    def _read(self) -> None:
        try:
            while line := self.file.readline():
                if line.strip() != b"--edgedframe":
                    continue
                length = 0
                while (h := self.file.readline().strip()) != b"":
                    name, _, value = h.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                data = self.file.read(length)
                if len(data) < length:
                    break
                self.last = data
                self.bytes += len(data)
                self.frames += 1
        except (OSError, ValueError):
            pass
        finally:
            self.ended.set()

    def wait_frames(self, n: int) -> None:
        assert wait_until(lambda: self.frames >= n or self.ended.is_set(), LIVENESS)
        assert self.frames >= n, f"the stream ended after {self.frames} frame(s)"
        assert self.last.startswith(b"\xff\xd8"), "not a JPEG"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive():
            self._thread.join(LIVENESS)
        self.file.close()
        self.sock.close()


@contextlib.contextmanager
def streams() -> Iterator[list[Stream]]:
    """Streams opened inside are all closed at the end."""
    opened: list[Stream] = []
    try:
        yield opened
    finally:
        for s in opened:
            s.close()


def stuck_viewer(port: int, auth: tuple[str, str] | None = AUTH) -> socket.socket:
    """A viewer that reads the response's headers and then never reads again, with a small
    receive buffer: the server's writes to it block as soon as the buffers are full."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(LIVENESS)
    s.connect(("127.0.0.1", port))
    s.sendall(raw_request(port, "/stream.mjpg", auth))
    head = b""
    while b"\r\n\r\n" not in head:  # byte by byte: not one byte of a frame is taken
        chunk = s.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def viewers(port: int, auth: tuple[str, str] | None = AUTH) -> int:
    return int(api(port, "/api/overview", auth)["viewers"]["now"])


def picture(port: int, auth: tuple[str, str] | None = AUTH) -> bool:
    """Whether there is a live view to watch (camera online, detection on)."""
    return api(port, "/api/overview", auth)["picture"] is None


def next_stats(port: int) -> dict[str, Any]:
    """The first live stats taken after now (the loop has ticked since)."""
    before = api(port, "/api/stats")["timestamp"]
    got: list[dict[str, Any]] = []

    def newer() -> bool:
        got[:] = [api(port, "/api/stats")]
        return got[0]["timestamp"] != before

    assert wait_until(newer, LIVENESS, 0.1)
    return got[0]


# -- the shared daemon ----------------------------------------------------------------------


@dataclass
class Page:
    daemon: Daemon
    port: int

    def log(self) -> str:
        return self.daemon.log()


@pytest.fixture(scope="module")
def page(broker: Broker, sample_model: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("page")
    password_file = tmp / "http_password"
    password_file.write_text(PAGE_PW + "\n")
    config = {
        "camera": {"source": make_clip(tmp / "clip.avi"), "loop": True},
        "loop": {"fps": 10},
        "model": {"path": sample_model},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "device_id": device_id_for("test_web.py::page"),
        },
        "http": {
            "port": 0,
            "password_file": password_file,
            "max_viewers": MAX_VIEWERS,
            "request_timeout": 1,
            "hostnames": ["edged.test"],
            "stream_fps": 10,
            "jpeg_quality": 95,  # large frames: a viewer's buffers fill quickly
        },
    }
    d = Daemon(tmp, "page", config)
    try:
        port = d.started()

        def ready() -> bool:
            stats = request(port, "GET", "/api/stats")
            if stats.status != 200:
                return False
            s = stats.json()
            return bool(s["camera"]["online"] and s["broker_connected"] and s["frames"] > 0)

        assert wait_until(ready, LIVENESS, 0.1), d.log()
        yield Page(d, port)
    finally:
        d.close()


@pytest.fixture
def quiet_page(page: Page) -> Page:
    """The shared daemon with detection on and a picture, and nobody watching."""
    assert wait_until(lambda: viewers(page.port) == 0, LIVENESS), "a viewer is still there"
    assert wait_until(lambda: picture(page.port), LIVENESS)
    return page


# -- 1. a page open to the network needs a password ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "args"), [(("run",), ("--no-mqtt",)), (("config", "check"), ())]
)
def test_a_lan_bind_without_a_password_exits_78_with_one_line_naming_http_bind(
    daemons, command, args
):
    d = daemons("lan", {"http": {"bind": "0.0.0.0", "port": 9143}}, *args, command=command)
    assert d.wait() == 78, d.log()
    lines = d.lines()
    assert len(lines) == 1, lines
    assert "http.bind = '0.0.0.0'" in lines[0]
    # and what to do about it, for this page's port
    assert "http.password_file" in lines[0] and "ssh -L 9143:localhost:9143" in lines[0]


def lan_page(tmp_path: Path, **http: Any) -> dict[str, dict[str, Any]]:
    return {
        "camera": {"source": make_clip(tmp_path / "clip.avi"), "loop": True},
        "http": {"bind": "0.0.0.0", "port": 0, **http},
    }


@pytest.mark.slow
def test_a_lan_bind_with_a_password_file_starts_and_warns_it_is_sent_unencrypted(
    daemons, tmp_path, sample_model
):
    pw = tmp_path / "pw"
    pw.write_text("from-a-file-91\n")
    config = lan_page(tmp_path, password_file=pw)
    check = daemons("check", config, command=("config", "check"))
    assert check.wait() == 0, check.log()
    d = daemons("lan", config, "--no-mqtt", "--model", str(sample_model))
    port = d.started()
    assert request(port, auth=None).status == 401
    assert request(port, auth=(USERNAME, "from-a-file-91")).status == 200
    warnings = [line for line in d.lines() if "WARNING" in line and "unencrypted" in line]
    assert len(warnings) == 1, d.log()
    assert "http.bind = 0.0.0.0" in warnings[0] and "cert_file" in warnings[0]
    assert d.stop() == 0, d.log()


@pytest.mark.slow
def test_a_lan_bind_with_the_systemd_credential_starts(daemons, tmp_path, sample_model):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "http_password").write_text("from-systemd-37\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    config = lan_page(tmp_path)
    check = daemons("check", config, command=("config", "check"), env=env)
    assert check.wait() == 0, check.log()
    d = daemons("lan", config, "--no-mqtt", "--model", str(sample_model), env=env)
    port = d.started()
    assert request(port, auth=None).status == 401
    assert request(port, auth=(USERNAME, "from-systemd-37")).status == 200
    assert d.stop() == 0, d.log()


# -- 2. the password ------------------------------------------------------------------------


def shared(test: Any) -> Any:
    """A test on the shared daemon (MQTT on: it needs the session's broker)."""
    return pytest.mark.broker(pytest.mark.slow(test))


def post_json(body: bytes | None = None) -> dict[str, Any]:
    return {"body": body if body is not None else b'{"on": "?"}',
            "headers": {"Content-Type": "application/json"}}  # fmt: skip


@shared
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_answers_401_with_www_authenticate_without_the_right_password(
    page, method, path
):
    i = ROUTES.index((method, path))
    kw = post_json() if method == "POST" else {}
    missing = request(page.port, method, path, auth=None, **kw)
    # Each wrong login from an address of its own: one failure each, never a burst.
    wrong = request(
        page.port, method, path, auth=(USERNAME, "nope"), source=f"127.0.0.{20 + i}", **kw
    )
    user = request(
        page.port, method, path, auth=("admin", PAGE_PW), source=f"127.0.0.{40 + i}", **kw
    )
    for reply in (missing, wrong, user):
        assert reply.status == 401, (path, reply.status, reply.text)
        assert reply.headers["WWW-Authenticate"].startswith('Basic realm="edged"'), path
        assert reply.text == "login required\n"


@shared
@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[1] != "/stream.mjpg"])
def test_every_route_answers_with_the_right_password(page, method, path):
    reply = request(page.port, method, path, **(post_json() if method == "POST" else {}))
    # past the login, a POST's body is checked: {"on": "?"} is not a switch position
    assert reply.status == (400 if method == "POST" else 200), (path, reply.status, reply.text)


@shared
def test_the_live_view_answers_with_the_right_password(quiet_page):
    with streams() as opened:
        opened.append(Stream(quiet_page.port))
        assert opened[0].status == 200
        assert opened[0].headers["content-type"].startswith("multipart/x-mixed-replace")
        opened[0].wait_frames(1)


@shared
def test_healthz_answers_200_ok_without_a_password_while_the_loop_ticks(page):
    for _ in range(2):  # across live stats updates: the loop keeps ticking
        reply = request(page.port, "GET", "/healthz", auth=None)
        assert (reply.status, reply.text) == (200, "ok\n")
        assert "WWW-Authenticate" not in reply.headers
        next_stats(page.port)
    wrong = request(page.port, "GET", "/healthz", auth=(USERNAME, "nope"), source="127.0.0.60")
    assert wrong.status == 200  # credentials are not even looked at


@shared
def test_repeated_failed_logins_from_one_address_get_429_and_one_warning(page):
    attacker = "127.0.0.3"
    statuses = [
        request(page.port, auth=(USERNAME, f"guess{i}"), source=attacker).status for i in range(5)
    ]
    assert statuses == [401] * 5
    # the burst is on: even the right password is refused from there, for a while
    assert request(page.port, source=attacker).status == 429
    for i in range(5):
        reply = request(page.port, auth=(USERNAME, f"more{i}"), source=attacker)
        assert reply.status == 429
    assert "too many failed logins" in reply.text
    # the 429s were answered after anything they would have logged: the log is complete
    warnings = [
        line for line in page.log().splitlines() if "failed logins" in line and attacker in line
    ]
    assert len(warnings) == 1, warnings
    assert "WARNING" in warnings[0]
    # others are not locked out, and monitors still get /healthz from there
    assert request(page.port).status == 200
    assert request(page.port, "GET", "/healthz", auth=None, source=attacker).status == 200
    assert next_stats(page.port)["http_auth_failures"] >= 5


# -- 3. Host names ----------------------------------------------------------------------------


@shared
@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost.evil.example"])
def test_a_foreign_host_header_is_refused_421_on_every_route(page, host):
    host = host.format(port=page.port)
    for method, path in [*ROUTES, ("GET", "/healthz"), ("GET", "/no-such-page")]:
        kw = post_json() if method == "POST" else {}
        for auth in (AUTH, None):  # before the login: a rebound name learns nothing
            reply = request(page.port, method, path, host=host, auth=auth, **kw)
            assert reply.status == 421, (host, path, reply.status)
            assert "http.hostnames" in reply.text
            assert "WWW-Authenticate" not in reply.headers


@shared
def test_local_names_ips_and_configured_hostnames_are_accepted(page):
    port = page.port
    for host in [
        "localhost", f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.1", f"[::1]:{port}",
        "edged.test", f"EDGED.test:{port}", f"{socket.gethostname()}:{port}",
    ]:  # fmt: skip
        reply = request(port, "GET", "/api/state", host=host)
        assert reply.status == 200, (host, reply.status, reply.text)


# -- 4. the privacy switch: POST /api/detect --------------------------------------------------


def detect(page: Page, on: bool, **headers: str) -> Reply:
    body = json.dumps({"on": on}).encode()
    hdrs = {"Content-Type": "application/json", **headers}
    return request(page.port, "POST", "/api/detect", body=body, headers=hdrs)


def own_origin(page: Page) -> str:
    return f"http://localhost:{page.port}"


@shared
def test_a_cross_site_detect_post_is_refused_403_and_detection_stays_on(quiet_page):
    page = quiet_page
    switched = page.log().count("expression detection switched")
    for headers in [
        {"Origin": "http://evil.example"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": own_origin(page), "Sec-Fetch-Site": "cross-site"},  # the browser knows
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": f"http://localhost:{page.port + 1}"},  # another program on this machine
        {"Origin": "null"},
    ]:
        reply = detect(page, False, **headers)
        assert (reply.status, reply.text) == (403, "cross-site request refused\n"), headers
    stats = next_stats(page.port)  # the loop has ticked (and drained its inbox) since
    assert stats["detect"] is True
    assert api(page.port, "/api/state")["detect"] == "ON"
    assert page.log().count("expression detection switched") == switched


@shared
def test_detect_takes_only_a_small_json_post(page):
    get = request(page.port, "GET", "/api/detect")
    assert get.status == 405
    # what a cross-site <form> (or a fetch without a preflight) can send
    for ctype, body in [("application/x-www-form-urlencoded", b"on=false"),
                        ("text/plain", b'{"on": false}'),
                        ("multipart/form-data; boundary=x", b"--x--")]:  # fmt: skip
        reply = request(
            page.port, "POST", "/api/detect", body=body, headers={"Content-Type": ctype}
        )
        assert (reply.status, reply.text) == (415, "send application/json\n"), ctype
    big = b'{"on": false, "pad": "' + b"x" * 5000 + b'"}'
    assert request(page.port, "POST", "/api/detect", **post_json(big)).status == 413
    assert request(page.port, "POST", "/api/detect", **post_json(b"{not json")).status == 400
    assert request(page.port, "POST", "/api/detect", **post_json(b'"on"')).status == 400
    # none of these switched anything
    assert next_stats(page.port)["detect"] is True


@shared
def test_a_same_origin_detect_post_switches_detection_off_and_the_state_says_off(quiet_page):
    page = quiet_page
    try:
        reply = detect(page, False, Origin=own_origin(page), **{"Sec-Fetch-Site": "same-origin"})
        assert (reply.status, reply.json()) == (202, {"detect": False})
        assert wait_until(lambda: api(page.port, "/api/state")["detect"] == "OFF", LIVENESS)
        assert next_stats(page.port)["detect"] is False
        # no picture while off, and the page says why
        off = request(page.port, "GET", "/stream.mjpg")
        assert off.status == 503 and "switched off" in off.text
        # an older browser sends only Origin; a script neither: both are the page's own
        assert detect(page, True, Origin=own_origin(page)).status == 202
        assert wait_until(lambda: api(page.port, "/api/state")["detect"] == "ON", LIVENESS)
        assert detect(page, False).status == 202
        assert wait_until(lambda: api(page.port, "/api/state")["detect"] == "OFF", LIVENESS)
    finally:
        detect(page, True)
        assert wait_until(lambda: picture(page.port), LIVENESS)
    assert "expression detection switched off (web page, 127.0.0.1)" in page.log()


def exchange(port: int, data: bytes, limit: int = 256 * 1024) -> bytes:
    """Send ``data`` on one connection; what comes back until the server closes it (or
    the first ``limit`` bytes, if it never does)."""
    with socket.create_connection(("127.0.0.1", port), timeout=LIVENESS) as s:
        s.sendall(data)
        received = b""
        while len(received) < limit and (chunk := s.recv(65536)):
            received += chunk
    return received


LOGIN = f"Authorization: {basic(*AUTH)}\r\n"
JSON = "Content-Type: application/json\r\n"


@shared
@pytest.mark.parametrize(
    ("refusal", "host", "headers"),
    [
        (401, "localhost", JSON),  # no login
        (415, "localhost", LOGIN + "Content-Type: text/plain\r\n"),
        (421, "evil.example", LOGIN + JSON),
        (403, "localhost", LOGIN + JSON + "Origin: http://evil.example\r\n"),
        (404, "localhost", LOGIN + JSON),  # at /api/nothing
    ],
)
def test_the_body_of_a_refused_post_is_never_answered_as_another_request(
    page, refusal, host, headers
):
    # Behind a proxy that reuses its connection to edged for several users, a body left
    # unread would be answered as a request of its own: the connection must close instead.
    inner = f"GET /api/state HTTP/1.1\r\nHost: localhost\r\n{LOGIN}\r\n"
    path = "/api/nothing" if refusal == 404 else "/api/detect"
    outer = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{page.port}\r\n{headers}"
        f"Content-Length: {len(inner)}\r\n\r\n{inner}"
    )
    answer = exchange(page.port, outer.encode())
    assert answer.startswith(f"HTTP/1.1 {refusal} ".encode()), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert b"\r\nConnection: close\r\n" in answer


@shared
@pytest.mark.parametrize("length", ["+13", "1_3", "13, 13", "0xd", "-1", "\u0661\u0663"])
def test_a_post_length_that_is_not_one_plain_number_is_refused(page, length):
    body = b'{"on": false}'  # 13 bytes
    head = (
        f"POST /api/detect HTTP/1.1\r\nHost: localhost:{page.port}\r\n{LOGIN}{JSON}"
        f"Content-Length: {length}\r\n\r\n"
    )
    try:
        answer = exchange(page.port, head.encode() + body)
        assert answer.startswith(b"HTTP/1.1 411 "), answer[:200]
        assert answer.count(b"HTTP/1.1 ") == 1, answer
        assert next_stats(page.port)["detect"] is True
    finally:
        detect(page, True)  # had it been taken, detection is off: on again for the others


@shared
def test_head_of_the_live_view_sends_headers_and_no_frames(quiet_page):
    port = quiet_page.port
    answer = exchange(
        port, f"HEAD /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n{LOGIN}\r\n".encode()
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"multipart/x-mixed-replace" in head
    assert body == b""


# -- 5. viewer slots --------------------------------------------------------------------------


@shared
def test_a_third_viewer_gets_503_busy_and_a_new_one_is_accepted_after_one_leaves(quiet_page):
    port = quiet_page.port
    with streams() as opened:
        for _ in range(MAX_VIEWERS):
            opened.append(Stream(port))
            opened[-1].wait_frames(2)
        third = request(port, "GET", "/stream.mjpg")
        assert third.status == 503
        assert third.text == "busy: at most 2 live views at once (http.max_viewers)\n"
        assert viewers(port) == MAX_VIEWERS
        opened[0].close()
        assert wait_until(lambda: viewers(port) == MAX_VIEWERS - 1, LIVENESS)
        opened.append(Stream(port))
        assert opened[-1].status == 200
        opened[-1].wait_frames(2)
        opened[1].wait_frames(opened[1].frames + 2)  # the other viewer is still served


# -- 6. silent clients ------------------------------------------------------------------------


def closed_by_server(s: socket.socket) -> bool:
    """Whether the server closes ``s`` within a few seconds, without a byte of answer."""
    s.settimeout(SHORT)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@shared
def test_a_client_that_sends_nothing_is_disconnected_after_request_timeout(page):
    with socket.create_connection(("127.0.0.1", page.port), timeout=LIVENESS) as s:
        assert closed_by_server(s)
    with socket.create_connection(("127.0.0.1", page.port), timeout=LIVENESS) as s:
        s.sendall(b"GET /api/state HTTP/1.1\r\nHost: localh")  # half a request, then nothing
        assert closed_by_server(s)


@shared
def test_a_client_dripping_a_request_byte_by_byte_is_dropped_after_request_timeout(page):
    # One byte every 0.3 s keeps every single read under the 1 s timeout; the deadline
    # covers the whole request, so the server still closes it within a few seconds.
    request_bytes = b"GET /api/state HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200
    with socket.create_connection(("127.0.0.1", page.port), timeout=LIVENESS) as s:
        start = time.monotonic()
        closed = False
        for byte in request_bytes:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            s.settimeout(0.3)
            try:
                if s.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
        assert closed, "the server kept a dripping client for the whole request"
        assert time.monotonic() - start < SHORT


@shared
def test_a_live_view_ends_when_detection_is_switched_off_and_frees_its_slot(quiet_page):
    page = quiet_page
    with streams() as opened:
        opened.append(view := Stream(page.port))
        view.wait_frames(1)
        assert wait_until(lambda: viewers(page.port) == 1, LIVENESS)
        try:
            assert detect(page, False).status == 202
            assert view.ended.wait(LIVENESS), "the stream went on with detection off"
            assert wait_until(lambda: viewers(page.port) == 0, LIVENESS)
        finally:
            detect(page, True)
            assert wait_until(lambda: picture(page.port), LIVENESS)


@shared
def test_the_icon_is_served_and_the_server_header_names_no_versions(page):
    icon = request(page.port, "GET", "/favicon.ico")
    assert icon.status == 200 and icon.headers["Content-Type"] == "image/svg+xml"
    assert request(page.port, "GET", "/healthz", auth=None).headers["Server"] == "edged"


def still_open(s: socket.socket) -> bool:
    """Whether ``s`` is open now (a look, no wait)."""
    timeout = s.gettimeout()
    s.setblocking(False)
    try:
        return bool(s.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return True  # nothing to read, and not closed
    except ConnectionResetError:
        return False
    finally:
        s.settimeout(timeout)


@shared
def test_idle_connections_beyond_the_cap_do_not_lock_out_the_page(quiet_page):
    page = quiet_page  # no viewer holds a connection
    idle = [
        socket.create_connection(("127.0.0.1", page.port), timeout=LIVENESS)
        for _ in range(CONNECTION_CAP)
    ]
    extra = [socket.create_connection(("127.0.0.1", page.port), timeout=LIVENESS)]
    try:
        # the cap (max_viewers + 8) is reached: one more is closed at once, while the
        # idle ones wait out their request_timeout
        assert closed_by_server(extra[0])
        assert still_open(idle[-1])  # accepted just before it
        assert all(closed_by_server(s) for s in idle)
    finally:
        for s in idle + extra:
            s.close()
    assert request(page.port).status == 200
    assert request(page.port, "GET", "/healthz", auth=None).status == 200


# -- 7. a viewer that stops reading -----------------------------------------------------------


@shared
def test_a_viewer_that_stops_reading_never_delays_the_loop_and_is_dropped(quiet_page):
    port = quiet_page.port
    before = api(port, "/api/stats")
    stuck = stuck_viewer(port)
    try:
        seen: list[dict[str, Any]] = []

        def dropped() -> bool:
            overview = api(port, "/api/overview")
            seen.append(overview)
            return overview["viewers"]["now"] == 0

        assert wait_until(dropped, LIVENESS, 0.1), "the stuck viewer was never dropped"
        watched = [o for o in seen if o["viewers"]["now"] == 1]
        assert watched, "the viewer was dropped before it was ever counted"
        # while it was stuck, the loop kept its rate: frames counted, no slot skipped
        assert watched[-1]["stats"]["frames"] > before["frames"]
        skipped = [o["stats"]["skipped_ticks"] for o in seen] + [next_stats(port)["skipped_ticks"]]
        assert set(skipped) == {before["skipped_ticks"]}, (before["skipped_ticks"], skipped)
        # the server closed it: what it had sent (a bounded amount) ends in EOF
        received = 0
        while chunk := stuck.recv(65536):
            received += len(chunk)
        # a bounded amount: the server's send buffer for a viewer is small, so a viewer
        # that stops reading blocks its writer (and is dropped) after a few frames
        assert 0 < received < 512 * 1024, received
    finally:
        stuck.close()


# -- 8. SIGTERM with viewers ------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_with_viewers_streaming_and_one_stuck_exits_0_within_2_s(
    daemons, tmp_path, sample_model
):
    d = daemons("viewers", {
        "camera": {"source": make_clip(tmp_path / "clip.avi"), "loop": True},
        "loop": {"fps": 10},
        "model": {"path": sample_model},
        "http": {"port": 0, "max_viewers": 3, "request_timeout": 60,  # stuck stays stuck
                 "stream_fps": 10, "jpeg_quality": 95},
    }, "--no-mqtt")  # fmt: skip
    port = d.started()
    assert wait_until(lambda: picture(port, None), LIVENESS), d.log()
    with streams() as opened:
        opened += [Stream(port, auth=None), Stream(port, auth=None)]
        stuck = stuck_viewer(port, auth=None)
        try:
            assert wait_until(lambda: viewers(port, None) == 3, LIVENESS)
            # Every viewer is offered the same frames: once a reading one has had far more
            # than the stuck one's buffers hold, the server's write to the stuck one blocks.
            # (A stuck viewer is sent less than 512 KiB: see the test above.)
            assert wait_until(lambda: opened[0].bytes > 768 * 1024, LIVENESS), opened[0].bytes
            assert viewers(port, None) == 3
            t0 = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            rc = d.wait()
            elapsed = time.monotonic() - t0
        finally:
            stuck.close()
        assert all(s.ended.wait(LIVENESS) for s in opened)  # their streams were ended
    assert rc == 0, d.log()
    assert elapsed < 2.0, f"took {elapsed:.2f} s to exit\n{d.log()}"


# -- 9. /healthz ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("fps", "stall_after"), [(10.0, 2.0), (5.0, 2.0), (1.0, 3.0), (0.5, 6.0)])
def test_health_fails_when_the_loop_has_not_ticked_for_3_slots_and_at_least_2_s(fps, stall_after):
    clock = Clock()
    board = Board(fps, clock=clock)
    assert not board.health().ok
    assert board.health().reason.startswith("starting")
    board.ticked()
    clock.now += stall_after - 0.01
    assert board.health() == Health(True, "ok")
    clock.now += 0.02
    health = board.health()
    assert not health.ok
    assert health.reason == f"stalled: the frame loop has not ticked for {stall_after + 0.01:.1f} s"
    board.ticked()  # it recovers
    assert board.health().ok
    board.stopping = True
    assert (board.health().ok, board.health().reason) == (False, "stopping")


@pytest.fixture
def served_board() -> Iterator[tuple[Board, Clock, int]]:
    """The real server in this process, on a `Board` whose clock the test moves."""
    clock = Clock()
    board = Board(5.0, clock=clock)
    app = PageApp(
        board=board,
        view=LiveView(1, 5.0, 75),
        hosts=HostCheck(["localhost"]),
        limiter=FailureLimiter(),
        username=USERNAME,
        password=None,
        assets=load_assets(),
        registry=make_registry(board),
    )
    server = PageServer(("127.0.0.1", 0), app, max_connections=4, timeout=5.0, tls=None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield board, clock, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(LIVENESS)


def healthy_gauge(port: int) -> float:
    text = request(port, "GET", "/metrics", auth=None).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return families["edged_healthy"].samples[0].value


def test_healthz_is_503_until_the_loop_ticks_and_when_it_stalls(served_board):
    board, clock, port = served_board
    starting = request(port, "GET", "/healthz", auth=None)
    assert starting.status == 503 and starting.text.startswith("starting")
    board.ticked()
    ok = request(port, "GET", "/healthz", auth=None)
    assert (ok.status, ok.text) == (200, "ok\n")
    assert healthy_gauge(port) == 1.0
    clock.now += 2.5  # 5 fps: 3 slots are 0.6 s, so the 2 s floor decides
    stalled = request(port, "GET", "/healthz", auth=None)
    assert stalled.status == 503
    assert stalled.text == "stalled: the frame loop has not ticked for 2.5 s\n"
    assert healthy_gauge(port) == 0.0
    board.ticked()
    assert request(port, "GET", "/healthz", auth=None).status == 200


# -- 10. /metrics -----------------------------------------------------------------------------


def scrape(port: int, auth: tuple[str, str] | None = AUTH) -> dict[str, Any]:
    reply = request(port, "GET", "/metrics", auth=auth)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(reply.text)}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {name} {labels}")


COUNTERS = {  # metric -> stats key
    "edged_frames_total": "frames",
    "edged_ticks_total": "ticks",
    "edged_idle_ticks_total": "idle_ticks",
    "edged_skipped_ticks_total": "skipped_ticks",
    "edged_mqtt_dropped_messages_total": "mqtt_dropped",
    "edged_full_scans_total": "full_scans",
    "edged_region_scans_total": "region_scans",
}


@shared
def test_metrics_has_the_documented_families_and_agrees_with_api_stats(quiet_page):
    port = quiet_page.port
    m1 = scrape(port)
    stats = api(port, "/api/stats")
    state = api(port, "/api/state")
    m2 = scrape(port)
    kinds = {name: f.type for name, f in m2.items()}
    for name in ["edged_frames", "edged_ticks", "edged_idle_ticks", "edged_skipped_ticks",
                 "edged_model_reloads", "edged_model_reload_failures",
                 "edged_mqtt_dropped_messages", "edged_full_scans", "edged_region_scans",
                 "process_cpu_seconds"]:  # fmt: skip
        assert kinds.get(name) == "counter", (name, kinds.get(name))
    for name in ["edged_frame_latency_seconds", "edged_detect_seconds", "edged_classify_seconds"]:
        assert kinds.get(name) == "summary", (name, kinds.get(name))
    for name in ["edged_frames_per_second", "edged_faces", "edged_expression",
                 "edged_camera_online", "edged_broker_connected", "edged_motion_ratio",
                 "process_resident_memory_bytes"]:  # fmt: skip
        assert kinds.get(name) == "gauge", (name, kinds.get(name))
    assert kinds.get("edged_model_info") == "gauge"  # an info metric, in the text format
    # counters: the scrape before /api/stats is not ahead of it, the one after not behind
    for metric, key in COUNTERS.items():
        assert value(m1, metric) <= stats[key] <= value(m2, metric), metric
    for metric, key in [("edged_frame_latency_seconds_count", "latency_ms"),
                        ("edged_detect_seconds_count", "detect_ms"),
                        ("edged_classify_seconds_count", "classify_ms")]:  # fmt: skip
        assert value(m1, metric) <= stats[key]["count"] <= value(m2, metric), metric
        assert value(m2, metric) > 0
    model = stats["model"]
    assert value(m2, "edged_model_info", version=model["version"]) == 1.0
    assert value(m2, "edged_model_reloads_total") == model["reloads"]
    assert value(m2, "edged_model_reload_failures_total") == model["failures"]
    assert value(m2, "edged_camera_online") == float(stats["camera"]["online"]) == 1.0
    assert value(m2, "edged_broker_connected") == float(stats["broker_connected"]) == 1.0
    assert value(m2, "edged_frames_per_second") > 0
    assert value(m2, "edged_faces") == state["faces"] == 1
    shown = {s.labels["expression"]: s.value for s in m2["edged_expression"].samples}
    assert set(shown) >= {"anger", "happy", "sad", "neutral", "surprise", "none"}
    assert sorted(shown.values()) == [0.0] * (len(shown) - 1) + [1.0]
    assert value(m2, "process_cpu_seconds_total") > 0
    assert value(m2, "process_resident_memory_bytes") > 10_000_000


# -- 11. no credentials in what the page shows ------------------------------------------------


@pytest.mark.slow
@pytest.mark.broker
def test_api_and_metrics_never_show_the_camera_or_mqtt_password(
    daemons, auth_broker, http_dir, sample_model, device_id
):
    camera_secret = "CamS3cret-8842"
    _, base = http_dir  # a real HTTP server where /x.mjpg is a 404
    source = base.replace("http://", f"http://viewer:{camera_secret}@") + "/x.mjpg"
    d = daemons("secrets", {
        "camera": {"source": source},
        "model": {"path": sample_model},
        "mqtt": {"host": auth_broker.host, "port": auth_broker.port,
                 "username": USER, "password": PASSWORD, "device_id": device_id},
        "http": {"port": 0},
    })  # fmt: skip
    port = d.started()

    def offline_and_connected() -> bool:
        stats = request(port, "GET", "/api/stats", auth=None)
        if stats.status != 200:
            return False
        s = stats.json()
        return (
            s["camera"]["online"] is False
            and "x.mjpg" in s["camera"]["reason"]
            and bool(s["broker_connected"])
        )

    assert wait_until(offline_and_connected, LIVENESS, 0.1), d.log()
    bodies = {}
    for path in ["/api/state", "/api/stats", "/api/events", "/api/overview", "/metrics",
                 "/healthz", "/stream.mjpg", "/", "/app.js"]:  # fmt: skip
        reply = request(port, "GET", path, auth=None)
        bodies[path] = reply.text + str(reply.headers)
    reason = api(port, "/api/overview", None)["camera"]["reason"]
    assert f"://***@{base.removeprefix('http://')}/x.mjpg" in reason  # names the URL, but...
    for path, text in bodies.items():
        for secret in (camera_secret, PASSWORD, "viewer:"):
            assert secret not in text, (path, secret)
    assert value(scrape(port, None), "edged_camera_online") == 0.0
    assert d.stop() == 0


# -- 12. TLS ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_with_a_certificate_the_page_is_served_over_https_verified_by_the_ca(
    daemons, tmp_path, sample_model, tls_files
):
    files = tls_files
    d = daemons("tls", {
        "camera": {"source": make_clip(tmp_path / "clip.avi"), "loop": True},
        "model": {"path": sample_model},
        "http": {"port": 0, "cert_file": files.server_cert, "key_file": files.server_key},
    }, "--no-mqtt")  # fmt: skip
    port = d.started()
    assert d.scheme == "https"
    trusted = ssl.create_default_context(cafile=str(files.ca))
    for server in ("localhost", "127.0.0.1"):  # both are in the certificate
        reply = request(port, "GET", "/healthz", auth=None, tls=trusted, server=server)
        assert (reply.status, reply.text) == (200, "ok\n")
    assert request(port, "GET", "/api/state", auth=None, tls=trusted).status == 200
    # the check is real: a client trusting another CA refuses the server
    other = ssl.create_default_context(cafile=str(files.other_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        request(port, "GET", "/healthz", auth=None, tls=other)
    # and plain HTTP gets no page
    with socket.create_connection(("127.0.0.1", port), timeout=LIVENESS) as s:
        s.sendall(raw_request(port, "/api/state", None))
        with contextlib.suppress(ConnectionResetError):
            assert b"HTTP/1.1 200" not in s.recv(4096)
    assert d.stop() == 0, d.log()


@pytest.mark.slow
@pytest.mark.parametrize("key", ["garbage", "missing", "another key"])
def test_a_bad_tls_key_exits_78_naming_the_cert_and_key_settings(daemons, tmp_path, tls_files, key):
    files = tls_files
    key_file = {
        "garbage": tmp_path / "garbage.key",
        "missing": tmp_path / "missing.key",
        "another key": files.client_key,  # does not match the certificate
    }[key]
    if key == "garbage":
        key_file.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    d = daemons("badkey", {"http": {"port": 0, "cert_file": files.server_cert,
                                    "key_file": key_file}}, "--no-mqtt")  # fmt: skip
    assert d.wait() == 78, d.log()
    lines = d.lines()
    assert len(lines) == 1, lines
    assert "http.cert_file/key_file" in lines[0]
    check = daemons("badkey-check", {"http": {"cert_file": files.server_cert,
                                               "key_file": key_file}},
                    command=("config", "check"))  # fmt: skip
    assert check.wait() == 78, check.log()
    assert "http.cert_file/key_file" in check.log()


# -- 13. a taken port -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_taken_port_exits_69_with_one_line_naming_the_port(daemons):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        d = daemons("taken", {"http": {"port": port}}, "--no-mqtt")
        assert d.wait() == 69, d.log()
    lines = d.lines()
    assert len(lines) == 1, lines
    assert f"port {port}" in lines[0] and "http.port" in lines[0]


# -- 14. no path reaches the file system ------------------------------------------------------


@shared
@pytest.mark.parametrize(
    "path",
    [
        "/../../etc/passwd",
        "/static/../settings.py",
        "/%2e%2e/",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "//etc/passwd",
        "/static/index.html",
        "/index.html",
        "/app.js/../../../etc/passwd",
        "/api/../app.js",
        "/web/server.py",
        "/edged/settings.py",
        "/.git/config",
    ],
)
def test_no_request_path_is_served_from_the_file_system(page, path):
    reply = request(page.port, "GET", path)
    assert (reply.status, reply.text) == (404, "Not Found\n")
