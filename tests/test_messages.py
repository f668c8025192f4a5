"""Topics, payloads and Home Assistant discovery: the documented schema, byte for byte."""

from __future__ import annotations

import json
import math
from datetime import datetime

import pytest

from edged import __version__
from edged.daemon.outputs import NONE, ExpressionEvent, ExpressionReport
from edged.mqtt.messages import (
    ENTITIES,
    Discovery,
    Topics,
    detections_payload,
    discovery_messages,
    event_payload,
    parse_switch,
    removal_messages,
    state_payload,
    stats_payload,
)
from edged.settings import load_settings
from edged.vision.detector import Box
from edged.vision.pipeline import FaceResult, FrameResult

WALL = 1_763_900_000.25  # 2025-11-23T12:13:20.250Z
T = Topics.of("edged", "kitchen")
D = Discovery("homeassistant", "kitchen", "edged kitchen", T)
CLASSES = ["anger", "happy", "sad", "neutral", "surprise"]


def test_topics_live_under_prefix_and_device_id():
    assert T.availability == "edged/kitchen/availability"
    assert T.state == "edged/kitchen/state"
    assert T.event == "edged/kitchen/event"
    assert T.detections == "edged/kitchen/detections"
    assert T.camera == "edged/kitchen/camera"
    assert T.stats == "edged/kitchen/stats"
    assert T.detect_set == "edged/kitchen/detect/set"
    assert T.detect_state == "edged/kitchen/detect/state"
    assert Topics.of("home/cams/", "pi").state == "home/cams/pi/state"


def report(**kw: object) -> ExpressionReport:
    values: dict = {
        "expression": "happy",
        "confidence": 0.8234567,
        "distance": 41.2345,
        "faces": 2,
        "since": WALL - 5,
        "timestamp": WALL,
        "model_version": "0123abcd4567",
        "detect": True,
        **kw,
    }
    return ExpressionReport(**values)


def test_state_payload_has_the_documented_fields_and_ranges():
    msg = json.loads(state_payload(report()))
    assert msg == {
        "expression": "happy",
        "confidence": 0.8235,
        "distance": 41.23,
        "faces": 2,
        "since": "2025-11-23T12:13:15.250+00:00",
        "timestamp": "2025-11-23T12:13:20.250+00:00",
        "model_version": "0123abcd4567",
        "detect": "ON",
    }
    assert datetime.fromisoformat(msg["timestamp"]).timestamp() == WALL


def test_state_payload_says_detect_off_while_the_privacy_switch_is_off():
    msg = json.loads(state_payload(report(expression=NONE, confidence=0.0, faces=0, detect=False)))
    assert (msg["expression"], msg["detect"], msg["faces"]) == (NONE, "OFF", 0)


def test_state_payload_turns_an_infinite_distance_into_null_not_invalid_json():
    msg = state_payload(report(expression=NONE, distance=math.inf, model_version=None))
    assert json.loads(msg)["distance"] is None
    assert json.loads(msg)["model_version"] is None
    assert b"Infinity" not in msg


def test_event_payload_names_both_ends_of_the_transition():
    msg = json.loads(event_payload(ExpressionEvent("neutral", "surprise", 0.912345, WALL)))
    assert msg == {
        "from": "neutral",
        "to": "surprise",
        "confidence": 0.9123,
        "time": "2025-11-23T12:13:20.250+00:00",
    }


def test_detections_payload_lists_every_face_with_its_box():
    r = FrameResult(
        faces=[
            FaceResult(Box(1, 2, 30, 40), "sad", 0.5, 60.0),
            FaceResult(Box(5, 6, 10, 12), None, 0.0, 0.0),
        ],
        model_version="v1",
        detect_ms=3.0,
        classify_ms=1.0,
    )
    msg = json.loads(detections_payload(r, WALL))
    assert msg["model_version"] == "v1"
    assert msg["timestamp"] == "2025-11-23T12:13:20.250+00:00"
    assert msg["faces"] == [
        {"expression": "sad", "confidence": 0.5, "distance": 60.0, "box": [1, 2, 30, 40]},
        {"expression": None, "confidence": 0.0, "distance": 0.0, "box": [5, 6, 10, 12]},
    ]


def test_detections_payload_rounds_like_every_face_payload_and_nulls_an_infinite_distance():
    face = FaceResult(Box(1, 2, 30, 40), "happy", 0.123456789, math.inf)
    r = FrameResult(faces=[face], model_version="v1", detect_ms=1.0, classify_ms=1.0)
    raw = detections_payload(r, WALL)
    assert b"Infinity" not in raw
    (got,) = json.loads(raw)["faces"]
    assert got == face.as_dict()
    assert (got["confidence"], got["distance"]) == (0.1235, None)


