"""``/metrics``: the daemon's stats in Prometheus' text format, read at scrape time.

A custom collector (`prometheus_client`'s pattern for exporters of existing stats): the
frame loop keeps counting as it does for MQTT, and nothing extra runs per frame. Names
follow Prometheus conventions: ``edged_`` prefix, base units (seconds, bytes, ratios),
``_total`` for counters. CPU and memory come from the library's standard
``process_*`` collector.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from edged import __version__
from edged.daemon.outputs import NONE
from edged.web.board import Board

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (stats key, metric name without _total, help)
COUNTERS = (
    ("frames", "edged_frames", "Frames processed (detection on, a new frame)."),
    ("ticks", "edged_ticks", "Frame-loop ticks."),
    ("idle_ticks", "edged_idle_ticks", "Ticks with no new frame from the camera."),
    ("skipped_ticks", "edged_skipped_ticks", "Ticks skipped because the loop overran."),
    ("output_errors", "edged_output_errors", "Failures of an output (MQTT, stdout, page)."),
    ("pipeline_errors", "edged_pipeline_errors", "Frames the pipeline could not process."),
    ("full_scans", "edged_full_scans", "Whole-frame face scans (a split one counts once)."),
    ("region_scans", "edged_region_scans", "Face scans of part of a frame (tracking, motion)."),
    ("broker_reconnects", "edged_broker_reconnects", "Reconnections to the MQTT broker."),
    (
        "mqtt_dropped",
        "edged_mqtt_dropped_messages",
        "Events and detections not sent (broker away).",
    ),
    ("http_auth_failures", "edged_http_auth_failures", "Failed logins to the web page."),
)
# (stats key, metric name, help): milliseconds in the stats, seconds here
SUMMARIES = (
    ("latency_ms", "edged_frame_latency_seconds", "Tick start to results delivered, per frame."),
    ("detect_ms", "edged_detect_seconds", "Face detection time per frame."),
    ("classify_ms", "edged_classify_seconds", "Expression classification time per frame."),
)


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class EdgedCollector(Collector):
    """Reads the `Board` (the daemon's last live stats and state) at each scrape."""

    def __init__(self, board: Board) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        stats: Mapping[str, Any] = self.board.stats or {}
        yield from self._counters(stats)
        yield from self._summaries(stats)
        yield from self._gauges(stats)
        yield from self._expression()
        yield from self._model(stats)
        info = InfoMetricFamily("edged_build", "The edged version.")
        info.add_metric([], {"version": __version__})
        yield info

    def _counters(self, stats: Mapping[str, Any]) -> Iterator[Metric]:
        for key, name, doc in COUNTERS:
            value = _num(stats.get(key))
            if value is not None:
                yield CounterMetricFamily(name, doc, value=value)
        camera = stats.get("camera") or {}
        for key, name, doc in (
            ("reconnects", "edged_camera_reconnects", "Camera reopened after a failure."),
            ("dropped", "edged_camera_dropped_frames", "Frames grabbed but never processed."),
        ):
            value = _num(camera.get(key))
            if value is not None:
                yield CounterMetricFamily(name, doc, value=value)

    def _summaries(self, stats: Mapping[str, Any]) -> Iterator[Metric]:
        for key, name, doc in SUMMARIES:
            part = stats.get(key) or {}
            count, total = _num(part.get("count")), _num(part.get("sum"))
            if count is None or total is None:
                continue
            m = SummaryMetricFamily(name, doc, count_value=int(count), sum_value=total / 1000)
            for q in ("p50", "p95"):
                v = _num(part.get(q))
                if v is not None:
                    m.add_sample(name, {"quantile": str(int(q[1:]) / 100)}, v / 1000)
            yield m

    def _gauges(self, stats: Mapping[str, Any]) -> Iterator[Metric]:
        board = self.board
        online, _ = board.camera
        gauges: list[tuple[str, str, float | None]] = [
            ("edged_frames_per_second", "Frames processed per second, recently.",
             _num(stats.get("fps"))),
            ("edged_target_frames_per_second", "The loop's target rate (loop.fps).",
             _num(stats.get("target_fps"))),
            ("edged_camera_online", "1 while the camera delivers frames.", float(online)),
            ("edged_detection_enabled", "1 while expression detection is on (privacy switch).",
             float(board.detect)),
            ("edged_healthy", "1 while the frame loop ticks (what /healthz says).",
             float(board.health().ok)),
            ("edged_http_viewers", "Live views being watched now.",
             _num(stats.get("http_viewers"))),
            ("edged_motion_ratio", "Share of frames with motion since start (motion gate).",
             _num(stats.get("motion_ratio"))),
        ]  # fmt: skip
        connected = stats.get("broker_connected")
        if isinstance(connected, bool):
            gauges.append(
                (
                    "edged_broker_connected",
                    "1 while connected to the MQTT broker.",
                    float(connected),
                )
            )
        for name, doc, value in gauges:
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)

    def _expression(self) -> Iterator[Metric]:
        state = self.board.state or {}
        faces = _num(state.get("faces"))
        if faces is not None:
            yield GaugeMetricFamily("edged_faces", "Faces in view.", value=faces)
        conf = _num(state.get("confidence"))
        if conf is not None:
            yield GaugeMetricFamily(
                "edged_expression_confidence",
                "How sure the current expression is (0..1).",
                value=conf,
            )
        current = state.get("expression")
        model = self.board.model
        classes = [c for c in (model.classes if model else []) if c != NONE]
        names = [*classes, NONE]
        if isinstance(current, str) and current not in names:
            names.append(current)
        if current is not None:
            m = GaugeMetricFamily(
                "edged_expression",
                "1 for the current (debounced) expression, 0 for the model's other classes.",
                labels=["expression"],
            )
            for n in names:
                m.add_metric([n], float(n == current))
            yield m

    def _model(self, stats: Mapping[str, Any]) -> Iterator[Metric]:
        model = stats.get("model") or {}
        info = InfoMetricFamily("edged_model", "The model in use (version, state).")
        info.add_metric(
            [], {"version": str(model.get("version") or ""), "state": str(model.get("state") or "")}
        )
        yield info
        for key, name, doc in (
            ("reloads", "edged_model_reloads", "Model file changes loaded."),
            (
                "failures",
                "edged_model_reload_failures",
                "Model file changes that could not be used.",
            ),
        ):
            value = _num(model.get(key))
            if value is not None:
                yield CounterMetricFamily(name, doc, value=value)


def make_registry(board: Board) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(EdgedCollector(board))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, ..._resident_memory_bytes
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
