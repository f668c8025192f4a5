"""Commands and faults on the wire: retained commands, garbage floods, a broker that never
answers, and a twin's stats. Real Mosquitto (or a TCP listener that is no broker)."""

# ruff: noqa: F811 (fixtures imported from test_mqtt_e2e / test_publisher are used by name)

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import paho.mqtt.publish as mqtt_publish
import pytest
from conftest import Segment, write_video
from fixtures_broker import Collector, wait_until
from test_mqtt_e2e import (  # noqa: F401 (daemons, sample_model: fixtures)
    HAPPY,
    LIVENESS,
    Daemon,
    daemons,
    js,
    ours,
    sample_model,
)
from test_publisher import (  # noqa: F401 (make_pub, settings_for: fixtures)
    RecordingCommands,
    connected,
    make_pub,
    report,
    settings_for,
)

from edged.mqtt.client import make_client
from edged.mqtt.publisher import CONNACK_WARN, MqttPublisher

pytestmark = pytest.mark.broker


@pytest.mark.slow
def test_a_retained_off_on_detect_set_does_not_pause_the_daemon_at_start(
    broker, sample_model, tmp_path, daemons, device_id
):
    base = f"edged/{device_id}"
    host = {"hostname": broker.host, "port": broker.port, "qos": 1}
    mqtt_publish.single(f"{base}/detect/set", "OFF", retain=True, **host)  # some client's
    c = Collector(broker, ours(device_id))
    try:
        clip = tmp_path / "happy.avi"
        write_video(clip, [Segment(HAPPY, 2.0)], fps=10)
        d = Daemon(
            tmp_path, broker, device_id, "--source", str(clip), "--loop",
            "--model", str(sample_model), "--fps", "5", "--duration", "60",
            "--stats-interval", "0.5",
        )  # fmt: skip
        daemons.append(d)
        # The daemon got the retained OFF (its log says so) and carried on: its stats
        # made after that say detection is on, and detections and a happy state flow.
        assert wait_until(lambda: "ignoring the retained" in d.stderr(), LIVENESS), d.stderr()
        mark = c.wait_for(f"{base}/stats", timeout=LIVENESS)
        later = c.wait_for(f"{base}/stats", timeout=LIVENESS, after=mark)
        assert js(later)["detect"] is True
        c.wait_for(f"{base}/detections", timeout=LIVENESS, after=mark)
        happy = c.wait_for(f"{base}/state", lambda m: js(m)["expression"] == "happy", LIVENESS)
        assert js(happy)["detect"] == "ON"
        assert {m.text for m in c.on(f"{base}/detect/state")} == {"ON"}
        assert all(js(m)["detect"] == "ON" for m in c.on(f"{base}/state"))
        assert d.stderr().count("ignoring the retained") == 1
        assert "switched off" not in d.stderr()
        # Never deleted either: it is not edged's to delete.
        late = Collector(broker, f"{base}/detect/set")
        try:
            late.sync()
            assert [(m.text, m.retain) for m in late.messages] == [("OFF", True)]
        finally:
            late.close()
    finally:
        c.close()
        mqtt_publish.single(f"{base}/detect/set", "", retain=True, **host)


def test_a_thousand_invalid_commands_give_one_warning_and_a_counted_summary(
    broker, settings_for, caplog
):
    caplog.set_level(logging.INFO, "edged")
    now = [1000.0]
    commands = RecordingCommands()
    s = settings_for(broker)
    pub = MqttPublisher(s, make_client(s), clock=lambda: now[0])
    try:
        pub.start(commands)
        assert connected(pub)
        sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sender.connect(broker.host, broker.port)
        sender.loop_start()
        try:
            for i in range(1000):
                sender.publish(pub.topics.detect_set, f"garbage {i}", qos=1)
            # Acknowledged after all of them, and valid: when it arrives, they all have.
            sender.publish(pub.topics.detect_set, "OFF", qos=1).wait_for_publish(10)
        finally:
            sender.disconnect()
            sender.loop_stop()
        assert wait_until(lambda: commands.calls, 10)
        assert commands.calls == [("set_detect", False, f"MQTT {pub.topics.detect_set}")]

        def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

        assert len(warnings()) == 1 and "'garbage 0'" in warnings()[0]
        assert pub.stats_fields()["mqtt_ignored_commands"] == 1000
        now[0] += 60.0  # a minute later, the loop's periodic stats report
        pub.on_stats({})
        assert warnings()[1:] == ["MQTT: ignored 999 more invalid detect/set messages"]
    finally:
        pub.stop()


