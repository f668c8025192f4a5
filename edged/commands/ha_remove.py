"""``edged ha-remove``: take this device out of Home Assistant (empty retained discovery)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edged.errors import BrokerError, ExitStatus
from edged.mqtt.client import connect_once
from edged.mqtt.messages import Discovery, removal_messages
from edged.settings import Settings, load_settings


def remove(settings: Settings, everything: bool = False) -> list[str]:
    """Clear this device's discovery (and with ``everything`` its retained values)."""
    d = Discovery.of(settings)
    msgs = removal_messages(d)
    if everything:
        msgs += [(t, b"") for t in d.topics.retained()]
    client = connect_once(settings)
    try:
        infos = [client.publish(t, p, qos=1, retain=True) for t, p in msgs]
        for info in infos:
            info.wait_for_publish(5.0)
        if not all(i.is_published() for i in infos):
            raise BrokerError("MQTT: the broker did not acknowledge every removal")
    finally:
        client.disconnect()
        client.loop_stop()
    return [t for t, _ in msgs]


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    mqtt_over = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("device_id", args.device_id))
        if v is not None
    }
    if mqtt_over:
        overrides["mqtt"] = mqtt_over
    settings = load_settings(args.config, overrides)
    removed = remove(settings, everything=args.all)
    for t in removed:
        print(f"cleared {t}")
    print(f"removed edged {settings.mqtt.device_id} from Home Assistant ({len(removed)} topics)")
    return ExitStatus.OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ha-remove",
        help="remove this device's entities from Home Assistant",
        description="Publish empty retained discovery messages for this device, so Home "
        "Assistant deletes its entities and the device. Uses the same MQTT settings as "
        "'edged run' (config file, EDGED_MQTT__* environment).",
    )
    p.add_argument("--config", "-c", type=Path, help="TOML settings file")
    p.add_argument("--host", help="broker host (overrides mqtt.host)")
    p.add_argument("--port", type=int, help="broker port (overrides mqtt.port)")
    p.add_argument("--device-id", help="the device to remove (default: mqtt.device_id)")
    p.add_argument(
        "--all",
        action="store_true",
        help="also clear edged's own retained topics (availability, state, camera, stats, "
        "detect/state)",
    )
    p.set_defaults(func=run)
