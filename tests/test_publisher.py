"""The paho publisher against a real Mosquitto: topics, retain flags, outage, auth, TLS."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import paho.mqtt.publish as mqtt_publish
import pytest
from fixtures_broker import PASSWORD, USER, Broker, wait_until

from edged.cli import main
from edged.daemon.model_store import ModelStatus
from edged.daemon.service import Controls
from edged.errors import ConfigError
from edged.mqtt.client import resolve_password
from edged.mqtt.publisher import MqttPublisher
from edged.settings import load_settings
from edged.vision.detector import Box
from edged.vision.pipeline import FaceResult, FrameResult

pytestmark = pytest.mark.broker

CLASSES = ["anger", "happy", "sad", "neutral", "surprise"]
BASE = "edged/t1"


def settings_for(b: Broker, **sections: dict):
    mqtt = {
        "host": b.host,
        "port": b.port,
        "device_id": "t1",
        "reconnect_min": 0.1,
        "reconnect_max": 0.5,
        **sections.pop("mqtt", {}),
    }
    over = {"mqtt": mqtt, "smoothing": {"window": 2, "agree": 2, "threshold": 0.0}}
    over.update(sections)
    return load_settings(None, over)


def frame(expr: str | None = "happy", conf: float = 0.9) -> FrameResult:
    faces = [] if expr is None else [FaceResult(Box(100, 80, 200, 200), expr, conf, 50.0)]
    return FrameResult(faces=faces, model_version="m1", detect_ms=2.0, classify_ms=1.0)


@pytest.fixture
def make_pub(clean_env):
    made: list[MqttPublisher] = []

    def make(settings, controls: Controls | None = None, start: bool = True) -> MqttPublisher:
        p = MqttPublisher(settings, controls or Controls())
        p.on_model(ModelStatus("loaded", version="m1", classes=CLASSES))
        if start:
            p.start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def connected(p: MqttPublisher) -> bool:
    return wait_until(lambda: p._connected, 10)


def test_connect_sends_discovery_then_state_then_online_all_retained(broker, collector, make_pub):
    c = collector(broker, "#")
    base = "edged/t0"
    # A device id no other test uses: no retained leftovers can reorder what arrives.
    pub = make_pub(settings_for(broker, mqtt={"device_id": "t0"}), start=False)
    pub.on_frame(None, 0.0)  # the first tick makes state "none", kept until connected
    pub.start()
    c.wait_for(f"{base}/availability", lambda m: m.text == "online")
    c.wait_for(f"{base}/state")
    topics = [m.topic for m in c.messages if "t0" in m.topic]  # not other tests' leftovers
    avail = topics.index(f"{base}/availability")
    assert all(t.startswith("homeassistant/") for t in topics[:6])
    assert max(topics.index(t) for t in topics if t.startswith("homeassistant/")) < avail
    cfg = json.loads(c.on("homeassistant/sensor/edged_t0/expression/config")[0].payload)
    assert cfg["options"] == [*CLASSES, "none"]
    assert topics.index(f"{base}/state") < avail
    late = collector(broker, "homeassistant/+/edged_t0/#")  # retained copies come flagged
    assert wait_until(lambda: len(late.messages) == 6, 5)
    assert all(m.retain for m in late.messages)


def test_state_event_and_detections_have_their_schema_and_retain_flags(broker, collector, make_pub):
    pub = make_pub(settings_for(broker))
    assert connected(pub)
    c = collector(broker, f"{BASE}/#")
    t = 0.0
    for f in [frame("happy")] * 3 + [frame("sad")] * 3:
        pub.on_frame(f, t)
        t += 0.1
    c.wait_for(f"{BASE}/event", lambda m: json.loads(m.payload)["to"] == "sad")
    events = [json.loads(m.payload) for m in c.on(f"{BASE}/event")]
    assert [(e["from"], e["to"]) for e in events] == [("none", "happy"), ("happy", "sad")]
    assert not any(m.retain for m in c.on(f"{BASE}/event"))
    state = c.wait_for(f"{BASE}/state", lambda m: json.loads(m.payload)["expression"] == "sad")
    s = json.loads(state.payload)
    assert set(s) == {
        "expression",
        "confidence",
        "distance",
        "faces",
        "since",
        "timestamp",
        "model_version",
        "detect",
    }
    assert 0 <= s["confidence"] <= 1 and s["faces"] == 1 and s["model_version"] == "m1"
    dets = c.on(f"{BASE}/detections")
    assert len(dets) == 6 and not any(m.retain for m in dets)
    assert json.loads(dets[0].payload)["faces"][0]["box"] == [100, 80, 200, 200]
    # A late subscriber gets the retained state (the live message above is not flagged).
    late = collector(broker, f"{BASE}/state")
    m = late.wait_for(f"{BASE}/state")
    assert m.retain and json.loads(m.payload)["expression"] == "sad"


def test_detections_can_be_turned_off(broker, collector, make_pub):
    pub = make_pub(settings_for(broker, publish={"detections": False}))
    assert connected(pub)
    c = collector(broker, f"{BASE}/#")
    for i in range(4):
        pub.on_frame(frame("happy"), i * 0.1)
    c.wait_for(f"{BASE}/event")
    assert c.on(f"{BASE}/detections") == []


def test_camera_and_stats_are_retained_with_broker_counters(broker, collector, make_pub):
    pub = make_pub(settings_for(broker))
    assert connected(pub)
    c = collector(broker, f"{BASE}/#")
    pub.on_camera(False, "video ended")
    pub.on_stats({"fps": 4.97, "target_fps": 5.0, "uptime": 12.5})
    cam = c.wait_for(f"{BASE}/camera", lambda m: m.text == "offline")
    stats = json.loads(c.wait_for(f"{BASE}/stats").payload)
    assert stats["fps"] == 4.97 and stats["broker_reconnects"] == 0
    assert stats["broker_connected"] is True and stats["mqtt_dropped"] == 0
    late = collector(broker, f"{BASE}/camera")
    assert late.wait_for(f"{BASE}/camera").retain and cam.text == "offline"


def test_privacy_switch_stops_expressions_until_switched_back(broker, collector, make_pub):
    controls = Controls()
    base = "edged/priv"  # no retained leftovers from other tests
    pub = make_pub(settings_for(broker, mqtt={"device_id": "priv"}), controls)
    assert connected(pub)
    c = collector(broker, f"{base}/#")
    for i in range(3):
        pub.on_frame(frame("happy"), i * 0.1)
    c.wait_for(f"{base}/event")
    mqtt_publish.single(f"{base}/detect/set", "OFF", hostname=broker.host, port=broker.port)
    assert wait_until(lambda: not controls.detect.is_set(), 5)
    c.wait_for(f"{base}/detect/state", lambda m: m.text == "OFF" and m.retain is False)
    pub.on_frame(None, 1.0)  # the loop's next tick sees the switch
    c.wait_for(f"{base}/state", lambda m: json.loads(m.payload)["expression"] == "none")
    c.wait_for(f"{base}/event", lambda m: json.loads(m.payload)["to"] == "none")
    n_state, n_det = len(c.on(f"{base}/state")), len(c.on(f"{base}/detections"))
    for i in range(10):  # a loop that ignored the switch would still feed frames
        pub.on_frame(frame("surprise"), 2.0 + i * 0.1)
    time.sleep(0.3)
    assert len(c.on(f"{base}/state")) == n_state
    assert len(c.on(f"{base}/detections")) == n_det
    mqtt_publish.single(f"{base}/detect/set", "on", hostname=broker.host, port=broker.port)
    assert wait_until(controls.detect.is_set, 5)
    pub.on_frame(None, 4.0)
    for i in range(3):
        pub.on_frame(frame("surprise"), 4.1 + i * 0.1)
    c.wait_for(f"{base}/event", lambda m: json.loads(m.payload)["to"] == "surprise")
    on_state = [json.loads(m.payload) for m in c.on(f"{base}/state")][-1]
    assert on_state["detect"] == "ON"


def test_home_assistant_online_resends_discovery(broker, collector, make_pub):
    pub = make_pub(settings_for(broker))
    assert connected(pub)
    c = collector(broker, "homeassistant/#")
    c.wait_for("homeassistant/sensor/edged_t1/expression/config")  # the retained copy
    c.clear()
    mqtt_publish.single("homeassistant/status", "online", hostname=broker.host, port=broker.port)
    m = c.wait_for("homeassistant/sensor/edged_t1/expression/config")
    assert not m.retain  # a live re-send, not the broker's retained copy
    # Only this device's: other tests' retained discovery may still be arriving.
    ours = {m.topic for m in c.messages if "/edged_t1/" in m.topic and m.topic.endswith("/config")}
    assert len(ours) == 6


def test_discovery_off_sends_no_config(broker, collector, make_pub):
    c = collector(broker, "homeassistant/sensor/edged_t2/#")
    pub = make_pub(
        settings_for(broker, mqtt={"device_id": "t2"}, homeassistant={"discovery": False})
    )
    assert connected(pub)
    time.sleep(0.3)
    assert c.messages == []


@pytest.mark.slow
def test_broker_outage_keeps_only_the_newest_state_and_replays_no_event(
    private_broker, collector, make_pub, caplog
):
    caplog.set_level(logging.INFO, "edged")
    b = private_broker
    pub = make_pub(settings_for(b))
    assert connected(pub)
    t = 0.0
    for _ in range(3):
        pub.on_frame(frame("happy"), t)
        t += 0.1
    b.stop()
    assert wait_until(lambda: not pub._connected, 5)
    # Whatever was in flight when the broker went is dropped on reconnect, never resent.
    in_flight = len(pub.client._out_messages)
    # While away: many transitions; paho must not be handed (and queue) any of them.
    for i in range(200):
        pub.on_frame(frame("sad" if (i // 2) % 2 else "anger"), t)
        pub.on_stats({"fps": float(i)})
        t += 0.1
    for _ in range(2):
        pub.on_frame(frame("neutral"), t)
        t += 0.1
    assert len(pub.client._out_messages) == in_flight
    assert len(pub.client._out_packet) <= in_flight + 2
    assert pub.dropped >= 200
    b.start()
    c = collector(b, f"{BASE}/#")
    c.wait_for(f"{BASE}/availability", lambda m: m.text == "online", timeout=15)
    state = c.wait_for(f"{BASE}/state")
    assert json.loads(state.payload)["expression"] == "neutral"
    assert json.loads(c.wait_for(f"{BASE}/stats").payload)["fps"] == 199.0
    time.sleep(0.5)
    assert c.on(f"{BASE}/event") == []
    assert len(c.on(f"{BASE}/state")) == 1
    assert pub.reconnects == 1
    assert any("reconnected" in r.getMessage() for r in caplog.records)


def test_username_and_password_connect(auth_broker, collector, make_pub):
    c = collector(auth_broker, f"{BASE}/#", username=USER, password=PASSWORD)
    make_pub(settings_for(auth_broker, mqtt={"username": USER, "password": PASSWORD}))
    c.wait_for(f"{BASE}/availability", lambda m: m.text == "online")


def test_wrong_password_is_logged_once_in_words_and_retried(auth_broker, make_pub, caplog):
    caplog.set_level(logging.INFO, "edged")
    pub = make_pub(settings_for(auth_broker, mqtt={"username": USER, "password": "nope"}))
    assert wait_until(lambda: pub.problem is not None, 10)
    time.sleep(1.5)  # several retries at 0.1-0.5 s
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "bad username or password" in errors[0]
    assert "nope" not in caplog.text
    assert pub.client._thread is not None and pub.client._thread.is_alive()


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


def test_tls_with_client_certificate_connects_and_verifies(tls_broker, collector, make_pub):
    b, f = tls_broker
    c = collector(b, f"{BASE}/#", tls_ca=f.ca, tls_cert=f.client_cert, tls_key=f.client_key)
    tls = {"ca_file": str(f.ca), "certfile": str(f.client_cert), "keyfile": str(f.client_key)}
    pub = make_pub(settings_for(b, mqtt=tls))
    assert wait_until(lambda: pub._connected, 10), pub.problem
    c.wait_for(f"{BASE}/availability", lambda m: m.text == "online")


# paho leaves the socket of a failed TLS handshake to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tls_untrusted_broker_certificate_is_a_clear_error(tls_broker, make_pub, caplog):
    b, f = tls_broker
    tls = {"ca_file": str(f.other_ca), "certfile": str(f.client_cert), "keyfile": str(f.client_key)}
    pub = make_pub(settings_for(b, mqtt=tls))
    assert wait_until(lambda: pub.problem is not None, 10)
    assert "certificate is not trusted" in pub.problem
    assert not pub._connected


def test_missing_tls_file_is_a_config_error(broker, make_pub, tmp_path):
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file"):
        make_pub(settings_for(broker, mqtt={"ca_file": str(tmp_path / "nope.crt")}), start=False)


def test_stop_publishes_retained_offline(broker, collector, make_pub):
    pub = make_pub(settings_for(broker, mqtt={"device_id": "t3"}))
    assert connected(pub)
    pub.stop()
    c = collector(broker, "edged/t3/availability")
    m = c.wait_for("edged/t3/availability")
    assert m.retain and m.text == "offline"


def test_last_will_says_offline_when_the_process_is_killed(broker, collector, tmp_path):
    script = textwrap.dedent(
        f"""
        import time
        from edged.mqtt.publisher import MqttPublisher
        from edged.daemon.service import Controls
        from edged.settings import load_settings
        s = load_settings(None, {{"mqtt": {{"host": "{broker.host}", "port": {broker.port},
                                            "device_id": "t4"}}}})
        p = MqttPublisher(s, Controls())
        p.start()
        time.sleep(60)
        """
    )
    c = collector(broker, "edged/t4/availability")
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        c.wait_for("edged/t4/availability", lambda m: m.text == "online", timeout=15)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        m = c.wait_for("edged/t4/availability", lambda m: m.text == "offline")
        assert not m.retain  # live delivery of the will...
        late = collector(broker, "edged/t4/availability")
        assert late.wait_for("edged/t4/availability").text == "offline"  # ...and retained
    finally:
        proc.kill()
        proc.wait()


def test_ha_remove_clears_the_devices_discovery(broker, collector, make_pub, capsys):
    pub = make_pub(settings_for(broker, mqtt={"device_id": "t5"}))
    assert connected(pub)
    pub.stop()
    args = ["ha-remove", "--host", broker.host, "--port", str(broker.port), "--device-id", "t5"]
    assert main([*args, "--all"]) == 0
    assert "removed edged t5" in capsys.readouterr().out
    c = collector(broker, "#")
    time.sleep(0.5)  # retained messages would arrive at once
    assert [m.topic for m in c.messages if "t5" in m.topic] == []


def test_ha_remove_reports_an_unreachable_broker(clean_env, capsys):
    from fixtures_broker import free_port

    rc = main(["ha-remove", "--host", "127.0.0.1", "--port", str(free_port())])
    assert rc == 69
    assert "connection refused" in capsys.readouterr().err


def test_snapshot_is_off_by_default_and_sends_no_image(broker, collector, make_pub):
    pub = make_pub(settings_for(broker, mqtt={"device_id": "snap0"}))
    assert connected(pub)
    assert pub.wants_images is False  # the service passes no frames at all
    c = collector(broker, "edged/snap0/#")
    image = np.full((240, 320, 3), 90, np.uint8)
    pub.on_image(image, frame("happy"), 0.0)
    time.sleep(0.3)
    assert c.on("edged/snap0/snapshot") == []


def test_snapshot_when_turned_on_is_an_annotated_jpeg_at_most_every_interval(
    broker, collector, make_pub
):
    s = settings_for(
        broker, mqtt={"device_id": "snap1"}, publish={"snapshot": True, "snapshot_interval": 60}
    )
    controls = Controls()
    pub = make_pub(s, controls)
    assert connected(pub) and pub.wants_images
    c = collector(broker, "edged/snap1/#")
    image = np.full((480, 640, 3), 90, np.uint8)
    before = image.copy()
    for _ in range(3):
        pub.on_image(image, frame("happy"), 0.0)
    m = c.wait_for("edged/snap1/snapshot")
    time.sleep(0.3)
    assert len(c.on("edged/snap1/snapshot")) == 1  # the interval holds the others back
    assert not m.retain
    decoded = cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - before).max() > 100  # the box was drawn
    assert np.array_equal(image, before)  # on a copy: the grabber's frame is untouched
    late = collector(broker, "edged/snap1/snapshot")
    time.sleep(0.3)
    assert late.messages == []  # not retained: no image stays on the broker


def test_no_snapshot_while_the_privacy_switch_is_off(broker, collector, make_pub):
    s = settings_for(
        broker, mqtt={"device_id": "snap2"}, publish={"snapshot": True, "snapshot_interval": 0.01}
    )
    controls = Controls()
    pub = make_pub(s, controls)
    assert connected(pub)
    c = collector(broker, "edged/snap2/#")
    controls.detect.clear()
    pub.on_frame(None, 0.0)
    for _ in range(5):
        pub.on_image(np.zeros((120, 160, 3), np.uint8), frame("happy"), 0.0)
        time.sleep(0.02)
    time.sleep(0.3)
    assert c.on("edged/snap2/snapshot") == []


def test_a_model_with_other_classes_updates_the_enum_options(broker, collector, make_pub):
    pub = make_pub(settings_for(broker, mqtt={"device_id": "t6"}))
    assert connected(pub)
    c = collector(broker, "homeassistant/sensor/edged_t6/expression/config")
    c.wait_for("homeassistant/sensor/edged_t6/expression/config")
    pub.on_model(ModelStatus("loaded", version="m2", classes=["calm", "excited"]))
    m = c.wait_for(
        "homeassistant/sensor/edged_t6/expression/config",
        lambda m: json.loads(m.payload)["options"] == ["calm", "excited", "none"],
    )
    assert not m.retain  # sent live, now; the broker keeps it retained for later
    late = collector(broker, "homeassistant/sensor/edged_t6/expression/config")
    got = late.wait_for("homeassistant/sensor/edged_t6/expression/config")
    assert json.loads(got.payload)["options"] == ["calm", "excited", "none"]


def test_settings_reject_a_client_key_without_its_certificate(clean_env, tmp_path):
    with pytest.raises(ConfigError, match="keyfile needs certfile"):
        load_settings(None, {"mqtt": {"keyfile": str(tmp_path / "k.pem")}})


def test_settings_reject_a_device_id_that_would_break_topics(clean_env):
    with pytest.raises(ConfigError, match=r"mqtt\.device_id"):
        load_settings(None, {"mqtt": {"device_id": "kitchen/+"}})
