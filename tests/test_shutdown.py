"""SIGTERM → exit 0 within 2 s even while MQTT is stuck connecting to a silent broker."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import Segment, sample_images
from fixtures_broker import wait_until


@pytest.fixture
def black_hole_port() -> Iterator[int]:
    """A loopback port whose SYNs are never answered: a listener with a full backlog."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.5)
    with pytest.raises(TimeoutError):  # the premise: a connect here hangs
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield port
    for c in fillers:
        c.close()
    srv.close()


def test_sigterm_exits_within_2_s_while_mqtt_hangs_connecting(
    black_hole_port: int, face_video, sample_model, clean_env, tmp_path
):
    clip, _ = face_video([Segment(sample_images("happy", 1)[0], 2.0)], fps=5)
    env = {**os.environ, "EDGED_MQTT__HOST": "127.0.0.1",
           "EDGED_MQTT__PORT": str(black_hole_port)}  # fmt: skip
    log = tmp_path / "stderr.log"
    with log.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--source", str(clip), "--loop",
             "--model", str(sample_model), "--fps", "5"],
            stdout=subprocess.DEVNULL, stderr=err_file, text=True, env=env,
        )  # fmt: skip
    try:
        # Running: the loop has ticked, and paho is inside its first connect (2 s timeout,
        # begun before the first tick), which the black hole never answers.
        assert wait_until(lambda: "running at" in log.read_text(), 30), log.read_text()
        assert "MQTT: connecting to 127.0.0.1" in log.read_text()
        assert "MQTT: connected" not in log.read_text()
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    err = log.read_text()
    assert rc == 0, err
    assert elapsed < 2.0, f"took {elapsed:.2f} s to exit\n{err}"