def test_stats_payload_keeps_the_services_keys_and_rounds_floats():
    msg = json.loads(stats_payload({"fps": 4.98765, "skipped": 3, "model_version": "v"}, WALL))
    assert msg["fps"] == 4.988 and msg["skipped"] == 3 and msg["model_version"] == "v"
    assert "timestamp" in msg


def _configs(classes=CLASSES) -> dict[str, dict]:
    return {topic: json.loads(p) for topic, p in discovery_messages(D, classes)}


def test_discovery_announces_one_device_with_every_entity():
    configs = _configs()
    assert set(configs) == {f"homeassistant/{c}/edged_kitchen/{o}/config" for c, o in ENTITIES}
    devices = {json.dumps(c["device"], sort_keys=True) for c in configs.values()}
    assert len(devices) == 1
    device = next(iter(configs.values()))["device"]
    assert device["identifiers"] == ["edged_kitchen"]
    assert device["name"] == "edged kitchen"
    assert device["sw_version"] == __version__ and device["model"]
    unique = [c["unique_id"] for c in configs.values()]
    assert len(set(unique)) == len(unique)
    assert all(u.startswith("edged_kitchen_") for u in unique)


def test_discovery_wires_availability_to_the_availability_topic():
    for c in _configs().values():
        assert c["availability_topic"] == "edged/kitchen/availability"
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")


def test_discovery_expression_is_an_enum_of_the_models_classes_plus_none():
    expr = _configs(["happy", "sad", "happy"])[
        "homeassistant/sensor/edged_kitchen/expression/config"
    ]
    assert expr["device_class"] == "enum"
    assert expr["options"] == ["happy", "sad", "none"]
    # Home Assistant rejects an enum sensor with a unit or a state class.
    assert "unit_of_measurement" not in expr and "state_class" not in expr
    assert expr["state_topic"] == "edged/kitchen/state"


def test_discovery_confidence_is_a_percentage_and_diagnostics_are_marked():
    configs = _configs()
    conf = configs["homeassistant/sensor/edged_kitchen/confidence/config"]
    assert conf["unit_of_measurement"] == "%"
    assert "* 100" in conf["value_template"]
    for obj in ("faces", "fps"):
        assert configs[f"homeassistant/sensor/edged_kitchen/{obj}/config"]["entity_category"] == (
            "diagnostic"
        )
    assert configs["homeassistant/sensor/edged_kitchen/fps/config"]["state_topic"] == T.stats


def test_discovery_privacy_switch_commands_and_reports_on_its_topics():
    sw = _configs()["homeassistant/switch/edged_kitchen/detect/config"]
    assert sw["command_topic"] == "edged/kitchen/detect/set"
    assert sw["state_topic"] == "edged/kitchen/detect/state"
    assert (sw["payload_on"], sw["payload_off"]) == ("ON", "OFF")


def test_removal_empties_every_config_topic_discovery_uses():
    removal = removal_messages(D)
    with_snapshot = {t for t, _ in discovery_messages(D, CLASSES, snapshot=True)}
    assert {t for t, _ in removal} == with_snapshot
    assert all(p == b"" for _, p in removal)


def test_snapshot_image_entity_is_announced_only_when_snapshots_are_on():
    assert not any("/image/" in t for t in _configs())
    configs = {t: json.loads(p) for t, p in discovery_messages(D, CLASSES, snapshot=True)}
    img = configs["homeassistant/image/edged_kitchen/snapshot/config"]
    assert img["image_topic"] == "edged/kitchen/snapshot"
    assert img["content_type"] == "image/jpeg"


def test_parse_switch_accepts_on_off_in_any_case_and_rejects_the_rest():
    assert parse_switch(b"ON") is True and parse_switch(b" off\n") is False
    assert parse_switch(b"true") is True and parse_switch(b"0") is False
    assert parse_switch(b"maybe") is None and parse_switch(b"\xff") is None


def test_topics_and_discovery_refuse_a_topic_paho_would_only_reject_when_publishing():
    for prefix in ("home/#", "a/+/b", "edged\x00x"):
        with pytest.raises(ValueError, match="plain MQTT topic"):
            Topics.of(prefix, "kitchen")
    with pytest.raises(ValueError, match="plain MQTT topic"):
        Topics("/edged/kitchen")  # an empty first level
    with pytest.raises(ValueError, match="plain MQTT topic"):
        Discovery("home/+", "kitchen", "edged kitchen", T)
    assert Topics.of("/edged/", "kitchen").base == "edged/kitchen"  # of() trims the prefix


def test_discovery_of_settings_names_the_device_after_its_id_unless_named(clean_env):
    d = Discovery.of(load_settings(None, {"mqtt": {"device_id": "hall"}}))
    assert (d.node, d.name, d.topics.state) == ("edged_hall", "edged hall", "edged/hall/state")
    named = load_settings(
        None, {"mqtt": {"device_id": "hall"}, "homeassistant": {"device_name": "Hall"}}
    )
    assert Discovery.of(named).name == "Hall"
