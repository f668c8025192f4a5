"""The daemon: the fixed-rate frame loop, its outputs, signals, stats (``edged run``).

The loop runs on the main thread. Other threads only produce: the grabber (frames),
the model store (models) and paho's network loop (MQTT). Their news reaches the loop
through a deque that the loop drains once per tick, so every `Output` method is called
from the loop thread and outputs need no locks of their own.

Lifetime (uvicorn's ``server.py`` shape): start-up → loop → shutdown. Signal handlers
only set flags and wake the loop through a pipe; a second SIGINT/SIGTERM forces exit.
Periodic duties (watchdog ping, STATUS, stats) run from the loop, not from extra threads,
so a hung loop stops the watchdog pings and systemd restarts the service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from edged.daemon.ticker import Ticker
from edged.vision.pipeline import FrameResult, Pipeline
from edged.vision.tracker import TrackConfig

if TYPE_CHECKING:
    from edged.daemon.capture import FrameGrabber
    from edged.daemon.model_store import ModelStatus, ModelStore
    from edged.daemon.notify import Notifier
    from edged.settings import Settings

log = logging.getLogger(__name__)


class Controls:
    """Switches set from other threads, read by the loop once per tick."""

    def __init__(self) -> None:
        # Set = classify and publish expressions (the privacy switch; default on).
        # Clear = the loop does not even look for faces; outputs get None every tick.
        self.detect = threading.Event()
        self.detect.set()
        # Set = the loop asks the model store to reload (and clears it). SIGHUP does the
        # same through a plain flag: an Event is not safe to set from a signal handler.
        self.reload = threading.Event()


class Service:
    """Runs the loop: grab the newest frame, detect + classify, hand the result out."""

    def __init__(
        self,
        settings: Settings,
        outputs: list[Output],
        controls: Controls | None = None,
        *,
        grabber: FrameGrabber | None = None,
        store: ModelStore | None = None,
        pipeline: Pipeline | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        from edged.daemon.capture import FrameGrabber
        from edged.daemon.model_store import ModelStore
        from edged.daemon.notify import Notifier
        from edged.vision.detector import DetectorConfig, FaceDetector

        self.settings = settings
        self.outputs = outputs
        self.controls = controls or Controls()
        self._events: deque[tuple[str, Any]] = deque()  # appended by other threads
        self.grabber = grabber or FrameGrabber(settings.camera, on_state=self._camera_changed)
        m = settings.model
        self.store = store or ModelStore(
            m.path, m.labels, m.poll_interval, on_change=self._model_changed
        )
        d = settings.detector
        self.pipeline = pipeline or Pipeline(
            FaceDetector(DetectorConfig(d.scale_factor, d.min_neighbors, d.min_size, d.max_width)),
            max_faces=settings.loop.max_faces,
            track=TrackConfig() if d.track else None,  # video: scan near known faces (bench/)
        )
        self.notifier = notifier or Notifier()
        self._clock = clock
        self._wall = wall
        self._stop = Waker()
        self._hup = False
        self._signals = 0
        self.stop_reason = ""
        self.camera: tuple[bool, str] = (False, "starting")
        self._camera_reported = False
        self.model: ModelStatus | None = None
        self.stats: Stats | None = None
        self._ticker: Ticker | None = None
        self._last_stats: dict[str, object] | None = None
        self._errors_logged: set[tuple[int, str]] = set()
        self._pipeline_error_logged: str | bool | None = False
        self._on_frame = [(out, out.on_frame) for out in outputs]
        self._wait_budget = 0.5 / settings.loop.fps
        # Outputs that asked for the image (the opt-in MQTT snapshot); usually none.
        self._on_image = [(o, o.on_image) for o in outputs if getattr(o, "wants_images", False)]

    # -- called from other threads (and signal handlers) --------------------------------

    def _camera_changed(self, online: bool, reason: str) -> None:
        self._events.append(("camera", (online, reason)))

    def _model_changed(self, status: ModelStatus) -> None:
        self._events.append(("model", status))

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to finish its tick and shut down. Safe from any thread or handler."""
        if not self.stop_reason:
            self.stop_reason = reason
        self._stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._hup = True  # handled at the next tick
            return
        self._signals += 1
        if self._signals > 1:  # a second Ctrl-C: the user does not want to wait
            os.write(2, b"edged: forced exit\n")
            os._exit(128 + signum)
        self.request_stop(signal.Signals(signum).name)

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        old = {s: signal.signal(s, self._on_signal) for s in sigs}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # -- the loop -------------------------------------------------------------------------

    def _pipeline_failed(self) -> None:
        """A frame the pipeline could not process: counted, logged once per model."""
        assert self.stats is not None
        self.stats.pipeline_errors += 1
        model = self.store.current
        version = model.version if model is not None else None
        if self._pipeline_error_logged != version:
            self._pipeline_error_logged = version
            log.exception("frame processing failed (model %s); skipping such frames", version)

    def _output_failed(self, out: Output, method: str) -> None:
        """A broken output must not stop the others or the daemon: count it, log it once."""
        if self.stats is not None:
            self.stats.output_errors += 1
        key = (id(out), method)
        if key not in self._errors_logged:
            self._errors_logged.add(key)
            log.exception("output %s failed in %s", type(out).__name__, method)

    def _each_output(self, method: str, *args: object) -> None:
        for out in self.outputs:
            try:
                getattr(out, method)(*args)
            except Exception:
                self._output_failed(out, method)

    def _drain_events(self) -> bool:
        changed = False
        while self._events:
            kind, value = self._events.popleft()
            changed = True
            if kind == "camera":
                self.camera = value
                self._camera_reported = True
                self._each_output("on_camera", *value)
            else:
                self.model = value
                self._each_output("on_model", value)
        return changed

    def summary(self, with_fps: bool = True) -> str:
        """The one-line STATUS= text for systemctl status."""
        online, reason = self.camera
        if online:
            cam = "camera online"
        elif self._camera_reported:
            cam = f"camera offline ({reason})"
        else:
            cam = "camera starting"
        m = self.model
        if m is None or m.state == "no model":
            mod = "no model"
        elif m.state == "error" and m.version is None:
            mod = f"no usable model ({m.error})"
        else:
            mod = f"model {m.version}" + (f" ({m.error})" if m.error else "")
        if not self.controls.detect.is_set():
            mod += ", detection paused"
        fps = ""
        if with_fps and self._last_stats:
            fps = f", {self._last_stats['fps']} fps"
        return f"{cam}, {mod}{fps}"

    def _emit_stats(self, ticker: Ticker) -> None:
        assert self.stats is not None
        snap = self.stats.snapshot(self._clock(), ticker.skipped)
        online, reason = self.camera
        capture = self.grabber.stats
        snap["camera"] = {
            "online": online,
            "reason": reason,
            "dropped": capture.dropped,
            "reconnects": capture.reconnects,
        }
        m = self.model
        snap["model"] = {
            "state": m.state if m else "no model",
            "version": m.version if m else None,
            "error": m.error if m else None,
            "load_ms": round(m.load_ms, 1) if m and m.load_ms is not None else None,
        }
        self._last_stats = snap
        lat = snap["latency_ms"]
        assert isinstance(lat, dict)
        log.info(
            "stats: %s fps (target %g), latency p50 %s ms p95 %s ms, %d skipped ticks, "
            "cpu %s%%, rss %s MB; %s",
            snap["fps"],
            self.settings.loop.fps,
            lat["p50"],
            lat["p95"],
            ticker.skipped,
            snap["cpu_percent"],
            snap["rss_mb"],
            self.summary(with_fps=False),
        )
        self._each_output("on_stats", snap)

    def _tick(self, seq: int, detect: bool) -> int:
        """One slot's work; returns the seq of the newest frame seen."""
        stats = self.stats
        assert stats is not None
        t0 = self._clock()
        # The grabber decodes on demand: a frame may be a few ms away. Wait for it, but
        # never more than half a slot, so a slow camera cannot make the loop overrun.
        frame = self.grabber.latest(seq, self._wait_budget)
        result: FrameResult | None = None
        if frame is None:
            stats.idle_ticks += 1
        else:
            seq = frame.seq
            stats.wait.add((self._clock() - t0) * 1000.0)
            if detect:
                try:
                    result = self.pipeline.process(
                        frame.image, self.store.current, timestamp=frame.timestamp
                    )
                except Exception:  # never die of one frame; the model store vets models
                    self._pipeline_failed()
                else:
                    stats.frames += 1
                    stats.detect.add(result.detect_ms)
                    stats.classify.add(result.classify_ms)
        now = self._wall()
        for out, on_frame in self._on_frame:  # bound once, at start
            try:
                on_frame(result, now)
            except Exception:
                self._output_failed(out, "on_frame")
        if result is not None and frame is not None:
            for out, on_image in self._on_image:
                try:
                    on_image(frame.image, result, now)
                except Exception:
                    self._output_failed(out, "on_image")
        stats.ticks += 1
        if result is not None:  # per-frame latency: idle ticks would only flatter it
            stats.latency.add((self._clock() - t0) * 1000.0)
        return seq

    def run(self) -> int:
        """Start everything, loop until stopped, shut down; returns the exit status."""
        s = self.settings
        with self._signal_handlers():
            self.model = self.store.load_now()
            self._events.clear()  # load_now's own change report: sent below, once
            for out in self.outputs:
                out.start()
            self._each_output("on_model", self.model)
            self.store.start()
            self.grabber.start()
            try:
                self._loop(s.loop.fps, s.loop.stats_interval, s.loop.duration)
            finally:
                self._shutdown()
        log.info("stopped (%s)", self.stop_reason or "done")
        return 0

    def _loop(self, fps: float, stats_every: float, duration: float) -> None:
        start = self._clock()
        self.stats = Stats(fps, start)
        ticker = self._ticker = Ticker(fps, start)
        next_stats = start + stats_every
        end = start + duration if duration > 0 else float("inf")
        notifier = self.notifier
        seq = -1
        ready = False
        detecting = self.controls.detect.is_set()
        while True:
            now = self._clock()
            if now >= end:
                self.request_stop(f"ran for {duration:g} s")
                break
            wait = ticker.delay(now)
            if wait > 0:
                # Wake for the slot, a watchdog ping, the end of --duration, or a stop.
                if self._stop.wait(min(wait, notifier.until_ping(), end - now)):
                    break
                notifier.watchdog()
                continue
            if self._hup or self.controls.reload.is_set():
                self._hup = False
                self.controls.reload.clear()
                log.info("reloading the model on request")
                self.store.request_reload()
            changed = self._drain_events()
            if self.controls.detect.is_set() != detecting:
                detecting = not detecting
                changed = True
                log.info("detection %s", "resumed" if detecting else "paused (privacy switch)")
            seq = self._tick(seq, detecting)
            notifier.watchdog()
            if not ready:
                ready = True
                notifier.ready(self.summary())
                log.info("running at %g fps: %s", fps, self.summary())
            elif changed:
                notifier.status(self.summary())
            if self._clock() >= next_stats:
                self._emit_stats(ticker)
                notifier.status(self.summary())
                next_stats = self._clock() + stats_every
            if self.grabber.ended and self.grabber.latest(seq) is None:
                self.request_stop("the video file ended")
                break
            if self._stop.flag:
                break
            if ticker.done(self._clock()):
                log.debug("a tick overran its slot: %d slot(s) skipped so far", ticker.skipped)

    def _shutdown(self) -> None:
        """Stop grabbing, final stats, outputs offline. Quick: systemd gives us seconds."""
        self.notifier.stopping()
        self.grabber.stop(timeout=1.0)
        self.store.stop(timeout=0.5)
        self._drain_events()
        if self.stats is not None and self._ticker is not None:
            self._emit_stats(self._ticker)
        for out in self.outputs:
            try:
                out.stop()
            except Exception:
                log.exception("output %s failed to stop cleanly", type(out).__name__)
        self.notifier.close()
        self._stop.close()
