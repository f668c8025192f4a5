"""The paho publisher against a real Mosquitto: topics, retain flags, outage, auth, TLS.

The publisher is an `Output`: it formats and delivers what the daemon tells it (reports,
events, frames) and passes commands (the privacy switch) to the daemon. What the daemon
decides is tested in test_smoothing.py (the Expression) and test_mqtt_e2e.py (``edged
run``). "Nothing more arrived" is always checked after a later message from the same
publisher (`flush`) or a collector's sentinel (`Collector.sync`), never after a sleep.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import uuid

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import paho.mqtt.publish as mqtt_publish
import pytest
from fixtures_broker import PASSWORD, STATE_KEYS, USER, Broker, Collector, wait_until
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edged.cli import main
from edged.daemon.model_store import ModelStatus
from edged.daemon.outputs import NONE, ExpressionEvent, ExpressionReport
from edged.errors import ConfigError
from edged.mqtt.client import CONNACK_WORDS, describe_connack, make_client, resolve_password
from edged.mqtt.publisher import MqttPublisher
from edged.settings import load_settings
from edged.vision.detector import Box
from edged.vision.pipeline import FaceResult, FrameResult

CLASSES = ["anger", "happy", "sad", "neutral", "surprise"]
WALL = 1_763_900_000.25  # 2025-11-23T12:13:20.250Z
MODEL = ModelStatus("loaded", version="m1", classes=CLASSES)


@pytest.fixture
def settings_for(device_id, clean_env):
    """``settings_for(broker, **sections)``: settings for this test's own device id."""

    def make(b: Broker, **sections: dict):
        mqtt_over = {
            "host": b.host,
            "port": b.port,
            "device_id": device_id,
            "reconnect_min": 0.1,
            "reconnect_max": 0.5,
            **sections.pop("mqtt", {}),
        }
        return load_settings(None, {"mqtt": mqtt_over, **sections})

    return make


def frame(expr: str | None = "happy", conf: float = 0.9) -> FrameResult:
    faces = [] if expr is None else [FaceResult(Box(100, 80, 200, 200), expr, conf, 50.0)]
    return FrameResult(faces=faces, model_version="m1", detect_ms=2.0, classify_ms=1.0)


def report(expression: str = "happy", confidence: float = 0.9, *, detect: bool = True):
    """What the daemon's Expression hands outputs for the ``state`` topic."""
    face = expression != NONE
    return ExpressionReport(
        expression=expression,
        confidence=confidence if face else 0.0,
        distance=50.0 if face else 0.0,
        faces=1 if face else 0,
        since=WALL - 5,
        timestamp=WALL,
        model_version="m1",
        detect=detect,
    )


def event(from_: str, to: str, confidence: float = 0.9) -> ExpressionEvent:
    return ExpressionEvent(from_, to, confidence, WALL)


