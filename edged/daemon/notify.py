"""systemd notifications: READY=1, STATUS=, WATCHDOG=1, STOPPING=1.

Silent and free when there is no ``NOTIFY_SOCKET`` (not started by systemd with
``Type=notify``). With systemd-python installed its ``sd_notify`` is used; without it the
same one-datagram protocol is spoken directly, so a Pi whose systemd-python did not build
still gets a working watchdog. A failed send is logged once and never stops the daemon.

The watchdog is pinged only by the frame loop (`Notifier.watchdog` is called once per
loop pass), so a hung loop stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

try:  # optional: systemd-python needs libsystemd to build; the plain protocol is the fallback
    from systemd import daemon as sd_daemon
except ImportError:
    sd_daemon = None

log = logging.getLogger(__name__)

Send = Callable[[str], None]


class _SocketSender:
    """sd_notify without libsystemd: one datagram to the socket systemd names."""

    def __init__(self, address: str) -> None:
        self._target = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def __call__(self, message: str) -> None:
        self._sock.sendto(message.encode(), self._target)

    def close(self) -> None:
        self._sock.close()


def _systemd_sender() -> Send | None:
    if sd_daemon is None:
        return None
    daemon = sd_daemon

    def send(message: str) -> None:
        if not daemon.notify(message):
            raise OSError("sd_notify found no socket")

    return send


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), None when no watchdog is ours."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None
    return value / 2e6 if value > 0 else None


class Notifier:
    """Tells systemd how the service is doing; every method is a no-op when not under it."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        send: Send | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._clock = clock
        address = env.get("NOTIFY_SOCKET") or None
        self._send: Send | None = None
        if address is not None:
            self._send = send or _systemd_sender() or _SocketSender(address)
        self.watchdog_every = watchdog_interval(env) if self._send else None
        self._next_ping = 0.0
        self._status: str | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def _notify(self, message: str) -> None:
        if self._send is None:
            return
        try:
            self._send(message)
        except OSError as e:
            if not self._failed:
                log.warning("cannot notify systemd (%s); carrying on without it", e)
            self._failed = True

    def ready(self, status: str) -> None:
        """The loop runs: READY=1 with a first STATUS line, and the first watchdog ping."""
        self._status = status
        self._notify(f"READY=1\nSTATUS={status}")
        if self.watchdog_every:
            self._notify("WATCHDOG=1")
            self._next_ping = self._clock() + self.watchdog_every

    def status(self, text: str) -> None:
        """A one-line human summary; sent only when it changes."""
        if text != self._status:
            self._status = text
            self._notify(f"STATUS={text}")

    def watchdog(self) -> None:
        """Ping if one is due; called from the frame loop on every pass."""
        if self.watchdog_every and self._clock() >= self._next_ping:
            self._notify("WATCHDOG=1")
            self._next_ping = self._clock() + self.watchdog_every

    def until_ping(self) -> float:
        """Seconds until the next ping is due (inf without a watchdog): the loop's longest wait."""
        if not self.watchdog_every:
            return float("inf")
        return max(0.0, self._next_ping - self._clock())

    def stopping(self, status: str = "stopping") -> None:
        self._notify(f"STOPPING=1\nSTATUS={status}")

    def close(self) -> None:
        close = getattr(self._send, "close", None)
        if close is not None:
            close()
        self._send = None
