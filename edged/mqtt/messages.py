"""What edged says over MQTT: topic names, payloads and Home Assistant discovery.

Pure: values in, ``(topic, bytes)`` out. The publisher decides when and whether to send.
Every payload is documented in README.md (MQTT and Home Assistant) with an example; keep
the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edged import __version__
from edged.daemon import payloads
from edged.daemon.outputs import NONE, ExpressionEvent, ExpressionReport
from edged.daemon.payloads import encode, event_body, iso_time, state_body, stats_body

if TYPE_CHECKING:
    from edged.settings import Settings
from edged.vision.pipeline import FrameResult

ON, OFF = payloads.ON, payloads.OFF  # the switch's words, as every output says them
ONLINE = "online"
OFFLINE = "offline"


def check_topic(topic: str) -> str:
    """``topic`` if it can be published to: not empty, no wildcard, no NUL, no empty level
    at its ends. paho refuses such topics only at publish time, inside its network
    thread, so the value type checks them when it is made."""
    wild = any(c in topic for c in "#+\x00")
    if not topic or wild or topic.startswith("/") or topic.endswith("/"):
        raise ValueError(f"{topic!r} is not a plain MQTT topic (no +, #, or leading/trailing /)")
    if len(topic.encode()) > 65535:
        raise ValueError("an MQTT topic is at most 65535 bytes")
    return topic


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic of one device, under ``<prefix>/<device_id>``; validates itself."""

    base: str

    def __post_init__(self) -> None:
        check_topic(self.base)

    @classmethod
    def of(cls, prefix: str, device_id: str) -> Topics:
        return cls(f"{prefix.strip('/')}/{device_id}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls.of(settings.mqtt.prefix, settings.mqtt.device_id)

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def detections(self) -> str:
        return f"{self.base}/detections"

    @property
    def camera(self) -> str:
        return f"{self.base}/camera"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def detect_set(self) -> str:
        return f"{self.base}/detect/set"

    @property
    def detect_state(self) -> str:
        return f"{self.base}/detect/state"

    @property
    def snapshot(self) -> str:
        return f"{self.base}/snapshot"

    @property
    def owner(self) -> str:
        """Where two daemons with one device_id find each other (`edged.mqtt.claim`)."""
        return f"{self.base}/owner"

    def retained(self) -> list[str]:
        """The topics edged leaves retained values on (cleared by ``ha-remove --all``)."""
        return [self.availability, self.state, self.camera, self.stats, self.detect_state]


def state_payload(report: ExpressionReport) -> bytes:
    """The retained ``state``: the daemon's debounced expression and how sure (0..1)."""
    return encode(state_body(report))


def event_payload(event: ExpressionEvent) -> bytes:
    """One ``event`` per change; not retained, so nothing stale replays."""
    return encode(event_body(event))


def detections_payload(result: FrameResult, wall: float) -> bytes:
    """Every face of one processed frame, largest first; ``box`` is [x, y, w, h] in pixels."""
    return encode(
        {
            "timestamp": iso_time(wall),
            "model_version": result.model_version,
            "faces": [f.as_dict() for f in result.faces],
        }
    )


def stats_payload(stats: Mapping[str, object], wall: float) -> bytes:
    """The service's counters (the broker's among them); floats rounded for people to read."""
    return encode(stats_body(stats, wall))


# -- Home Assistant discovery --------------------------------------------------------

# (component, object id): the entities edged announces. Fixed, so ha-remove can clear
# them without knowing what the model's classes were.
ENTITIES: tuple[tuple[str, str], ...] = (
    ("sensor", "expression"),
    ("sensor", "confidence"),
    ("sensor", "faces"),
    ("sensor", "fps"),
    ("binary_sensor", "camera"),
    ("switch", "detect"),
)
SNAPSHOT_ENTITY = ("image", "snapshot")  # only with publish.snapshot on


@dataclass(frozen=True, slots=True)
class Discovery:
    """What discovery needs to know about this device."""

    prefix: str  # "homeassistant"
    device_id: str
    name: str  # shown in Home Assistant
    topics: Topics

    def __post_init__(self) -> None:
        check_topic(self.prefix.strip("/"))

    @classmethod
    def of(cls, settings: Settings) -> Discovery:
        """This device's discovery, from ``[mqtt]`` and ``[homeassistant]``."""
        cfg, ha = settings.mqtt, settings.homeassistant
        name = ha.device_name or f"edged {cfg.device_id}"
        return cls(ha.prefix, cfg.device_id, name, Topics.from_settings(settings))

    @property
    def node(self) -> str:
        return f"edged_{self.device_id}"

    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.prefix.strip('/')}/{component}/{self.node}/{object_id}/config"

    def config_topics(self) -> list[str]:
        """Every topic discovery may have used (removal clears them all)."""
        return [self.config_topic(c, o) for c, o in (*ENTITIES, SNAPSHOT_ENTITY)]


