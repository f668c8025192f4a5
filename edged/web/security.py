"""Who may use the page: the pure checks every request passes (host, origin, password)
and the limiter that slows down password guessing. No I/O, no threads of its own."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

DEFAULT_PORTS = {"http": "80", "https": "443"}


def split_host(header: str | None) -> tuple[str, str] | None:
    """A ``Host`` header (or an origin's host) as (host, port): lower case, the host
    without brackets or trailing dot, the port "" when absent; None if malformed."""
    if not header:
        return None
    h = header.strip().lower()
    if h.startswith("["):  # [::1]:8426
        end = h.find("]")
        if end < 0:
            return None
        name, rest = h[1:end], h[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    elif h.count(":") == 1:
        name, _, port = h.partition(":")
    else:
        name, port = h, ""
    if port and not port.isdigit():
        return None
    name = name.rstrip(".")
    return (name, port) if name else None


def host_name(header: str | None) -> str | None:
    """The host of a ``Host`` header, without port, lower case; None if malformed."""
    parts = split_host(header)
    return parts[0] if parts is not None else None


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostCheck:
    """Which ``Host`` headers the page answers: IP addresses, ``localhost``, this machine's
    name (and ``<name>.local``) and the configured ``http.hostnames``.

    A DNS-rebinding attack reaches the server under the attacker's own domain name, so a
    name nobody configured is refused; an IP address in ``Host`` cannot be rebound.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(n.lower().rstrip(".") for n in names)

    @classmethod
    def for_machine(cls, hostname: str, extra: Iterable[str]) -> HostCheck:
        short = hostname.split(".", maxsplit=1)[0].lower()
        return cls({"localhost", hostname.lower(), short, f"{short}.local", *extra})

    def allows(self, header: str | None) -> bool:
        name = host_name(header)
        return name is not None and (is_ip(name) or name in self.names)


class Headers(Protocol):
    def get(self, name: str, default: None = None) -> str | None: ...


def same_site(method: str, headers: Headers, host: str | None) -> bool:
    """Whether a state-changing request comes from the page itself, not another site.

    Browsers send ``Sec-Fetch-Site`` (same-origin for the page's own requests; none when
    typed by the user); older ones send ``Origin`` on every POST. A request with neither
    is not from a browser (curl, a script) and cannot be forged by a web page.
    """
    if method in ("GET", "HEAD"):
        return True
    site = headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.lower() in ("same-origin", "none")
    origin = headers.get("Origin")
    if origin is None:
        return True
    scheme, sep, rest = origin.partition("://")
    default = DEFAULT_PORTS.get(scheme.lower())
    if not sep or default is None:  # "null" (a sandboxed frame, a file), or not the web
        return False
    theirs, ours = split_host(rest.split("/", 1)[0]), split_host(host)
    if theirs is None or ours is None:
        return False
    # Same origin: same host and same port (another port of this host is another site).
    return theirs[0] == ours[0] and (theirs[1] or default) == (ours[1] or default)


def check_basic(header: str | None, username: str, password: str) -> bool:
    """Whether an ``Authorization: Basic`` header carries these credentials.

    Compared in constant time, so the answer's timing does not leak how much was right.
    """
    if not header or header[:6].lower() != "basic ":
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    user, sep, pw = given.partition(":")
    ok_user = hmac.compare_digest(user.encode(), username.encode())
    ok_pw = hmac.compare_digest(pw.encode(), password.encode())
    return bool(sep) and ok_user and ok_pw


class FailureLimiter:
    """Slows down password guessing: after ``burst`` failures from one address within
    ``window`` s, that address is refused (429) until the window has passed.

    Bounded memory (the ``max_clients`` most recent addresses); thread-safe, because
    every connection has its own thread. `failed` returns True when a burst *starts*,
    so the server logs each burst once rather than every failure.
    """

    def __init__(
        self,
        burst: int = 5,
        window: float = 60.0,
        max_clients: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.total = 0  # every failed attempt, for the stats

    def _entry(self, client: str, now: float) -> tuple[float, int]:
        start, count = self._seen.get(client, (now, 0))
        if now - start > self.window:
            return now, 0
        return start, count

    def blocked(self, client: str) -> bool:
        with self._lock:
            _, count = self._entry(client, self._clock())
            return count >= self.burst

    def failed(self, client: str) -> bool:
        """Count a failure; True when this one starts a burst (log it)."""
        with self._lock:
            self.total += 1
            now = self._clock()
            start, count = self._entry(client, now)
            self._seen[client] = (start, count + 1)
            self._seen.move_to_end(client)
            while len(self._seen) > self.max_clients:
                self._seen.popitem(last=False)
            return count + 1 == self.burst
