"""Two edged daemons with one device_id on one broker: one publishes, the other is silent.

Real ``edged run`` processes and a real Mosquitto. The first daemon films a happy face,
the second a sad one, so anything the second published would show. "Nothing else
arrived" is checked after the daemons' own later messages (the first one's stats) or
their log lines, never after a sleep.
"""

# ruff: noqa: F811 (fixtures imported from test_mqtt_e2e / test_publisher are used by name)

from __future__ import annotations

import signal

import pytest
from conftest import Segment, write_video
from fixtures_broker import Broker, Collector, wait_until
from test_mqtt_e2e import (  # noqa: F401 (daemons, sample_model: fixtures)
    HAPPY,
    LIVENESS,
    SAD,
    Daemon,
    daemons,
    js,
    ours,
    sample_model,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CLASH = "another edged with device_id"


def start(tmp, name: str, broker: Broker, device: str, face, model) -> Daemon:
    folder = tmp / name
    folder.mkdir()
    clip = folder / "clip.avi"
    write_video(clip, [Segment(face, 2.0)], fps=10)
    return Daemon(
        folder, broker, device, "--source", str(clip), "--loop", "--model", str(model),
        "--fps", "5", "--duration", "90", "--stats-interval", "0.5",
    )  # fmt: skip


def error_lines(d: Daemon) -> list[str]:
    return [line for line in d.stderr().splitlines() if " ERROR " in f" {line} "]


def test_a_second_daemon_with_the_same_device_id_is_silent_says_why_once_and_takes_over_later(
    broker, sample_model, tmp_path, daemons, device_id
):
    c = Collector(broker, ours(device_id))
    try:
        first = start(tmp_path, "first", broker, device_id, HAPPY, sample_model)
        daemons.append(first)
        base = first.base
        avail, state, stats = f"{base}/availability", f"{base}/state", f"{base}/stats"
        c.wait_for(state, lambda m: js(m)["expression"] == "happy", LIVENESS)

        second = start(tmp_path, "second", broker, device_id, SAD, sample_model)
        daemons.append(second)
        assert wait_until(lambda: CLASH in second.stderr(), LIVENESS), second.stderr()
        # The twin's clip and its broker traffic run on; the first goes on publishing:
        # three of its stats reports after the twin said so, and the twin still silent.
        said = c.messages[-1]
        assert wait_until(lambda: len(c.after(said, stats)) >= 3, LIVENESS)
        assert second.proc.poll() is None, second.stderr()

        # Availability never flipped: the first's one "online", nothing from the twin.
        assert [m.text for m in c.on(avail)] == ["online"]
        # Nothing of the twin's on the shared topics: its camera sees only a sad face.
        assert {js(m)["expression"] for m in c.on(state)} <= {"none", "happy"}
        for m in c.on(f"{base}/detections"):
            assert all(f["expression"] == "happy" for f in js(m)["faces"]), js(m)
        assert all(js(m)["mqtt_conflict"] is False for m in c.on(stats))
        # Two client ids, each connected once: no client takeover at the broker.
        clients = {js(m)["client"] for m in c.on(f"{base}/owner")}
        assert len(clients) == 2, clients
        broker_log = [line for line in broker.log_text().splitlines() if "already" in line]
        assert not [line for line in broker_log if any(cid in line for cid in clients)]
        # One ERROR line, naming the clash and the fix; the first says so as a WARNING.
        (err,) = error_lines(second)
        assert device_id in err and "set a unique device_id in /etc/edged/edged.toml" in err
        assert "client edged-" in err
        assert "another edged (client edged-" in first.stderr()
        assert error_lines(first) == []

        # The first stops: its retained "offline", then the twin takes over.
        first.proc.send_signal(signal.SIGTERM)
        assert first.wait() == 0
        off = c.wait_for(avail, lambda m: m.text == "offline", LIVENESS)
        c.wait_for(avail, lambda m: m.text == "online", LIVENESS, after=off)
        c.wait_for(state, lambda m: js(m)["expression"] == "sad", LIVENESS, after=off)
        assert [m.text for m in c.on(avail)] == ["online", "offline", "online"]
        assert "asking to take over" in second.stderr()
        second.proc.send_signal(signal.SIGTERM)
        assert second.wait() == 0
        c.wait_for(avail, lambda m: m.text == "offline", LIVENESS, after=off)
        assert len(error_lines(second)) == 1, second.stderr()
    finally:
        c.close()