@pytest.fixture
def mute_listener() -> Iterator[tuple[str, int]]:
    """A TCP port that accepts connections and never says a word (no CONNACK)."""
    srv = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(srv.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()
    done.set()
    t.join(5)
    for s in held:
        s.close()
    srv.close()


def test_a_broker_that_accepts_tcp_but_never_answers_is_logged_once(
    mute_listener, clean_env, device_id, caplog
):
    from edged.settings import load_settings

    caplog.set_level(logging.INFO, "edged")
    host, port = mute_listener
    s = load_settings(None, {"mqtt": {"host": host, "port": port, "device_id": device_id}})
    pub = MqttPublisher(s, make_client(s), connack_warn=1.0)
    try:
        pub.start(RecordingCommands())

        def said() -> list[str]:
            return [r.getMessage() for r in caplog.records if "not answered" in r.getMessage()]

        assert wait_until(said, 10)
        (line,) = said()
        assert line == (
            f"MQTT: broker {host}:{port} accepted the connection but has not answered MQTT "
            "CONNECT in 1 s (is it an MQTT broker? TLS on that port needs mqtt.tls); still "
            "waiting"
        )
        assert [r.levelno for r in caplog.records if r.getMessage() == line] == [logging.WARNING]
        assert not pub._connected
    finally:
        pub.stop()
    assert CONNACK_WARN <= 10.0  # the daemon's own delay: well inside the 25 s it took


def test_a_twin_publisher_is_silent_and_shows_the_clash_in_stats_and_status(
    broker, collector, make_pub, settings_for
):
    s = settings_for(broker)
    owner = make_pub(s)
    assert connected(owner)
    c = collector(broker, f"{owner.topics.base}/#")
    twin = make_pub(s)
    assert wait_until(lambda: twin.stats_fields()["mqtt_conflict"], 10)
    assert twin.stats_fields()["broker_connected"] is True and not twin._connected
    assert owner.stats_fields()["mqtt_conflict"] is False
    note = twin.status_note()
    assert note is not None and s.mqtt.device_id in note and owner.client_id in note
    assert owner.status_note() is None
    twin.on_state(report("sad"))  # the twin's daemon goes on deciding...
    owner.on_state(report("happy"))  # ...and a later message of the owner's is the sentinel
    c.wait_for(owner.topics.state, lambda m: js(m)["expression"] == "happy")
    assert [js(m)["expression"] for m in c.on(owner.topics.state)] == ["happy"]


def test_a_stopping_owner_never_answers_a_claim_so_the_twin_can_take_over(
    broker, collector, make_pub, settings_for
):
    # Under load a twin's claim (sent when it hears "offline") can reach the owner between
    # its "offline" and its disconnect: an answer then would keep the twin silent forever.
    s = settings_for(broker)
    owner = make_pub(s)
    assert connected(owner)
    c = collector(broker, f"{owner.topics.base}/#")
    host = {"hostname": broker.host, "port": broker.port, "qos": 1}

    def claim(client: str) -> str:
        return json.dumps(
            {"role": "claim", "client": client, "instance": client[-8:], "since": time.time()}
        )

    real_disconnect = owner.client.disconnect

    def disconnect_after_a_claim(*args: object, **kwargs: object) -> object:
        mqtt_publish.single(owner.topics.owner, claim("edged-twin0001"), **host)
        # A garbage command after the claim: paho hands messages over in order, so once it
        # is counted the claim has been heard.
        mqtt_publish.single(owner.topics.detect_set, "garbage", **host)
        assert wait_until(lambda: owner.stats_fields()["mqtt_ignored_commands"] >= 1, 10)
        return real_disconnect(*args, **kwargs)

    owner.client.disconnect = disconnect_after_a_claim  # type: ignore[method-assign]
    owner.stop()
    # The broker had any answer before the owner's DISCONNECT; this claim comes after both.
    mqtt_publish.single(owner.topics.owner, claim("edged-sentinel"), **host)
    c.wait_for(owner.topics.owner, lambda m: b"edged-sentinel" in m.payload)
    roles = [json.loads(m.payload)["role"] for m in c.on(owner.topics.owner)]
    heard = [json.loads(m.payload)["client"] for m in c.on(owner.topics.owner)]
    after_claim = roles[heard.index("edged-twin0001") + 1 :]
    assert "owner" not in after_claim, list(zip(heard, roles, strict=True))
