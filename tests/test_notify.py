"""systemd notifications over a real AF_UNIX datagram socket (what systemd listens on)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.daemon import notify
from edged.daemon.notify import Notifier, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    sock.settimeout(0.2)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except TimeoutError:
        return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_without_notify_socket_everything_is_a_silent_no_op(clean_env):
    n = Notifier(environ={})
    assert not n.enabled
    n.ready("running")
    n.status("x")
    n.watchdog()
    n.stopping()
    assert n.until_ping() == float("inf")


@pytest.mark.parametrize("sender", ["systemd-python", "built-in"])
def test_ready_status_and_stopping_reach_the_socket(notify_socket, monkeypatch, clean_env, sender):
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    if sender == "systemd-python":
        pytest.importorskip("systemd.daemon")
    else:
        monkeypatch.setattr(notify, "_systemd_sender", lambda: None)
    n = Notifier()
    n.ready("running, no model")
    n.status("running, model abc")
    n.status("running, model abc")  # unchanged: not sent again
    n.stopping()
    n.close()
    assert received(sock) == [
        "READY=1\nSTATUS=running, no model",
        "STATUS=running, model abc",
        "STOPPING=1\nSTATUS=stopping",
    ]


def test_abstract_socket_names_are_supported_by_the_built_in_sender(clean_env):
    name = f"edged-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": "@" + name}, send=notify._SocketSender("@" + name))
        n.ready("up")
        n.close()
        assert received(sock) == ["READY=1\nSTATUS=up"]
    finally:
        sock.close()


def test_watchdog_pings_at_half_the_interval_and_only_when_due(notify_socket, clean_env):
    path, sock = notify_socket
    clock = Clock()
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}
    n = Notifier(environ=env, clock=clock, send=notify._SocketSender(path))
    assert n.watchdog_every == 1.0
    n.ready("up")  # first ping with READY
    for _ in range(5):
        clock.now += 0.3
        n.watchdog()  # due at 1.0 s: pings at 1.2, 2.4 (loop passes every 0.3 s)
    assert received(sock) == ["READY=1\nSTATUS=up", "WATCHDOG=1", "WATCHDOG=1"]
    assert 0 < n.until_ping() <= 1.0
    n.close()


def test_a_watchdog_meant_for_another_process_is_ignored():
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) == 0.5
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_a_vanished_socket_is_logged_once_and_never_raises(tmp_path, clean_env, caplog):
    path = str(tmp_path / "gone.sock")
    n = Notifier(environ={"NOTIFY_SOCKET": path}, send=notify._SocketSender(path))
    n.ready("up")
    n.status("still up")
    n.stopping()
    n.close()
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1