def discovery_messages(
    d: Discovery, classes: Sequence[str], snapshot: bool = False
) -> list[tuple[str, bytes]]:
    """Retained config messages: one device holding every edged entity."""
    configs = {**_sensor_configs(d.topics, _options(classes)), **_control_configs(d.topics)}
    common = _common_config(d)
    out = []
    for component, object_id in (*ENTITIES, SNAPSHOT_ENTITY) if snapshot else ENTITIES:
        cfg = {**configs[object_id], "unique_id": f"{d.node}_{object_id}", **common}
        out.append((d.config_topic(component, object_id), encode(cfg)))
    return out


def _common_config(d: Discovery) -> dict[str, object]:
    """What every entity's config repeats: availability, the device and the origin."""
    device = {
        "identifiers": [d.node],
        "name": d.name,
        "manufacturer": "edged",
        "model": "Facial-expression camera (Haar + LBPH)",
        "sw_version": __version__,
    }
    return {
        "availability_topic": d.topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": device,
        "origin": {"name": "edged", "sw_version": __version__},
    }


def _sensor_configs(t: Topics, options: list[str]) -> dict[str, dict[str, object]]:
    """The sensors: the expression (one of ``options``), its confidence, faces, frame rate."""
    return {
        "expression": {
            "name": "Expression",
            "device_class": "enum",
            "options": options,
            "state_topic": t.state,
            "value_template": "{{ value_json.expression }}",
            "json_attributes_topic": t.state,
            "icon": "mdi:emoticon-outline",
        },
        "confidence": {
            "name": "Expression confidence",
            "state_topic": t.state,
            "value_template": "{{ (value_json.confidence * 100) | round(1) }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "icon": "mdi:percent",
        },
        "faces": {
            "name": "Faces",
            "state_topic": t.state,
            "value_template": "{{ value_json.faces }}",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "icon": "mdi:face-recognition",
        },
        "fps": {
            "name": "Frame rate",
            "state_topic": t.stats,
            "value_template": "{{ value_json.fps }}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "icon": "mdi:speedometer",
        },
    }


def _control_configs(t: Topics) -> dict[str, dict[str, object]]:
    """The camera's connectivity, the detection switch, and the snapshot image."""
    return {
        "camera": {
            "name": "Camera",
            "device_class": "connectivity",
            "state_topic": t.camera,
            "payload_on": ONLINE,
            "payload_off": OFFLINE,
            "entity_category": "diagnostic",
        },
        "detect": {
            "name": "Expression detection",
            "command_topic": t.detect_set,
            "state_topic": t.detect_state,
            "payload_on": ON,
            "payload_off": OFF,
            "icon": "mdi:eye",
        },
        "snapshot": {
            "name": "Snapshot",
            "image_topic": t.snapshot,
            "content_type": "image/jpeg",
        },
    }


def removal_messages(d: Discovery) -> list[tuple[str, bytes]]:
    """Empty retained payloads: Home Assistant deletes the entities (and the device)."""
    return [(topic, b"") for topic in d.config_topics()]


def _options(classes: Iterable[str]) -> list[str]:
    out = [c for c in dict.fromkeys(classes) if c != NONE]
    return [*out, NONE]


def parse_switch(payload: bytes) -> bool | None:
    """``ON``/``OFF`` (any case, also true/false/1/0) -> bool; anything else -> None."""
    text = payload.decode("utf-8", "replace").strip().lower()
    if text in ("on", "true", "1"):
        return True
    if text in ("off", "false", "0"):
        return False
    return None
