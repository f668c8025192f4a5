"""The HTTP side of the page: the standard library's threading server, hardened.

One thread per connection (the picamera2 MJPEG example's shape), with a cap on
connections, a timeout on every socket (a client that sends or reads nothing is dropped),
bounded request bodies, a fixed table of routes (no path from a request ever reaches the
file system) and the checks of `edged.web.security` before any route runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from edged.web.security import check_basic, same_site

if TYPE_CHECKING:
    from edged.web.app import PageApp
    from edged.web.stream import LiveView

log = logging.getLogger(__name__)

MAX_BODY = 4096  # bytes: the only body edged takes is {"on": true}
# The kernel's send buffer for a live view (it doubles it): without a bound, Linux grows it
# up to net.ipv4.tcp_wmem's maximum (4 MB), so a viewer that stops reading would be sent
# minutes of frames before a write blocks and request_timeout can drop it.
STREAM_SNDBUF = 128 * 1024
BOUNDARY = "edgedframe"
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
)


class PageServer(ThreadingHTTPServer):
    """A `ThreadingHTTPServer` with a connection cap, socket timeouts, optional TLS, and
    a way to drop every open connection at shutdown (a viewer blocked in a write)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16

    def __init__(
        self,
        address: tuple[str, int],
        app: PageApp,
        *,
        max_connections: int,
        timeout: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        self.conn_timeout = timeout
        self.tls = tls
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        super().__init__(address, PageHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        sock.settimeout(self.conn_timeout)
        if self.tls is not None:  # the handshake happens on the connection's own thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("too many connections: refusing %s", client_address[0])
            self.shutdown_request(request)
            return
        with self._lock:
            self._open.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._lock:
            if request in self._open:
                self._open.discard(request)
                self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address[0], exc_info=True)

    def drop_all(self) -> None:
        """Cut every open connection: a thread blocked writing to a viewer returns."""
        with self._lock:
            socks = list(self._open)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class _DeadlineSocket(io.RawIOBase):
    """The connection's reading side with one deadline for a whole request: every receive
    waits only for what is left of it, so a client dripping a byte at a time is dropped
    as surely as a silent one."""

    def __init__(self, sock: socket.socket, limit: float) -> None:
        self.sock = sock
        self.limit = limit
        self.deadline = float("inf")

    def readable(self) -> bool:
        return True

    def start(self) -> None:
        self.deadline = time.monotonic() + self.limit

    def done(self) -> None:
        """The request is in: from now on each write has its own ``limit`` again."""
        self.deadline = float("inf")
        self.sock.settimeout(self.limit)

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took longer than http.request_timeout")
        self.sock.settimeout(min(left, self.limit))
        return self.sock.recv_into(buffer)


class PageHandler(BaseHTTPRequestHandler):
    """Checks, then one of a fixed set of routes (`PageApp.routes`)."""

    server: PageServer
    protocol_version = "HTTP/1.1"
    _body_unread = False  # the request has a body no route has read (see _finish_headers)

    def setup(self) -> None:
        self.timeout = self.server.conn_timeout  # type: ignore[misc]  # per server, not class
        super().setup()
        self.rfile.close()
        self._reading = _DeadlineSocket(self.connection, self.server.conn_timeout)
        self.rfile = io.BufferedReader(self._reading)

    def send_response(self, code: int, message: str | None = None) -> None:
        # The request (body included) is in: each write has its own timeout again.
        self._reading.done()
        super().send_response(code, message)

    def version_string(self) -> str:
        return "edged"  # no Python or library version in the Server header

    def handle_one_request(self) -> None:
        # One deadline for the whole request (line, headers, body), not one per read: a
        # client dripping a byte a second would otherwise hold its thread for ever.
        self._reading.start()
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    # -- checks ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        app = self.server.app
        self._body_unread = (
            self.headers.get("Transfer-Encoding") is not None
            or self.headers.get("Content-Length", "0").strip() != "0"
        )
        path = self.path.split("?", 1)[0]
        if not app.hosts.allows(self.headers.get("Host")):
            self.send_text(
                HTTPStatus.MISDIRECTED_REQUEST, "unknown host name: add it to http.hostnames"
            )
            return
        route = app.routes.get((self.command if self.command != "HEAD" else "GET", path))
        if route is None:
            known = any(p == path for _, p in app.routes)
            status = HTTPStatus.METHOD_NOT_ALLOWED if known else HTTPStatus.NOT_FOUND
            self.send_text(status, status.phrase)
            return
        if path != "/healthz" and not self._authorized():
            return
        if not same_site(self.command, self.headers, self.headers.get("Host")):
            self.send_text(HTTPStatus.FORBIDDEN, "cross-site request refused")
            return
        route(self)

    def _authorized(self) -> bool:
        app = self.server.app
        if app.password is None:
            return True
        client = self.client_address[0]
        if app.limiter.blocked(client):
            self.send_text(HTTPStatus.TOO_MANY_REQUESTS, "too many failed logins; wait a minute")
            return False
        if check_basic(self.headers.get("Authorization"), app.username, app.password):
            return True
        if self.headers.get("Authorization") is not None and app.limiter.failed(client):
            log.warning(
                "web page: repeated failed logins from %s; refusing it for %g s",
                client,
                app.limiter.window,
            )
        self.send_response(HTTPStatus.UNAUTHORIZED)
        self.send_header("WWW-Authenticate", 'Basic realm="edged", charset="UTF-8"')
        self._finish_headers("text/plain; charset=utf-8", b"login required\n")
        return False

    # -- responses ------------------------------------------------------------------------

    def _finish_headers(self, ctype: str, body: bytes) -> None:
        if self._body_unread:  # left in the stream, it would be read as the next request
            self.send_header("Connection", "close")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_body(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self._finish_headers(ctype, body)

    def send_text(self, status: HTTPStatus, text: str) -> None:
        self.send_body(status, "text/plain; charset=utf-8", (text + "\n").encode())

    def send_json(self, obj: object, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_body(status, "application/json", body)

    def read_json(self) -> Any:
        """The request's JSON body (at most `MAX_BODY` bytes); None after answering 4xx."""
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self.send_text(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
            return None
        lengths = self.headers.get_all("Content-Length") or []
        # Only one plain decimal length (int() would also take "+5", "1_0", " 5"), and no
        # chunked body: a proxy in front must not see another request boundary than we do.
        if (
            len(lengths) != 1
            or self.headers.get("Transfer-Encoding") is not None
            or not (lengths[0].isascii() and lengths[0].isdigit())
        ):
            self.send_text(HTTPStatus.LENGTH_REQUIRED, "one Content-Length required")
            return None
        length = int(lengths[0])
        if length > MAX_BODY:
            self.send_text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {MAX_BODY} bytes")
            return None
        data = self.rfile.read(length)
        self._body_unread = False
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            self.send_text(HTTPStatus.BAD_REQUEST, "the body is not JSON")
            return None

    def stream(self) -> None:
        """The MJPEG live view: parts until the client goes, the daemon stops, or the
        picture stops (camera offline, detection off), which ends the response."""
        view = self.server.app.view
        try:
            view.join()
        except Exception:  # Busy
            self.send_text(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"busy: at most {view.max_viewers} live views at once (http.max_viewers)",
            )
            return
        try:
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            self.send_response(HTTPStatus.OK)
            for name, value in SECURITY_HEADERS:
                self.send_header(name, value)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.end_headers()
            if self.command != "HEAD":  # HEAD: the headers only, never a body
                self._parts(view)
        except (OSError, ValueError):  # the viewer went away, or stopped reading
            pass
        finally:
            view.leave()

    def _parts(self, view: LiveView) -> None:
        timeout = self.server.conn_timeout
        seq = -1
        last = time.monotonic()  # when the viewer last got a picture (or joined)
        while not view.stopping:
            seq, jpeg = view.next_jpeg(seq, min(1.0, timeout))
            if jpeg is None:  # after a wait, or at once (the first call, a blank)
                if self.server.app.board.picture() is not None:
                    return  # camera offline or detection off: end now (the page says why)
                if time.monotonic() - last >= timeout:
                    return  # no picture for a while: end; the page reconnects when there is
                continue
            last = time.monotonic()
            head = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            ).encode()
            self.wfile.write(head + jpeg + b"\r\n")
