"""The JSON bodies of the state, events and stats: one form for every output that shows
them (MQTT payloads, the web page's API), so a dashboard and a script read the same thing.

Pure: values in, dicts or bytes out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime

from edged.daemon.outputs import ExpressionEvent, ExpressionReport

ON = "ON"
OFF = "OFF"


def iso_time(wall: float) -> str:
    """UTC ISO 8601 with milliseconds, the form Home Assistant's timestamp parsing takes."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


def encode(obj: Mapping[str, object] | list[object]) -> bytes:
    """Compact JSON; non-finite floats (an LBPH distance can be inf) become null."""
    return json.dumps(_finite(obj), separators=(",", ":"), default=_default).encode()


def _finite(obj: object) -> object:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _default(o: object) -> object:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"cannot encode {type(o).__name__}")


def state_body(report: ExpressionReport) -> dict[str, object]:
    """The ``state``: the daemon's debounced expression and how sure (0..1)."""
    body = report.as_dict()
    body["since"] = iso_time(report.since)
    body["timestamp"] = iso_time(report.timestamp)
    body["detect"] = ON if report.detect else OFF
    return body


def event_body(event: ExpressionEvent) -> dict[str, object]:
    """One change of the expression."""
    return {**event.as_dict(), "time": iso_time(event.time)}


def stats_body(stats: Mapping[str, object], wall: float) -> dict[str, object]:
    """The service's counters; floats rounded for people to read, and when they were taken."""
    out: dict[str, object] = {}
    for k, v in stats.items():
        out[k] = round(v, 3) if isinstance(v, float) and math.isfinite(v) else v
    out["timestamp"] = iso_time(wall)
    return out