class RecordingCommands:
    """The daemon's side of `Commands`: records what the publisher asked for, in order.

    Called from paho's network thread; ``list.append`` is atomic.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def set_detect(self, on: bool, source: str) -> None:
        self.calls.append(("set_detect", on, source))

    def reload_model(self) -> None:
        self.calls.append(("reload_model",))


@pytest.fixture
def make_pub():
    made: list[MqttPublisher] = []

    def make(settings, commands: RecordingCommands | None = None, start: bool = True):
        """A publisher; with ``start``, started as the daemon does: start, then the model."""
        p = MqttPublisher(settings, make_client(settings, will=True))
        made.append(p)
        if start:
            p.start(commands or RecordingCommands())
            p.on_model(MODEL)
        return p

    yield make
    for p in made:
        p.stop()


def connected(p: MqttPublisher) -> bool:
    return wait_until(lambda: p._connected, 10)


def js(m) -> dict:
    return json.loads(m.payload)


def flush(pub: MqttPublisher, c: Collector) -> None:
    """Return once everything ``pub`` published so far has reached ``c``.

    ``pub`` publishes a stats message with a fresh token after it (one paho connection
    sends in order, the broker forwards in order) and ``c`` (subscribed to the stats
    topic) waits for that.
    """
    token = uuid.uuid4().hex
    pub.on_stats({"flush": token, **pub.stats_fields()})  # as the service merges them
    c.wait_for(pub.topics.stats, lambda m: js(m).get("flush") == token)


def ha_filter(device_id: str) -> str:
    return f"homeassistant/+/edged_{device_id}/#"


def publish(b: Broker, topic: str, payload: str) -> None:
    """Another client publishes (QoS 1: acknowledged, so several arrive in order)."""
    mqtt_publish.single(topic, payload, qos=1, hostname=b.host, port=b.port)


# -- connect, payloads, retain flags --------------------------------------------------------


@pytest.mark.broker
def test_connect_sends_discovery_then_state_then_online_all_retained(
    private_broker, collector, make_pub, settings_for, device_id
):
    b = private_broker
    # The daemon starts while the broker is away; the publisher retries every 2 s.
    s = settings_for(b, mqtt={"reconnect_min": 2.0, "reconnect_max": 2.0})
    pub = make_pub(s, start=False)
    c = collector(b, [f"edged/{device_id}/#", ha_filter(device_id)])
    b.stop()
    pub.start(RecordingCommands())  # the daemon's start-up, in its order
    pub.on_model(MODEL)
    pub.on_detect(True)
    pub.on_state(report(NONE))
    assert wait_until(lambda: pub.problem is not None, 5)  # refused once, kept for later
    b.start()
    c.sync()  # the collector is back (and subscribed) before the publisher's next try
    assert not pub._connected
    c.wait_for(pub.topics.availability, lambda m: m.text == "online")
    data = [m for m in c.messages if m.topic != pub.topics.owner]  # not the handshake
    topics = [m.topic for m in data]
    assert len(topics) == 9 and not any(m.retain for m in data)  # all live
    assert all(t.startswith("homeassistant/") for t in topics[:6])
    assert set(topics[6:8]) == {pub.topics.state, pub.topics.detect_state}
    assert topics[8] == pub.topics.availability
    cfg = js(c.on(pub.discovery.config_topic("sensor", "expression"))[0])
    assert cfg["options"] == [*CLASSES, "none"]
    late = collector(b, [f"edged/{device_id}/#", ha_filter(device_id)])
    late.sync()
    assert len(late.messages) == 9
    assert all(m.retain for m in late.messages)  # every one of them is retained


@pytest.mark.broker
def test_state_event_and_detections_have_their_schema_and_retain_flags(
    broker, collector, make_pub, settings_for
):
    pub = make_pub(settings_for(broker))
    assert connected(pub)
    t = pub.topics
    c = collector(broker, f"{t.base}/#")
    pub.on_event(event(NONE, "happy"))
    pub.on_state(report("happy"))
    for _ in range(3):
        pub.on_frame(frame("happy"), WALL)
    pub.on_event(event("happy", "sad", 0.87654321))
    pub.on_state(report("sad", 0.87654321))
    for _ in range(3):
        pub.on_frame(frame("sad"), WALL)
    pub.on_frame(frame(None), WALL)  # a frame without faces: no detections message
    pub.on_frame(None, WALL)  # no new frame this tick
    flush(pub, c)

    events = [js(m) for m in c.on(t.event)]
    at = "2025-11-23T12:13:20.250+00:00"
    assert events == [
        {"from": "none", "to": "happy", "confidence": 0.9, "time": at},
        {"from": "happy", "to": "sad", "confidence": 0.8765, "time": at},
    ]
    assert not any(m.retain for m in c.on(t.event))
    states = [js(m) for m in c.on(t.state)]
    assert [s["expression"] for s in states] == ["happy", "sad"]
    assert all(set(s) == STATE_KEYS for s in states)
    assert states[-1] == {
        "expression": "sad",
        "confidence": 0.8765,
        "distance": 50.0,
        "faces": 1,
        "since": "2025-11-23T12:13:15.250+00:00",
        "timestamp": "2025-11-23T12:13:20.250+00:00",
        "model_version": "m1",
        "detect": "ON",
    }
    dets = c.on(t.detections)
    assert len(dets) == 6 and not any(m.retain for m in dets)
    assert js(dets[0])["faces"][0]["box"] == [100, 80, 200, 200]
    assert [js(m)["faces"][0]["expression"] for m in dets] == ["happy"] * 3 + ["sad"] * 3
    # A late subscriber gets the retained state (the live messages above are not flagged).
    late = collector(broker, t.state)
    late.sync()
    (m,) = late.messages
    assert m.retain and js(m)["expression"] == "sad"


@pytest.mark.broker
def test_detections_can_be_turned_off(broker, collector, make_pub, settings_for):
    pub = make_pub(settings_for(broker, publish={"detections": False}))
    assert connected(pub)
    c = collector(broker, f"{pub.topics.base}/#")
    for _ in range(4):
        pub.on_frame(frame("happy"), WALL)
    pub.on_event(event(NONE, "happy"))
    flush(pub, c)
    assert len(c.on(pub.topics.event)) == 1  # the publisher was live all along
    assert c.on(pub.topics.detections) == []


@pytest.mark.broker
def test_camera_and_stats_are_retained_with_broker_counters(
    broker, collector, make_pub, settings_for
):
    pub = make_pub(settings_for(broker))
    assert connected(pub)
    t = pub.topics
    c = collector(broker, f"{t.base}/#")
    pub.on_camera(False, "video ended")
    # The service merges every StatsSource's fields into the one stats dict.
    pub.on_stats({"fps": 4.97, "target_fps": 5.0, "uptime": 12.5, **pub.stats_fields()})
    cam = c.wait_for(t.camera, lambda m: m.text == "offline")
    stats = js(c.wait_for(t.stats))
    assert stats["fps"] == 4.97 and stats["broker_reconnects"] == 0
    assert stats["broker_connected"] is True and stats["mqtt_dropped"] == 0
    late = collector(broker, t.camera)
    late.sync()
    (m,) = late.messages
    assert m.retain and m.text == cam.text == "offline"


# -- the privacy switch: the daemon decides ----------------------------------------------------


@pytest.mark.broker
def test_detect_set_asks_the_daemon_and_detect_state_follows_only_the_daemons_answer(
    broker, collector, make_pub, settings_for
):
    commands = RecordingCommands()
    pub = make_pub(settings_for(broker), commands)
    assert connected(pub)
    t = pub.topics
    c = collector(broker, f"{t.base}/#")
    pub.on_detect(True)  # the daemon says so once at start
    on = c.wait_for(t.detect_state, lambda m: m.text == "ON")

    publish(broker, t.detect_set, "OFF")
    assert wait_until(lambda: commands.calls, 5)
    assert commands.calls == [("set_detect", False, f"MQTT {t.detect_set}")]
    flush(pub, c)
    assert c.on(t.detect_state) == [on]  # the publisher does not answer for the daemon

    pub.on_detect(False)  # the daemon's answer
    flush(pub, c)
    (off,) = c.after(on, t.detect_state)  # exactly once
    assert off.text == "OFF" and not off.retain  # live: not flagged for a subscriber...
    late = collector(broker, t.detect_state)
    late.sync()
    (kept,) = late.messages
    assert kept.retain and kept.text == "OFF"  # ...but retained for a new one

    publish(broker, t.detect_set, "on")  # any case
    assert wait_until(lambda: len(commands.calls) == 2, 5)
    assert commands.calls[1] == ("set_detect", True, f"MQTT {t.detect_set}")
    flush(pub, c)
    assert c.after(on, t.detect_state) == [off]


@pytest.mark.broker
def test_a_detect_set_payload_other_than_on_or_off_is_ignored(
    broker, make_pub, settings_for, caplog
):
    caplog.set_level(logging.WARNING, "edged")
    commands = RecordingCommands()
    pub = make_pub(settings_for(broker), commands)
    assert connected(pub)
    publish(broker, pub.topics.detect_set, "maybe")
    publish(broker, pub.topics.detect_set, "OFF")  # acknowledged after "maybe": arrives after
    assert wait_until(lambda: commands.calls, 5)
    assert commands.calls == [("set_detect", False, f"MQTT {pub.topics.detect_set}")]
    assert "send ON or OFF" in caplog.text


# -- Home Assistant discovery -------------------------------------------------------------------


@pytest.mark.broker
def test_home_assistant_online_resends_discovery(
    broker, collector, make_pub, settings_for, device_id
):
    pub = make_pub(settings_for(broker))
    assert connected(pub)
    c = collector(broker, [ha_filter(device_id), pub.topics.availability])
    # "online" ends an announcement (retained copies come in the same order): the
    # connect's discovery is in, so what arrives after clear() is the re-send.
    c.wait_for(pub.topics.availability, lambda m: m.text == "online")
    c.clear()
    publish(broker, "homeassistant/status", "online")
    # "online" is the last message of a re-announcement: everything before it is in.
    c.wait_for(pub.topics.availability, lambda m: m.text == "online")
    configs = [m for m in c.messages if m.topic.endswith("/config")]
    assert {m.topic for m in configs} == set(pub.discovery.config_topics()[:6])
    assert len(configs) == 6
    assert not any(m.retain for m in configs)  # live re-sends, not the broker's copies


@pytest.mark.broker
def test_discovery_off_sends_no_config(broker, collector, make_pub, settings_for, device_id):
    pub = make_pub(settings_for(broker, homeassistant={"discovery": False}))
    c = collector(broker, [ha_filter(device_id), pub.topics.stats])
    assert connected(pub)
    flush(pub, c)  # after the connect's announcement
    assert [m.topic for m in c.messages] == [pub.topics.stats]


@pytest.mark.broker
def test_a_model_with_other_classes_updates_the_enum_options(
    broker, collector, make_pub, settings_for
):
    pub = make_pub(settings_for(broker))
    assert connected(pub)
    topic = pub.discovery.config_topic("sensor", "expression")
    c = collector(broker, topic)
    c.wait_for(topic)
    pub.on_model(ModelStatus("loaded", version="m2", classes=["calm", "excited"]))
    m = c.wait_for(topic, lambda m: js(m)["options"] == ["calm", "excited", "none"])
    assert not m.retain  # sent live, now; the broker keeps it retained for later
    late = collector(broker, topic)
    late.sync()
    (got,) = late.messages
    assert got.retain and js(got)["options"] == ["calm", "excited", "none"]


@pytest.mark.broker
def test_ha_remove_clears_the_devices_discovery(
    broker, collector, make_pub, settings_for, device_id, capsys
):
    pub = make_pub(settings_for(broker))
    assert connected(pub)
    pub.on_state(report("happy"))
    pub.stop()  # waits for its retained "offline" to be acknowledged
    ours = [f"edged/{device_id}/#", ha_filter(device_id)]
    before = collector(broker, ours)
    before.sync()
    assert len([m for m in before.messages if m.topic.endswith("/config")]) == 6
    assert {pub.topics.state, pub.topics.availability} <= {m.topic for m in before.messages}
    args = ["ha-remove", "--host", broker.host, "--port", str(broker.port)]
    assert main([*args, "--device-id", device_id, "--all"]) == 0  # acknowledged removals
    assert f"removed edged {device_id}" in capsys.readouterr().out
    after = collector(broker, ours)
    after.sync()  # a retained message left over would have come before the sentinel
    assert after.messages == []


def test_ha_remove_reports_an_unreachable_broker(clean_env, capsys):
    from fixtures_broker import free_port

    rc = main(["ha-remove", "--host", "127.0.0.1", "--port", str(free_port())])
    assert rc == 69
    assert "connection refused" in capsys.readouterr().err


# -- the broker goes away -------------------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.slow
def test_broker_outage_keeps_only_the_newest_state_and_replays_no_event(
    private_broker, collector, make_pub, settings_for, caplog
):
    caplog.set_level(logging.INFO, "edged")
    b = private_broker
    pub = make_pub(settings_for(b))
    assert connected(pub)
    t = pub.topics
    pub.on_event(event(NONE, "happy"))
    pub.on_state(report("happy"))
    pub.on_frame(frame("happy"), WALL)
    b.stop()
    assert wait_until(lambda: not pub._connected, 5)
    # Whatever was in flight when the broker went is dropped on reconnect, never resent.
    in_flight = len(pub.client._out_messages)
    # While away: many changes; paho must not be handed (and queue) any of them.
    for i in range(100):
        expr = "sad" if i % 2 else "anger"
        pub.on_event(event("anger" if i % 2 else "sad", expr))
        pub.on_state(report(expr))
        pub.on_frame(frame(expr), WALL)
        pub.on_frame(frame(expr), WALL)
        pub.on_stats({"fps": float(i)})
    pub.on_state(report("neutral"))
    assert len(pub.client._out_messages) == in_flight
    assert len(pub.client._out_packet) <= in_flight + 2
    assert pub.dropped == 300  # 100 events and 200 detections, counted
    b.start()
    c = collector(b, f"{t.base}/#")
    c.wait_for(t.availability, lambda m: m.text == "online", timeout=15)
    flush(pub, c)
    (state,) = c.on(t.state)  # one: the newest, whether live or the retained copy
    assert js(state)["expression"] == "neutral"
    stats = [js(m) for m in c.on(t.stats)]
    assert stats[0]["fps"] == 99.0  # the newest stats from while away
    assert stats[-1]["broker_reconnects"] == 1 and stats[-1]["mqtt_dropped"] == 300
    assert c.on(t.event) == []
    assert c.on(t.detections) == []
    assert pub.reconnects == 1
    assert any("reconnected" in r.getMessage() for r in caplog.records)


# -- credentials and TLS --------------------------------------------------------------------------


@pytest.mark.broker
def test_username_and_password_connect(auth_broker, collector, make_pub, settings_for):
    s = settings_for(auth_broker, mqtt={"username": USER, "password": PASSWORD})
    c = collector(auth_broker, f"edged/{s.mqtt.device_id}/#", username=USER, password=PASSWORD)
    pub = make_pub(s)
    c.wait_for(pub.topics.availability, lambda m: m.text == "online")


@pytest.mark.broker
def test_wrong_password_is_logged_once_in_words_and_retried(
    auth_broker, make_pub, settings_for, caplog
):
    caplog.set_level(logging.INFO, "edged")
    pub = make_pub(settings_for(auth_broker, mqtt={"username": USER, "password": "nope"}))
    # The broker logs each refusal: wait for several (paho retries every 0.1-0.5 s).
    assert wait_until(lambda: auth_broker.log_text().count("not authorised") >= 4, 10)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "bad username or password" in errors[0]
    assert "nope" not in caplog.text
    assert pub.problem is not None and not pub._connected
    assert pub.network_alive  # paho's loop goes on trying


def test_connack_refusals_are_described_by_reason_code_not_by_text():
    not_authorized = ReasonCode(PacketTypes.CONNACK, "Not authorized")
    assert describe_connack(not_authorized) == describe_connack(135) == CONNACK_WORDS[135]
    # An MQTT 3.1.1 broker's return code 5 is the same refusal.
    assert describe_connack(mqtt.convert_connack_rc_to_reason_code(5)) == CONNACK_WORDS[135]
    bad_pw = ReasonCode(PacketTypes.CONNACK, "Bad user name or password")
    assert describe_connack(bad_pw) == describe_connack(134)
    assert "bad username or password" in describe_connack(134)
    for code in (134, 135):
        assert "bad username or password" in describe_connack(code)
    # A code without words of its own is named, so the log still says what happened.
    rate = ReasonCode(PacketTypes.CONNACK, identifier=159)
    assert "159" in describe_connack(rate) and "Connection rate exceeded" in describe_connack(rate)
    assert "code 200" in describe_connack(200)


def test_password_comes_from_file_or_systemd_credentials(tmp_path, clean_env):
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    s = load_settings(None, {"mqtt": {"password_file": str(pw)}})
    assert resolve_password(s.mqtt, {}) == "from-file"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("from-credential")
    s = load_settings(None, {})
    assert resolve_password(s.mqtt, {"CREDENTIALS_DIRECTORY": str(creds)}) == "from-credential"
    assert resolve_password(s.mqtt, {}) is None
    s = load_settings(None, {"mqtt": {"password_file": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match="password_file"):
        resolve_password(s.mqtt, {})


@pytest.mark.broker
def test_tls_with_client_certificate_connects_and_verifies(
    tls_broker, collector, make_pub, settings_for
):
    b, f = tls_broker
    tls = {"ca_file": str(f.ca), "certfile": str(f.client_cert), "keyfile": str(f.client_key)}
    s = settings_for(b, mqtt=tls)
    c = collector(
        b, f"edged/{s.mqtt.device_id}/#", tls_ca=f.ca, tls_cert=f.client_cert, tls_key=f.client_key
    )
    pub = make_pub(s)
    assert connected(pub), pub.problem
    c.wait_for(pub.topics.availability, lambda m: m.text == "online")


@pytest.mark.broker
def test_every_byte_goes_out_on_the_network_thread_never_on_the_callers(
    tls_broker, collector, make_pub, settings_for
):
    """The frame loop publishes; paho must only queue it. Writing on the caller's thread
    while the network thread reads broke the TLS stream, and the failed write ran
    on_disconnect on the frame loop's thread, which deadlocked with the network thread."""
    b, f = tls_broker
    tls = {"ca_file": str(f.ca), "certfile": str(f.client_cert), "keyfile": str(f.client_key)}
    s = settings_for(b, mqtt=tls)
    c = collector(
        b, f"edged/{s.mqtt.device_id}/#", tls_ca=f.ca, tls_cert=f.client_cert, tls_key=f.client_key
    )
    pub = make_pub(s, start=False)
    writers: set[str] = set()
    send = pub.client._sock_send  # a probe on paho's one write path, not a fake

    def recording_send(buf: bytes) -> int:
        writers.add(threading.current_thread().name)
        return send(buf)

    pub.client._sock_send = recording_send  # type: ignore[method-assign]
    pub.start(RecordingCommands())
    pub.on_model(MODEL)
    assert connected(pub), pub.problem
    for i in range(40):  # as the frame loop does, from this (the test's) thread
        pub.on_state(report(confidence=i / 40))
        pub.on_event(event("none", "happy"))
        pub.on_frame(frame(), WALL)
    flush(pub, c)
    assert len(c.on(pub.topics.event)) == 40 and pub.dropped == 0
    assert writers == {"edged-mqtt"}


