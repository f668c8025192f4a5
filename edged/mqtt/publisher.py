"""The MQTT side of ``edged run``: a paho-mqtt (v2 API) client as the service's `Output`.

Threads and state: the frame loop calls ``on_*``; paho's network loop runs the callbacks
in a supervised `Worker` thread (``edged-mqtt``), so a crash in it is logged and restarted.
The newest retained values (state, camera, stats, detect state) and the discovery messages
live in
``_latest`` under ``_lock``, the same lock that covers "am I connected" and every
publish, so a reconnect's snapshot and a fresh state never cross.

Broker away: nothing is handed to paho (its own queue for QoS>0 grows without bound);
retained values are only remembered (one per topic) and sent on reconnect; events and
detections are dropped and counted; unacknowledged messages from before the loss are
dropped on reconnect, so no old event is ever replayed. paho's capped exponential
backoff does the retrying; a refused connection is logged once, in words.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt

from edged.daemon.outputs import Commands, ExpressionEvent, ExpressionReport
from edged.daemon.workers import FatalHandler, Worker
from edged.mqtt.client import describe_connack, describe_oserror
from edged.mqtt.messages import (
    OFF,
    OFFLINE,
    ON,
    ONLINE,
    Discovery,
    Topics,
    detections_payload,
    discovery_messages,
    event_payload,
    parse_switch,
    state_payload,
    stats_payload,
)
from edged.vision.draw import draw_faces

if TYPE_CHECKING:
    from edged.daemon.outputs import ModelStatus
    from edged.settings import Settings
    from edged.vision.pipeline import FrameResult

log = logging.getLogger(__name__)

STOP_TIMEOUT = 1.0  # s to wait for the retained "offline" on shutdown (SIGTERM → exit in 2 s)


class MqttPublisher:
    """Publishes what the daemon decided; implements the daemon's ``Output`` protocol."""

    def __init__(
        self,
        settings: Settings,
        client: mqtt.Client,
        *,
        on_fatal: FatalHandler | None = None,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client = client  # made by `edged.mqtt.client.make_client` (id, will, TLS, ...)
        self.topics = Topics.from_settings(settings)
        self.discovery = Discovery.of(settings) if settings.homeassistant.discovery else None
        self._qos = settings.mqtt.qos
        self._wall = wall
        self._clock = clock  # snapshot pacing: immune to wall-clock jumps (NTP at boot)
        self._detections = settings.publish.detections
        self._classes: list[str] = []
        self._commands: Commands | None = None  # set by start(): the daemon's switchboard
        self._on_fatal = on_fatal
        self._network: Worker | None = None  # paho's network loop, supervised

        self._lock = threading.Lock()
        self._connected = False
        self._latest: dict[str, bytes] = {}  # retained topic -> newest payload
        self._discovery_msgs: list[tuple[str, bytes]] = []
        self._ever_connected = False
        self._problem: str | None = None  # the last reported connection problem
        self.reconnects = 0
        self.dropped = 0  # events and detections not sent because the broker was away
        self.wants_images = settings.publish.snapshot  # the service passes frames only if so
        self._next_snapshot = 0.0
        self._canvas: np.ndarray | None = None

    # -- Output ------------------------------------------------------------------------

    def start(self, commands: Commands) -> None:
        self._commands = commands
        client = self.client
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        if self.discovery is not None:
            self._discovery_msgs = discovery_messages(
                self.discovery, self._classes, self.wants_images
            )
        cfg = self.settings.mqtt
        log.info(
            "MQTT: connecting to %s:%d%s as %s, topics under %s/",
            cfg.host,
            cfg.port,
            " (TLS)" if cfg.uses_tls else "",
            cfg.client_id or f"edged-{cfg.device_id}",
            self.topics.base,
        )
        client.connect_async(cfg.host, cfg.port, cfg.keepalive)
        self._network = Worker(
            "edged-mqtt",
            self._network_loop,
            on_fatal=self._on_fatal,
            backoff=(cfg.reconnect_min, cfg.reconnect_max),
        )
        self._network.start()

    def _network_loop(self) -> None:
        """paho's loop (reconnects with its own backoff) until `stop` disconnects."""
        self.client.loop_forever(retry_first_connection=True)

    def on_frame(self, result: FrameResult | None, now: float) -> None:
        if result is not None and self._detections and result.faces:
            wall = result.timestamp or now
            self._publish_volatile(self.topics.detections, detections_payload(result, wall), 0)

    def on_state(self, report: ExpressionReport) -> None:
        self._publish_retained(self.topics.state, state_payload(report))

    def on_event(self, event: ExpressionEvent) -> None:
        self._publish_volatile(self.topics.event, event_payload(event), self._qos)

    def on_detect(self, on: bool) -> None:
        self._publish_retained(self.topics.detect_state, (ON if on else OFF).encode())

    def on_image(self, image: np.ndarray, result: FrameResult, now: float) -> None:
        """The opt-in snapshot: an annotated JPEG at most every ``snapshot_interval`` s.

        Called by the service only when ``wants_images`` is true (``publish.snapshot``),
        so by default no image ever reaches this class, let alone the network.
        """
        mono = self._clock()
        if not self.wants_images or mono < self._next_snapshot:
            return
        self._next_snapshot = mono + self.settings.publish.snapshot_interval
        if not self._connected:
            return
        canvas = self._canvas
        if canvas is None or canvas.shape != image.shape:
            canvas = self._canvas = np.empty_like(image)
        np.copyto(canvas, image)  # the frame buffer is the grabber's: draw on a copy
        draw_faces(canvas, result.faces)
        ok, jpeg = cv2.imencode(".jpg", canvas, (cv2.IMWRITE_JPEG_QUALITY, 80))
        if ok:
            # Not retained: no image outlives the moment on the broker.
            self._publish_volatile(self.topics.snapshot, jpeg.tobytes(), 0)

    def on_camera(self, online: bool, reason: str) -> None:
        self._publish_retained(self.topics.camera, (ONLINE if online else OFFLINE).encode())

    def on_model(self, status: ModelStatus) -> None:
        classes = list(status.classes)
        if self.discovery is None or not classes or classes == self._classes:
            return
        self._classes = classes
        msgs = discovery_messages(self.discovery, classes, self.wants_images)
        with self._lock:
            self._discovery_msgs = msgs
            if self._connected:
                self._send_all(msgs, retain=True)

    def stats_fields(self) -> dict[str, object]:
        """The broker's part of every stats report (`StatsSource`): every output shows it."""
        return {
            "broker_connected": self._connected,
            "broker_reconnects": self.reconnects,
            "mqtt_dropped": self.dropped,
        }

    def on_stats(self, stats: dict[str, object]) -> None:
        self._publish_retained(self.topics.stats, stats_payload(stats, self._wall()))

    def stop(self) -> None:
        """Retained ``offline`` (waited for, briefly), then disconnect and end the thread."""
        with self._lock:
            connected, self._connected = self._connected, False
        if connected:
            info = self.client.publish(
                self.topics.availability, OFFLINE, qos=max(self._qos, 1), retain=True
            )
            try:
                info.wait_for_publish(STOP_TIMEOUT)
            except (RuntimeError, ValueError):
                log.warning("MQTT: could not publish 'offline' before exit")
        self.client.disconnect()
        # paho's loop ends once it sees the disconnect, but it may sit in a TCP connect to
        # an unreachable broker: give it half a second, then leave it (a daemon thread)
        # to end with the process, so SIGTERM still exits in time.
        network = self._network
        if network is None:
            return
        network.stop()
        if not network.join(0.5):
            log.debug("MQTT: network thread still connecting; not waiting for it")
            return
        sock = self.client.socket()  # paho leaves it open if stopped mid-reconnect
        if sock is not None:
            sock.close()

    # -- publishing --------------------------------------------------------------------

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        """Remember as the newest value; send now if connected, else on reconnect."""
        with self._lock:
            self._latest[topic] = payload
            if self._connected:
                self._send(topic, payload, self._qos, retain=True)

    def _publish_volatile(self, topic: str, payload: bytes, qos: int) -> None:
        """Now or never: not retained, not kept for later."""
        with self._lock:
            if self._connected:
                self._send(topic, payload, qos, retain=False)
            else:
                self.dropped += 1

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Hand one message to paho (lock held); a refusal (its queue is full) is counted."""
        if self.client.publish(topic, payload, qos=qos, retain=retain).rc != mqtt.MQTT_ERR_SUCCESS:
            self.dropped += 1

    def _send_all(self, msgs: list[tuple[str, bytes]], retain: bool) -> None:
        for topic, payload in msgs:
            self.client.publish(topic, payload, qos=self._qos, retain=retain)

    def _announce(self) -> None:
        """Discovery, then every newest retained value, then ``online`` (lock held)."""
        self._send_all(self._discovery_msgs, retain=True)
        self._send_all(list(self._latest.items()), retain=True)
        self.client.publish(self.topics.availability, ONLINE, qos=max(self._qos, 1), retain=True)

    # -- paho callbacks (network thread) -----------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: Any,
        _props: Any,
    ) -> None:
        if reason.is_failure:
            self._report(describe_connack(reason) + "; retrying with backoff")
            return
        dropped = client.drop_out_messages()  # unacknowledged leftovers: never replay them
        subs = [(self.topics.detect_set, 1)]
        if self.discovery is not None:
            subs.append((self.settings.homeassistant.status_topic, 1))
        client.subscribe(subs)
        with self._lock:
            self._connected = True
            if self._ever_connected:
                self.reconnects += 1
            self._announce()
        cfg = self.settings.mqtt
        if self._ever_connected:
            log.info(
                "MQTT: reconnected to %s:%d (%d unsent message(s) discarded, %d dropped "
                "while away)",
                cfg.host,
                cfg.port,
                len(dropped),
                self.dropped,
            )
        else:
            log.info("MQTT: connected to %s:%d", cfg.host, cfg.port)
        self._ever_connected = True
        self._problem = None

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this from inside its `except OSError`: the error is still current.
        err = sys.exc_info()[1]
        cfg = self.settings.mqtt
        self._report(describe_oserror(err, cfg.host, cfg.port) + "; retrying with backoff")

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if was:
            log.warning(
                "MQTT: lost the broker (%s); keeping only the newest state until it is back",
                reason,
            )

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.detect_set:
            on = parse_switch(bytes(msg.payload))
            if on is None:
                log.warning("ignoring %s payload %r: send ON or OFF", msg.topic, msg.payload[:40])
                return
            if self._commands is not None:
                # The daemon decides; its answer comes back through on_detect (once).
                self._commands.set_detect(on, f"MQTT {msg.topic}")
        elif msg.payload.strip().lower() == ONLINE.encode():
            log.info("Home Assistant is online: re-sending discovery")
            with self._lock:
                if self._connected:
                    self._announce()

    def _report(self, problem: str) -> None:
        """Log a connection problem once, not on every retry."""
        if problem != self._problem:
            self._problem = problem
            log.error("MQTT: %s", problem)

    @property
    def network_alive(self) -> bool:
        """Whether paho's network loop is running (its thread is supervised)."""
        return self._network is not None and self._network.alive

    @property
    def problem(self) -> str | None:
        """The current connection problem, if any (for stats and tests)."""
        return self._problem
