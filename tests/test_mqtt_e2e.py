"""End to end: ``edged run`` on generated face clips, heard through a real Mosquitto.

Each daemon run is shared by several assertions to keep the suite short. Deadlines are
generous liveness bounds, never speed claims. "Nothing more arrived" is checked after a
later message from the daemon itself (its stats, its retained "offline") or a collector's
sentinel (`Collector.sync`), never after a sleep. Every daemon has a device id of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.publish as mqtt_publish
import pytest
from conftest import CLASSES, SAMPLE, Segment, sample_images, scene, write_video
from fixtures_broker import PASSWORD, STATE_KEYS, USER, Broker, Collector, device_id_for, wait_until

from edged.vision.detector import DetectorConfig, FaceDetector, to_gray
from edged.vision.model import LBPHParams, ModelMeta
from edged.vision.model_file import write_model
from edged.vision.preprocess import PreprocessConfig, Preprocessor

pytestmark = [pytest.mark.broker, pytest.mark.slow]

HAPPY = SAMPLE / "images" / "Aaron_Guiel_0001.jpg"
SAD = SAMPLE / "images" / "Alain_Cervantes_0001.jpg"
LIVENESS = 30.0


class Daemon:
    """``python -m edged run`` with a generated TOML config; stderr kept in a file."""

    def __init__(
        self,
        tmp: Path,
        broker: Broker,
        device: str,
        *args: str,
        publish: dict[str, object] | None = None,
        **mqtt: object,
    ):
        self.device = device
        self.base = f"edged/{device}"
        cfg = {
            "host": broker.host,
            "port": broker.port,
            "device_id": device,
            "reconnect_min": 0.2,
            "reconnect_max": 1.0,
            **mqtt,
        }
        lines = ["[mqtt]"] + [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
        pub = {"clear_after": 1.0, **(publish or {})}
        lines += ["[publish]"] + [f"{k} = {json.dumps(v)}" for k, v in pub.items()]
        lines += ["[smoothing]", "window = 3", "agree = 2"]
        self.config = tmp / f"{device}.toml"
        self.config.write_text("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT prints every thread's stack (see wait)
        env["EDGED_HTTP__PORT"] = "0"  # the page on a free port: two daemons may run at once
        self.log = tmp / f"{device}.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--config", str(self.config), *args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=tmp,
            env=env,
        )

    def stderr(self) -> str:
        self._log.flush()
        return self.log.read_text()

    def wait(self, timeout: float = LIVENESS) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # a hang: faulthandler shows where
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            raise AssertionError(f"daemon still running\n{self.stderr()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.close()


def js(m) -> dict:
    return json.loads(m.payload)


def collapse(values: list) -> list:
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


@pytest.fixture(scope="module")
def sample_model(tmp_path_factory) -> Path:
    """A nearest-neighbour model of the very scenes the clips show (this file's own).

    These tests are about MQTT, not accuracy: a model that recognises its training
    frames keeps them independent of how the shared trainer generalises.
    """
    detector = FaceDetector(
        DetectorConfig(scale_factor=1.2, min_neighbors=5, min_size=0.1, max_width=320)
    )
    pre = Preprocessor(PreprocessConfig())
    params = LBPHParams()
    faces, labels = [], []
    for i, cls in enumerate(CLASSES):
        photos = dict.fromkeys([*(p for p in (HAPPY, SAD) if p.name in _listed(cls))])
        photos.update(dict.fromkeys(sample_images(cls, 2)))
        for photo in photos:
            _, buf = cv2.imencode(".jpg", scene(photo))
            gray = to_gray(cv2.imdecode(buf, cv2.IMREAD_COLOR))
            boxes = detector.detect(gray)
            if not boxes:
                assert photo not in (HAPPY, SAD), f"no face found in {photo}"
                continue
            faces.append(pre(gray, boxes[0]).copy())
            labels.append(i)
    recognizer = params.create()
    recognizer.train(faces, np.array(labels, np.int32))
    path = tmp_path_factory.mktemp("mqtt-model") / "trainer.yml"
    write_model(
        path,
        list(recognizer.getHistograms()),
        labels,
        dict(enumerate(CLASSES)),
        params,
        ModelMeta(preprocess=PreprocessConfig()),
    )
    return path


def _listed(cls: str) -> set[str]:
    return set((SAMPLE / f"{cls}.txt").read_text().split())


# -- one full run of a clip: every topic, its schema and retain flag ---------------------


def ours(device: str) -> list[str]:
    """Topic filters for everything one device publishes (its topics and its discovery)."""
    return [f"edged/{device}/#", f"homeassistant/+/edged_{device}/#"]


@pytest.fixture(scope="module")
def clip_run(request, broker, sample_model, tmp_path_factory):
    """none 1 s -> happy 2.5 s -> sad 2.5 s -> none 2 s, played once at 10 fps."""
    tmp = tmp_path_factory.mktemp("e2e-clip")
    clip = tmp / "clip.avi"
    segs = [Segment(None, 1.0), Segment(HAPPY, 2.5), Segment(SAD, 2.5), Segment(None, 2.0)]
    write_video(clip, segs, fps=10)
    device = device_id_for(f"{request.node.nodeid}::clip_run")
    live = Collector(broker, ours(device))
    d = Daemon(
        tmp,
        broker,
        device,
        "--source",
        str(clip),
        "--model",
        str(sample_model),
        "--fps",
        "10",
        "--duration",
        "10",
        "--stats-interval",
        "1",
    )
    late = ha = None
    try:
        rc = d.wait(LIVENESS + 10)
        # The daemon's last word: everything it published before has reached `live`.
        live.wait_for(f"{d.base}/availability", lambda m: m.text == "offline")
        late = Collector(broker, f"{d.base}/#")  # what a subscriber joining now gets
        ha = Collector(broker, f"homeassistant/+/edged_{device}/#")
        late.sync()  # every retained copy is in
        ha.sync()
        yield rc, d, live, late, ha
    finally:
        d.close()
        for c in (live, late, ha):
            if c is not None:
                c.close()


def test_run_exits_0_and_leaves_a_retained_offline(clip_run):
    rc, d, live, late, _ = clip_run
    assert rc == 0, d.stderr()
    avail = [m.text for m in live.on(f"{d.base}/availability")]
    assert avail[0] == "online" and avail[-1] == "offline"
    (m,) = late.on(f"{d.base}/availability")
    assert m.retain and m.text == "offline"


def test_state_follows_the_clip_and_says_none_after_the_face_leaves(clip_run):
    _, d, live, late, _ = clip_run
    states = [js(m) for m in live.on(f"{d.base}/state")]
    assert all(set(s) == STATE_KEYS for s in states)
    assert collapse([s["expression"] for s in states]) == ["none", "happy", "sad", "none"]
    for s in states:
        assert 0.0 <= s["confidence"] <= 1.0
        datetime.fromisoformat(s["timestamp"])
        assert s["detect"] == "ON"
    happy = next(s for s in states if s["expression"] == "happy")
    assert happy["faces"] == 1 and happy["confidence"] > 0.5 and happy["model_version"]
    (final,) = late.on(f"{d.base}/state")
    assert final.retain and js(final)["expression"] == "none"


def test_event_fires_once_per_transition_and_is_not_retained(clip_run):
    _, d, live, late, _ = clip_run
    events = [js(m) for m in live.on(f"{d.base}/event")]
    assert [(e["from"], e["to"]) for e in events] == [
        ("none", "happy"),
        ("happy", "sad"),
        ("sad", "none"),
    ]
    assert all(set(e) == {"from", "to", "confidence", "time"} for e in events)
    assert not any(m.retain for m in live.on(f"{d.base}/event"))
    assert late.on(f"{d.base}/event") == []


def test_detections_per_frame_with_faces_and_not_retained(clip_run):
    _, d, live, late, _ = clip_run
    dets = live.on(f"{d.base}/detections")
    assert len(dets) >= 10  # ~50 face frames at 10 fps; generous for a loaded machine
    for m in dets:
        msg = js(m)
        assert msg["faces"] and set(msg["faces"][0]) == {
            "expression",
            "confidence",
            "distance",
            "box",
        }
        assert len(msg["faces"][0]["box"]) == 4
    assert {js(m)["faces"][0]["expression"] for m in dets} >= {"happy", "sad"}
    assert late.on(f"{d.base}/detections") == []


def test_camera_stats_and_switch_state_are_retained(clip_run):
    _, d, live, late, _ = clip_run
    assert "online" in [m.text for m in live.on(f"{d.base}/camera")]
    assert late.on(f"{d.base}/camera")[0].retain
    stats = [js(m) for m in live.on(f"{d.base}/stats")]
    assert stats, d.stderr()
    for key in ("fps", "cpu_percent", "rss_mb", "uptime_s", "broker_reconnects", "model"):
        assert key in stats[-1], key
    assert stats[-1]["model"]["version"]
    (sw,) = late.on(f"{d.base}/detect/state")
    assert sw.retain and sw.text == "ON"


def test_discovery_gives_home_assistant_one_device_with_valid_entities(clip_run):
    _, d, _, _, ha = clip_run
    node = f"edged_{d.device}"
    configs = {m.topic: js(m) for m in ha.messages}
    assert len(configs) == 6 == len(ha.messages) and all(m.retain for m in ha.messages)
    expr = configs[f"homeassistant/sensor/{node}/expression/config"]
    assert expr["options"] == [*CLASSES, "none"]
    assert expr["device"]["identifiers"] == [node]
    for c in configs.values():
        assert c["availability_topic"] == f"{d.base}/availability"
        assert c["unique_id"].startswith(f"{node}_")
        assert c["device"] == expr["device"]
    sw = configs[f"homeassistant/switch/{node}/detect/config"]
    assert sw["command_topic"] == f"{d.base}/detect/set"


def test_no_image_data_leaves_the_device(clip_run):
    _, _, live, _, _ = clip_run
    for m in live.messages:
        assert not m.payload.startswith(b"\xff\xd8"), m.topic  # JPEG
        assert len(m.payload) < 4096, m.topic


# -- a looping clip: Home Assistant birth, privacy switch, SIGTERM -----------------------


def test_ha_birth_resends_discovery_switch_off_pauses_expressions_and_snapshots_sigterm_offline(
    broker, sample_model, tmp_path, daemons, device_id
):
    clip = tmp_path / "happy.avi"
    write_video(clip, [Segment(HAPPY, 2.0)], fps=10)
    c = Collector(broker, ours(device_id))
    try:
        d = Daemon(
            tmp_path, broker, device_id, "--source", str(clip), "--loop",
            "--model", str(sample_model), "--fps", "8", "--duration", "60",
            "--stats-interval", "0.5",
            publish={"snapshot": True, "snapshot_interval": 0.5},
        )  # fmt: skip
        daemons.append(d)
        base = d.base
        node = f"edged_{device_id}"
        host = {"hostname": broker.host, "port": broker.port, "qos": 1}
        c.wait_for(f"{base}/state", lambda m: js(m)["expression"] == "happy", LIVENESS)
        # The opt-in snapshot: a JPEG of the camera view, not retained.
        snap = c.wait_for(f"{base}/snapshot", timeout=10)
        assert snap.payload.startswith(b"\xff\xd8") and not snap.retain
        assert f"homeassistant/image/{node}/snapshot/config" in {m.topic for m in c.messages}

        # Home Assistant restarts: discovery comes again, live.
        n = len(c.on(f"homeassistant/sensor/{node}/expression/config"))
        mqtt_publish.single("homeassistant/status", "online", **host)
        assert wait_until(lambda: len(c.on(f"homeassistant/sensor/{node}/expression/config")) > n)

        # Privacy OFF. The daemon answers in this order: detect/state OFF, the event to
        # none, the state none (detect OFF); then nothing about expressions.
        mqtt_publish.single(f"{base}/detect/set", "OFF", **host)
        off = c.wait_for(f"{base}/detect/state", lambda m: m.text == "OFF", LIVENESS)
        # The daemon's own later messages: three stats reports (0.5 s apart) after OFF.
        assert wait_until(lambda: len(c.after(off, f"{base}/stats")) >= 3, LIVENESS)
        (event,) = (js(m) for m in c.after(off, f"{base}/event"))
        assert (event["from"], event["to"]) == ("happy", "none")
        (state,) = (js(m) for m in c.after(off, f"{base}/state"))
        assert (state["expression"], state["detect"], state["faces"]) == ("none", "OFF", 0)
        assert c.after(off, f"{base}/detections") == []
        assert c.after(off, f"{base}/snapshot") == []
        stats = [js(m) for m in c.after(off, f"{base}/stats")]
        assert stats[-1]["ticks"] > stats[0]["ticks"]  # the loop went on...
        assert stats[-1]["frames"] == stats[0]["frames"]  # ...and processed no frame
        assert stats[-1]["camera"]["online"] is True
        late = Collector(broker, f"{base}/state")
        try:
            late.sync()
            (kept,) = late.messages  # what a dashboard opening now shows
            assert kept.retain and js(kept)["expression"] == "none" and js(kept)["detect"] == "OFF"
        finally:
            late.close()

        # Privacy ON: the state is re-stated at once, then expressions, detections and
        # snapshots resume.
        mqtt_publish.single(f"{base}/detect/set", "ON", **host)
        on = c.wait_for(f"{base}/detect/state", lambda m: m.text == "ON", LIVENESS, after=off)
        restated = js(c.wait_for(f"{base}/state", after=on))
        assert (restated["expression"], restated["detect"]) == ("none", "ON")
        c.wait_for(f"{base}/detections", timeout=LIVENESS, after=on)
        happy = c.wait_for(
            f"{base}/state", lambda m: js(m)["expression"] == "happy", LIVENESS, after=on
        )
        assert js(happy)["detect"] == "ON"
        c.wait_for(f"{base}/event", lambda m: js(m)["to"] == "happy", LIVENESS, after=on)
        c.wait_for(f"{base}/snapshot", timeout=LIVENESS, after=on)

        d.proc.send_signal(signal.SIGTERM)
        assert d.wait() == 0
        c.wait_for(f"{base}/availability", lambda m: m.text == "offline")
        late = Collector(broker, f"{base}/availability")
        try:
            late.sync()
            (m,) = late.messages
            assert m.retain and m.text == "offline"
        finally:
            late.close()
    finally:
        c.close()


# -- the broker goes away for 10 s -------------------------------------------------------


def test_broker_outage_reconnects_resends_online_and_newest_state_no_old_events_and_will(
    private_broker, sample_model, tmp_path, daemons, device_id
):
    b = private_broker
    clip = tmp_path / "alternating.avi"
    write_video(clip, [Segment(HAPPY, 1.5), Segment(SAD, 1.5)], fps=10)
    c = Collector(b, ours(device_id))
    try:
        d = Daemon(
            tmp_path, b, device_id, "--source", str(clip), "--loop",
            "--model", str(sample_model), "--fps", "5", "--stats-interval", "1",
        )  # fmt: skip
        daemons.append(d)
        base = d.base
        c.wait_for(f"{base}/event", lambda m: js(m)["to"] in ("happy", "sad"), LIVENESS)
        rss_before = _rss_kb(d.proc.pid)

        b.stop()
        gone = time.time()
        time.sleep(10)  # the outage itself
        assert d.proc.poll() is None, d.stderr()
        rss_away = _rss_kb(d.proc.pid)
        c.clear()
        back = time.time()
        b.start()

        c.wait_for(f"{base}/availability", lambda m: m.text == "online", LIVENESS)
        state = c.wait_for(f"{base}/state", timeout=10)
        assert js(state)["expression"] in ("happy", "sad")
        # The state sent on reconnect is the newest (the clip changes every 1.5 s), not
        # the one from before the outage.
        assert datetime.fromisoformat(js(state)["timestamp"]).timestamp() >= gone + 5
        # A stats report made after the reconnect: anything replayed would have come first.
        stats = js(c.wait_for(f"{base}/stats", lambda m: js(m)["broker_reconnects"] >= 1))
        assert stats["mqtt_dropped"] > 0  # events/detections while away: dropped, not queued
        for m in c.on(f"{base}/event"):  # events after the reconnect only
            assert datetime.fromisoformat(js(m)["time"]).timestamp() >= back - 0.5, js(m)
        err = d.stderr()
        assert "MQTT: lost the broker" in err
        assert "MQTT: reconnected" in err
        # The log does not grow with the retries either: each problem is said once.
        assert err.count("connection refused") == 1, err
        assert sum("MQTT" in line for line in err.splitlines()) <= 6, err
        # Bounded: 10 s of 5 fps without a broker must not pile anything up.
        assert rss_away - rss_before < 20_000, (rss_before, rss_away)

        # SIGKILL: no goodbye from the daemon, the broker's last will says offline.
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        c.wait_for(f"{base}/availability", lambda m: m.text == "offline", 10)
    finally:
        c.close()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- a broker that wants a password; a broker that wants TLS -----------------------------


def test_password_broker_wrong_password_is_one_clear_log_line_and_the_daemon_lives_on(
    auth_broker, sample_model, tmp_path, daemons, device_id
):
    clip = tmp_path / "c.avi"
    write_video(clip, [Segment(HAPPY, 2.0)], fps=10)
    common = ("--source", str(clip), "--loop", "--model", str(sample_model), "--fps", "5")
    bad = Daemon(tmp_path, auth_broker, f"{device_id}-bad", *common, "--duration", "4",
                 username=USER, password="Xq7-not-it")  # fmt: skip
    daemons.append(bad)
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    good = Daemon(tmp_path, auth_broker, f"{device_id}-good", *common, "--duration", "30",
                  username=USER, password_file=str(pw))  # fmt: skip
    daemons.append(good)
    c = Collector(auth_broker, "edged/#", username=USER, password=PASSWORD)
    try:
        c.wait_for(f"{good.base}/availability", lambda m: m.text == "online", LIVENESS)
        assert bad.wait() == 0  # ran its full duration: the broker never killed it
        err = bad.stderr()
        assert err.count("bad username or password") == 1, err
        assert "Xq7-not-it" not in err  # never logged
        c.sync()
        assert [m for m in c.messages if m.topic.startswith(f"{bad.base}/")] == []
        assert c.on(f"{good.base}/state")  # the other daemon, right beside it, got through
        good.proc.send_signal(signal.SIGTERM)
        assert good.wait() == 0
    finally:
        c.close()


def test_tls_broker_with_client_certificate(tls_broker, sample_model, tmp_path, daemons, device_id):
    b, f = tls_broker
    clip = tmp_path / "c.avi"
    write_video(clip, [Segment(HAPPY, 2.0)], fps=10)
    c = Collector(b, "edged/#", tls_ca=f.ca, tls_cert=f.client_cert, tls_key=f.client_key)
    try:
        d = Daemon(
            tmp_path, b, device_id, "--source", str(clip), "--loop", "--model", str(sample_model),
            "--fps", "5", "--duration", "30",
            ca_file=str(f.ca), certfile=str(f.client_cert), keyfile=str(f.client_key),
        )  # fmt: skip
        daemons.append(d)
        c.wait_for(f"{d.base}/availability", lambda m: m.text == "online", LIVENESS)
        c.wait_for(f"{d.base}/state", lambda m: js(m)["expression"] == "happy", LIVENESS)
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait() == 0
    finally:
        c.close()