# paho leaves the socket of a failed TLS handshake to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.broker
def test_tls_untrusted_broker_certificate_is_a_clear_error(tls_broker, make_pub, settings_for):
    b, f = tls_broker
    tls = {"ca_file": str(f.other_ca), "certfile": str(f.client_cert), "keyfile": str(f.client_key)}
    pub = make_pub(settings_for(b, mqtt=tls))
    assert wait_until(lambda: pub.problem is not None, 10)
    assert "certificate is not trusted" in pub.problem
    assert not pub._connected


def test_missing_tls_file_is_a_config_error(make_pub, clean_env, tmp_path):
    s = load_settings(None, {"mqtt": {"ca_file": str(tmp_path / "nope.crt")}})
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file"):
        make_pub(s, start=False)


# -- going offline --------------------------------------------------------------------------------


@pytest.mark.broker
def test_stop_publishes_retained_offline(broker, collector, make_pub, settings_for):
    pub = make_pub(settings_for(broker))
    assert connected(pub)
    pub.stop()
    c = collector(broker, pub.topics.availability)
    c.sync()
    (m,) = c.messages
    assert m.retain and m.text == "offline"


@pytest.mark.broker
def test_last_will_says_offline_when_the_process_is_killed(broker, collector, device_id):
    script = textwrap.dedent(
        f"""
        import time
        from edged.mqtt.client import make_client
        from edged.mqtt.publisher import MqttPublisher
        from edged.settings import load_settings

        class Commands:
            def set_detect(self, on, source): pass
            def reload_model(self): pass

        s = load_settings(None, {{"mqtt": {{"host": "{broker.host}", "port": {broker.port},
                                            "device_id": "{device_id}"}}}})
        p = MqttPublisher(s, make_client(s, will=True))
        p.start(Commands())
        time.sleep(60)
        """
    )
    topic = f"edged/{device_id}/availability"
    c = collector(broker, topic)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        c.wait_for(topic, lambda m: m.text == "online", timeout=15)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        m = c.wait_for(topic, lambda m: m.text == "offline")
        assert not m.retain  # live delivery of the will...
        late = collector(broker, topic)
        late.sync()
        (kept,) = late.messages
        assert kept.retain and kept.text == "offline"  # ...and retained
    finally:
        proc.kill()
        proc.wait()


