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
backoff does the retrying; a refused connection is logged once, in words, and so is a
broker that takes the connection but never answers it.

Another edged on the same topics (the same ``device_id``): the handshake of
`edged.mqtt.claim` decides which one publishes. Until this one owns the topics it is
connected without a last will and publishes nothing on them; ``_connected`` means
"connected *and* the owner", the only state in which anything is sent. Becoming the owner
(or yielding) changes the will, which only a new CONNECT can do: the network loop then
reconnects at once (``_rejoining``), with a clean DISCONNECT so no will fires.

Commands: only live ones count. A retained ``detect/set`` (left by any client) is ignored,
and garbage on it is logged once, then summarised (`LogLimiter`).
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
from edged.mqtt.claim import CLAIM_WAIT, Action, Claim, Role, parse_peer
from edged.mqtt.client import client_id_of, describe_connack, describe_oserror
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
from edged.ratelimit import LogLimiter
from edged.vision.draw import draw_faces

if TYPE_CHECKING:
    from edged.daemon.outputs import ModelStatus
    from edged.settings import Settings
    from edged.vision.pipeline import FrameResult

log = logging.getLogger(__name__)

STOP_TIMEOUT = 1.0  # s to wait for the retained "offline" on shutdown (SIGTERM → exit in 2 s)
# s after the TCP (and TLS) connection is up without a CONNACK: say so. paho itself gives
# up only after the keepalive (60 s), silently.
CONNACK_WARN = 10.0
INVALID_COMMAND = "invalid detect/set"  # rate-limited log kinds (LogLimiter keys)
RETAINED_COMMAND = "retained detect/set"


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
        claim_wait: float = CLAIM_WAIT,
        connack_warn: float = CONNACK_WARN,
    ) -> None:
        self.settings = settings
        self.client = client  # made by `edged.mqtt.client.make_client` (id, TLS, ...)
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
        self.client_id = client_id_of(client)
        self.claim = Claim(self.client_id, wall())
        self._claim_wait = claim_wait
        self._connack_warn = connack_warn

        self._lock = threading.Lock()
        self._connected = False  # connected as the owner: the only state that publishes
        self._linked = False  # connected at all (a prober or twin is, silently)
        self._stopping = False
        self._rejoining = False  # a clean reconnect to change the will is under way
        self._session = 0  # counts connection attempts: a timer of an old one does nothing
        self._timers: dict[str, threading.Timer] = {}
        self._latest: dict[str, bytes] = {}  # retained topic -> newest payload
        self._discovery_msgs: list[tuple[str, bytes]] = []
        self._ever_connected = False
        self._problem: str | None = None  # the last reported connection problem
        self._limiter = LogLimiter(log, clock=clock)
        self.reconnects = 0
        self.dropped = 0  # events and detections not sent because the broker was away
        self.wants_images = settings.publish.snapshot  # the service passes frames only if so
        self._next_snapshot = 0.0
        self._canvas: np.ndarray | None = None

    # -- Output ------------------------------------------------------------------------

    def start(self, commands: Commands) -> None:
        self._commands = commands
        client = self.client
        client.will_clear()  # set only once this daemon owns the topics (see the module)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_register_write = _network_thread_writes
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
            self.client_id,
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
        """paho's loop (reconnects with its own backoff) until `stop` disconnects; a
        disconnect to change the will (`_rejoin`) connects again at once."""
        cfg = self.settings.mqtt
        while True:
            self.client.loop_forever(retry_first_connection=True)
            with self._lock:
                if self._stopping or not self._rejoining:
                    return
            self.client.connect_async(cfg.host, cfg.port, cfg.keepalive)

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
            connected = self._connected
        if connected:
            self._send_all(msgs, retain=True)

    def stats_fields(self) -> dict[str, object]:
        """The broker's part of every stats report (`StatsSource`): every output shows it.

        ``mqtt_conflict``: another edged owns this device's topics, so this one is silent.
        """
        return {
            "broker_connected": self._linked,
            "broker_reconnects": self.reconnects,
            "mqtt_dropped": self.dropped,
            "mqtt_conflict": self.claim.role is Role.TWIN,
            "mqtt_ignored_commands": self._limiter.total(INVALID_COMMAND),
        }

    def status_note(self) -> str | None:
        """A clash for systemd's STATUS= line (the daemon appends it), None when all is well."""
        rival = self.claim.rival
        if self.claim.role is not Role.TWIN or rival is None:
            return None
        return (
            f"MQTT silent: another edged ({rival.client}) uses device_id "
            f"{self.settings.mqtt.device_id} on this broker"
        )

    def on_stats(self, stats: dict[str, object]) -> None:
        self._limiter.flush()  # a periodic duty of the loop: due summaries of repeated lines
        self._publish_retained(self.topics.stats, stats_payload(stats, self._wall()))

    def stop(self) -> None:
        """Retained ``offline`` (waited for, briefly; only as the owner), then disconnect
        and end the thread."""
        with self._lock:
            self._stopping = True
            connected, self._connected = self._connected, False
            timers = list(self._timers.values())
        for timer in timers:
            timer.cancel()
        self._limiter.flush(force=True)
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

    # The daemon's thread calls paho only outside ``_lock``: paho's network thread holds
    # paho's own locks while it runs our callbacks, which take ``_lock``, so holding
    # ``_lock`` into paho could deadlock the two threads. `_on_connect` announces under
    # ``_lock``, after the newest values were stored: a value stored while disconnected
    # goes out with the announcement, one stored while connected goes out here.

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        """Remember as the newest value; send now if connected, else on reconnect."""
        with self._lock:
            self._latest[topic] = payload
            connected = self._connected
        if connected:
            self._send(topic, payload, self._qos, retain=True)

    def _publish_volatile(self, topic: str, payload: bytes, qos: int) -> None:
        """Now or never: not retained, not kept for later."""
        with self._lock:
            connected = self._connected
        if connected:
            self._send(topic, payload, qos, retain=False)
        else:
            self.dropped += 1

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Hand one message to paho; a refusal (its queue is full) is counted."""
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

    def _on_socket_open(self, _client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
        """TCP (and TLS) is up and CONNECT goes out now: expect a CONNACK soon."""
        with self._lock:
            self._session += 1
            session = self._session
        self._arm("connack", self._connack_warn, self._no_connack, session)

    def _no_connack(self, session: int) -> None:
        with self._lock:
            if self._stopping or self._linked or session != self._session:
                return
        cfg = self.settings.mqtt
        self._report(
            f"broker {cfg.host}:{cfg.port} accepted the connection but has not answered "
            f"MQTT CONNECT in {self._connack_warn:g} s (is it an MQTT broker? "
            f"TLS on that port needs mqtt.tls); still waiting",
            logging.WARNING,
        )

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: Any,
        _props: Any,
    ) -> None:
        self._cancel("connack")  # the broker answered, one way or the other
        if reason.is_failure:
            self._report(describe_connack(reason) + "; retrying with backoff")
            return
        dropped = client.drop_out_messages()  # unacknowledged leftovers: never replay them
        role = self.claim.role
        subs = [(self.topics.owner, 1), (self.topics.availability, 1)]
        if role is Role.OWNER:
            subs.append((self.topics.detect_set, 1))
            if self.discovery is not None:
                subs.append((self.settings.homeassistant.status_topic, 1))
        client.subscribe(subs)
        # On the network thread, so it may write: the subscriptions go out now, before
        # this daemon calls itself connected (publish and subscribe only queue since the
        # external-loop hook; a command sent right after "online" would otherwise race them).
        client.loop_write()
        with self._lock:
            self._linked = True
            rejoined, self._rejoining = self._rejoining, False
            session = self._session
            if role is not Role.TWIN:  # a claim, or the owner saying so after a reconnect
                client.publish(self.topics.owner, self.claim.message(), qos=1)
            if role is Role.OWNER:
                self._connected = True
                if self._ever_connected and not rejoined:
                    self.reconnects += 1
                self._announce()
        if role is Role.PROBING:
            self._arm("claim", self._claim_wait, self._claim_unanswered, session)
        self._log_connected(rejoined, len(dropped))
        self._ever_connected = True
        self._problem = None

    def _log_connected(self, rejoined: bool, discarded: int) -> None:
        cfg = self.settings.mqtt
        if rejoined:
            log.debug("MQTT: connected again as the %s", self.claim.role.value)
        elif self._ever_connected:
            log.info(
                "MQTT: reconnected to %s:%d (%d unsent message(s) discarded, %d dropped "
                "while away)",
                cfg.host,
                cfg.port,
                discarded,
                self.dropped,
            )
        else:
            log.info("MQTT: connected to %s:%d", cfg.host, cfg.port)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this from inside its `except OSError`: the error is still current.
        err = sys.exc_info()[1]
        cfg = self.settings.mqtt
        self._report(describe_oserror(err, cfg.host, cfg.port) + "; retrying with backoff")

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        with self._lock:
            was, self._connected, self._linked = self._connected, False, False
            quiet = self._rejoining or self._stopping
        if was and not quiet:
            log.warning(
                "MQTT: lost the broker (%s); keeping only the newest state until it is back",
                reason,
            )

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        if topic == self.topics.owner:
            self._on_claim(bytes(msg.payload))
        elif topic == self.topics.availability:
            self._on_availability(bytes(msg.payload))
        elif topic == self.topics.detect_set:
            self._on_detect_set(msg)
        elif msg.payload.strip().lower() == ONLINE.encode():
            log.info("Home Assistant is online: re-sending discovery")
            with self._lock:
                if self._connected:
                    self._announce()

    def _on_detect_set(self, msg: mqtt.MQTTMessage) -> None:
        """A live command goes to the daemon; a retained one or garbage is only logged."""
        if msg.retain:
            # Delivered because it was retained: someone's old command, not a request
            # made now. Never deleted either: it is not ours.
            self._limiter.log(
                logging.INFO,
                RETAINED_COMMAND,
                "ignored %d more retained detect/set messages",
                "MQTT: ignoring the retained %r on %s (left on the broker by some client): "
                "only live commands switch detection",
                bytes(msg.payload[:40]),
                msg.topic,
            )
            return
        on = parse_switch(bytes(msg.payload))
        if on is None:
            self._limiter.log(
                logging.WARNING,
                INVALID_COMMAND,
                "MQTT: ignored %d more invalid detect/set messages",
                "ignoring %s payload %r: send ON or OFF (more are counted, not logged)",
                msg.topic,
                bytes(msg.payload[:40]),
            )
            return
        if self._commands is not None:
            # The daemon decides; its answer comes back through on_detect (once).
            self._commands.set_detect(on, f"MQTT {msg.topic}")

    # -- the owner/twin handshake (see edged.mqtt.claim) -------------------------------

    def _on_claim(self, payload: bytes) -> None:
        peer = parse_peer(payload)
        if peer is None:
            return
        with self._lock:
            stopping = self._stopping
        if stopping:
            # Going offline: a twin that heard our "offline" and claims must not hear
            # "owner" from us in the moment before we disconnect, or it stays silent.
            return
        was = self.claim.role
        action = self.claim.hear(peer)
        if action is Action.ANSWER:
            if was is Role.OWNER and peer.role == "claim":
                log.warning(
                    "MQTT: another edged (client %s) with device_id %s started on this "
                    "broker; it stays silent, this one goes on publishing",
                    peer.client,
                    self.settings.mqtt.device_id,
                )
            self.client.publish(self.topics.owner, self.claim.message(), qos=1)
        elif action is Action.YIELD:
            self._become_twin(was)

    def _become_twin(self, was: Role) -> None:
        """Silent from now on; an owner also reconnects without its will (clean DISCONNECT)."""
        rival = self.claim.rival
        assert rival is not None
        log.error(
            "MQTT: another edged with device_id %s is running on this broker (client %s): "
            "set a unique device_id in /etc/edged/edged.toml ([mqtt] device_id); this one "
            "publishes nothing until the other stops",
            self.settings.mqtt.device_id,
            rival.client,
        )
        self._cancel("claim")
        if was is Role.OWNER:
            with self._lock:
                self._connected = False
                self._rejoining = True
            self.client.will_clear()
            self.client.disconnect()

    def _on_availability(self, payload: bytes) -> None:
        """A twin takes over when the owner says (or its will says) it is gone."""
        if self.claim.role is not Role.TWIN or payload.strip() != OFFLINE.encode():
            return
        log.info("MQTT: the other edged on %s/ went offline; asking to take over", self.topics.base)
        self.claim.probe()
        with self._lock:
            session = self._session
        self.client.publish(self.topics.owner, self.claim.message(), qos=1)
        self._arm("claim", self._claim_wait, self._claim_unanswered, session)

    def _claim_unanswered(self, session: int) -> None:
        """Nobody owns the topics: own them, with the availability will (a new CONNECT)."""
        with self._lock:
            if self._stopping or not self._linked or session != self._session:
                return
            if self.claim.role is not Role.PROBING:
                return
            self.claim.own()
            self._rejoining = True
        log.debug("MQTT: nobody else publishes under %s/: this daemon does", self.topics.base)
        self.client.will_set(self.topics.availability, OFFLINE, qos=max(self._qos, 1), retain=True)
        self.client.disconnect()

    def _arm(self, name: str, delay: float, action: Callable[[int], None], session: int) -> None:
        """Run ``action(session)`` in ``delay`` s unless re-armed or cancelled first."""

        def run() -> None:
            try:
                action(session)
            except Exception:  # a timer thread is not supervised: never let it die silently
                log.exception("MQTT: %s timer failed", name)

        timer = threading.Timer(delay, run)
        timer.daemon = True
        timer.name = f"edged-mqtt-{name}"
        with self._lock:
            if self._stopping:
                return
            old, self._timers[name] = self._timers.get(name), timer
        if old is not None:
            old.cancel()
        timer.start()

    def _cancel(self, name: str) -> None:
        with self._lock:
            timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _report(self, problem: str, level: int = logging.ERROR) -> None:
        """Log a connection problem once, not on every retry."""
        if problem != self._problem:
            self._problem = problem
            log.log(level, "MQTT: %s", problem)

    @property
    def network_alive(self) -> bool:
        """Whether paho's network loop is running (its thread is supervised)."""
        return self._network is not None and self._network.alive

    @property
    def problem(self) -> str | None:
        """The current connection problem, if any (for stats and tests)."""
        return self._problem


def _network_thread_writes(_client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
    """paho's hook for an outside event loop; ours is the network thread, already woken
    by paho when something is queued, so there is nothing to do here.

    Being set is what matters. paho writes a publish on the *caller's* thread whenever no
    loop thread of its own runs (and `_network_loop` runs `loop_forever` on our
    supervised thread instead of `loop_start`): the frame loop then wrote on the socket
    while the network thread read from it, which a TLS socket does not survive, and a
    failed write ran on_disconnect on the frame loop's thread, where it deadlocked with
    the network thread (CI, test_tls_broker_with_client_certificate). With the hook set,
    `publish` only queues, from any thread, and every byte goes out on the network thread.
    """