# -- the opt-in snapshot --------------------------------------------------------------------------


@pytest.mark.broker
def test_snapshot_is_off_by_default_and_sends_no_image(broker, collector, make_pub, settings_for):
    pub = make_pub(settings_for(broker))
    assert connected(pub)
    assert pub.wants_images is False  # the service passes no frames at all
    c = collector(broker, f"{pub.topics.base}/#")
    image = np.full((240, 320, 3), 90, np.uint8)
    pub.on_image(image, frame("happy"), WALL)
    flush(pub, c)
    assert c.on(pub.topics.snapshot) == []


@pytest.mark.broker
def test_snapshot_when_turned_on_is_an_annotated_jpeg_at_most_every_interval(
    broker, collector, make_pub, settings_for
):
    s = settings_for(broker, publish={"snapshot": True, "snapshot_interval": 60})
    pub = make_pub(s)
    assert connected(pub) and pub.wants_images
    t = pub.topics
    c = collector(broker, f"{t.base}/#")
    image = np.full((480, 640, 3), 90, np.uint8)
    before = image.copy()
    for _ in range(3):
        pub.on_image(image, frame("happy"), WALL)
    flush(pub, c)
    (m,) = c.on(t.snapshot)  # the interval holds the others back
    assert not m.retain
    decoded = cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - before).max() > 100  # the box was drawn
    assert np.array_equal(image, before)  # on a copy: the grabber's frame is untouched
    late = collector(broker, t.snapshot)
    late.sync()
    assert late.messages == []  # not retained: no image stays on the broker
