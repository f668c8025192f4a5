"""The daemon's fixed-rate frame loop (``edged run``).

The loop runs on the main thread and owns the daemon's state. Other threads only produce:
the grabber (frames), the model store (models), outputs (commands such as the privacy
switch). Their news reaches the loop through the `Inbox`, drained once per tick, so every
`Output` method is called from the loop thread and outputs need no locks of their own.

Lifetime (uvicorn's ``server.py`` shape): start-up → loop → shutdown. Signal handlers
only set flags and wake the loop through a pipe; a second SIGINT/SIGTERM forces exit.
Signals that came while edged was still importing (held by `edged.daemon.early`) are
honoured when the handlers are installed. Shutdown asks every part to stop at once, then
waits for them against one `Deadline`; what is stuck then is left behind (daemon threads)
and named in one warning, so SIGTERM → exit 0 within 2 s whatever hangs.
Periodic duties (watchdog ping, STATUS, stats) run from the loop, not from extra threads,
so a hung loop stops the watchdog pings and systemd restarts the service. The parts are
built by the composition root (`edged.commands.run`); ``Service.__init__`` only stores them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING

import numpy as np

from edged.daemon import early
from edged.daemon.inbox import CameraNews, DetectCommand, Inbox, ModelNews, ReloadCommand
from edged.daemon.outputs import ImageOutput, LiveOutput, StatsSource, StatusSource
from edged.daemon.stats import Mark, Stats
from edged.daemon.ticker import Ticker
from edged.daemon.workers import Deadline
from edged.redact import redact
from edged.vision.pipeline import FrameResult, Pipeline

if TYPE_CHECKING:
    from edged.daemon.capture import FrameGrabber
    from edged.daemon.expression import Expression
    from edged.daemon.model_store import ModelStore
    from edged.daemon.notify import Notifier
    from edged.daemon.outputs import ExpressionEvent, ExpressionReport, ModelStatus, Output
    from edged.settings import LoopSettings

log = logging.getLogger(__name__)

# Seconds from the stop request to the end of the shutdown: the README's 2 s from SIGTERM
# to exit, less what the interpreter's own exit takes.
SHUTDOWN_BUDGET = 1.5
# Each part still gets this long when the request is older than the budget (a SIGTERM
# held during slow imports): nothing had started, so its stop is quick.
SHUTDOWN_FLOOR = 0.2


def _redacted(status: ModelStatus) -> ModelStatus:
    """The model's error text as every output may show it (a path can hold anything)."""
    if not status.error:
        return status
    return dataclasses.replace(status, error=redact(status.error))


class Service:
    """Runs the loop: grab the newest frame, detect + classify, hand the result out."""

    def __init__(
        self,
        loop: LoopSettings,
        *,
        grabber: FrameGrabber,
        store: ModelStore,
        pipeline: Pipeline,
        outputs: Sequence[Output],
        notifier: Notifier,
        expression: Expression,
        inbox: Inbox,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.loop = loop
        self.grabber = grabber
        self.store = store
        self.pipeline = pipeline
        self.outputs = list(outputs)
        self.notifier = notifier
        self.expression = expression
        self.inbox = inbox
        self._clock = clock
        self._wall = wall
        self._signals = 0
        self.camera: tuple[bool, str] = (False, "starting")
        self._camera_reported = False
        self.model: ModelStatus | None = None
        self.stats: Stats | None = None
        self._ticker: Ticker | None = None
        self._errors_logged: set[tuple[int, str]] = set()
        self._pipeline_error_logged: str | bool | None = False
        self._on_frame: list[tuple[Output, Callable[[FrameResult | None, float], None]]] = []
        self._on_image: list[ImageOutput] = []
        self._live: list[LiveOutput] = []
        self._live_mark: Mark | None = None
        self._stats_sources: list[StatsSource] = []
        self._status_sources: list[StatusSource] = []
        self._notes: tuple[str, ...] = ()  # the outputs' STATUS= notes, sampled once a second
        self._wait_budget = 0.0
        self._ready = False  # READY=1 sent
        self._next_stats = 0.0

    # -- signals ------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._honour(signum, time.monotonic())

    def _honour(self, signum: int, at: float) -> None:
        """A signal that arrived at ``at`` (monotonic): SIGHUP reloads, others stop."""
        if signum == signal.SIGHUP:
            self.inbox.reload_model("SIGHUP")  # carried out at the next tick
            return
        self._signals += 1
        if self._signals > 1:  # a second Ctrl-C: the user does not want to wait
            os.write(2, b"edged: forced exit\n")
            os._exit(128 + signum)
        self.inbox.request_stop(signal.Signals(signum).name, at=at)

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        old = {s: signal.signal(s, self._on_signal) for s in sigs}
        for signum, at in early.take():  # arrived while starting: meant all the same
            self._honour(signum, at)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # -- outputs ------------------------------------------------------------------------

    def _output_failed(self, out: object, method: str) -> None:
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

    def _report(self, report: ExpressionReport | None, event: ExpressionEvent | None) -> None:
        if event is not None:
            log.info("expression: %s -> %s (%.0f%%)", event.from_, event.to, event.confidence * 100)
            self._each_output("on_event", event)
        if report is not None:
            self._each_output("on_state", report)

    # -- news from other threads ----------------------------------------------------------

    def _drain_inbox(self) -> bool:
        """Apply what other threads sent; True when something the STATUS line shows changed."""
        changed = False
        for news in self.inbox.drain():
            if isinstance(news, CameraNews):
                # Redacted once, here, for every output and the STATUS line.
                if news.online and not self.camera[0]:
                    self.pipeline.reset()  # a camera back (maybe another view): look afresh
                self.camera = (news.online, redact(news.reason))
                self._camera_reported = True
                self._each_output("on_camera", *self.camera)
            elif isinstance(news, ModelNews):
                status = _redacted(news.status)
                self.model = status
                self.expression.set_model(status.version)
                self._each_output("on_model", status)
            elif isinstance(news, DetectCommand):
                self._switch(news.on, news.source)
            elif isinstance(news, ReloadCommand):
                log.info("reloading the model on request (%s)", news.source)
                self.store.request_reload()
                continue
            changed = True
        return changed

    def _switch(self, on: bool, source: str) -> None:
        """The privacy switch: the daemon decides, then every output is told."""
        if on == self.expression.detect:
            return
        report, event = self.expression.switch(on, self._clock(), self._wall())
        if on:
            self.pipeline.reset()  # what was followed before the pause is not known now
        log.info("expression detection switched %s (%s)", "on" if on else "off", source)
        self._each_output("on_detect", on)
        self._report(report, event)

    # -- status and stats -----------------------------------------------------------------

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
        if not self.expression.detect:
            mod += ", detection paused"
        notes = "".join(f"; {note}" for note in self._notes)
        fps = ""
        rate = self.stats.recent.value if self.stats is not None else None
        if with_fps and rate is not None:  # frames per second over the last few seconds
            fps = f", {rate:.1f} fps"
        return f"{cam}, {mod}{notes}{fps}"

    def _stats_dict(self, ticker: Ticker, mark: Mark | None = None) -> dict[str, object]:
        """The stats every output gets: the loop's, the camera's, the model's (their texts
        redacted as they arrived), and what outputs add of their own (`StatsSource`)."""
        assert self.stats is not None
        snap = self.stats.snapshot(self._clock(), ticker.skipped, mark)
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
            "reloads": m.reloads if m else 0,
            "failures": m.failures if m else 0,
            "enrolled_people": m.enrolled_people if m else 0,
        }
        snap["detect"] = self.expression.detect
        snap.update(self.pipeline.scan_stats())
        for source in self._stats_sources:
            try:
                snap.update(source.stats_fields())
            except Exception:
                self._output_failed(source, "stats_fields")
        return snap

    def _emit_stats(self, ticker: Ticker) -> None:
        snap = self._stats_dict(ticker)
        lat = snap["latency_ms"]
        assert isinstance(lat, dict)
        log.info(
            "stats: %s fps (target %g), latency p50 %s ms p95 %s ms, %d skipped ticks, "
            "cpu %s%%, rss %s MB; %s",
            snap["fps"],
            self.loop.fps,
            lat["p50"],
            lat["p95"],
            ticker.skipped,
            snap["cpu_percent"],
            snap["rss_mb"],
            self.summary(with_fps=False),
        )
        self._each_output("on_stats", snap)

    def _emit_live_stats(self, ticker: Ticker) -> None:
        """About once a second, for outputs that show stats live (the web page)."""
        if not self._live or self._live_mark is None:
            return
        snap = self._stats_dict(ticker, self._live_mark)
        for out in self._live:
            try:
                out.on_live_stats(snap)
            except Exception:
                self._output_failed(out, "on_live_stats")

    # -- one tick -------------------------------------------------------------------------

    def _pipeline_failed(self) -> None:
        """A frame the pipeline could not process: counted, logged once per model."""
        assert self.stats is not None
        self.stats.pipeline_errors += 1
        model = self.store.current
        version = model.version if model is not None else None
        if self._pipeline_error_logged != version:
            self._pipeline_error_logged = version
            log.exception("frame processing failed (model %s); skipping such frames", version)

    def _process(self, image: np.ndarray, timestamp: float) -> FrameResult | None:
        stats = self.stats
        assert stats is not None
        try:
            result = self.pipeline.process(image, self.store.current, timestamp=timestamp)
        except Exception:  # never die of one frame; the model store vets models
            self._pipeline_failed()
            return None
        stats.frames += 1
        stats.detect.add(result.detect_ms)
        stats.classify.add(result.classify_ms)
        return result

    def _deliver(self, result: FrameResult | None, image: np.ndarray | None) -> None:
        """Hand one tick's result to every output, and the image to those that asked."""
        now = self._wall()
        for out, on_frame in self._on_frame:  # bound once, at start
            try:
                on_frame(result, now)
            except Exception:
                self._output_failed(out, "on_frame")
        if result is not None and image is not None:
            for img_out in self._on_image:
                try:
                    img_out.on_image(image, result, now)
                except Exception:
                    self._output_failed(img_out, "on_image")
        self._report(*self.expression.update(result, self._clock(), now))

    def _tick(self, seq: int) -> int:
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
            if self.expression.detect:
                result = self._process(frame.image, frame.timestamp)
        self._deliver(result, frame.image if frame is not None else None)
        stats.ticks += 1
        if result is not None:  # per-frame latency: idle ticks would only flatter it
            stats.latency.add((self._clock() - t0) * 1000.0)
        return seq

    # -- lifetime -------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, loop until stopped, shut down; returns the exit status."""
        with self._signal_handlers():
            try:
                if self._start():
                    self._loop()
            finally:
                self._shutdown()
        log.info("stopped (%s)", self.inbox.stop_reason or "done")
        return int(self.inbox.exit_status)

    def _start(self) -> bool:
        """Load the model, start outputs and workers; False (nothing more started) when a
        stop was requested meanwhile: a SIGTERM while starting never goes online."""
        self._on_frame = [(out, out.on_frame) for out in self.outputs]
        self._on_image = [o for o in self.outputs if isinstance(o, ImageOutput) and o.wants_images]
        self._live = [o for o in self.outputs if isinstance(o, LiveOutput)]
        self._stats_sources = [o for o in self.outputs if isinstance(o, StatsSource)]
        self._status_sources = [o for o in self.outputs if isinstance(o, StatusSource)]
        self._wait_budget = 0.5 / self.loop.fps
        if self.inbox.stopping:
            return False
        self.model = _redacted(self.store.load_now())
        self.inbox.drop_model_news()  # load_now's own report: sent below, once
        self.expression.set_model(self.model.version)
        if self.inbox.stopping:  # came during the load
            return False
        for out in self.outputs:
            try:
                out.start(self.inbox)
            except Exception:
                self._output_failed(out, "start")
        self._each_output("on_model", self.model)
        self._each_output("on_detect", self.expression.detect)
        self._each_output("on_state", self.expression.current(self._clock(), self._wall()))
        self.store.start()
        self.grabber.start()
        return True

    def _loop(self) -> None:
        fps, duration = self.loop.fps, self.loop.duration
        start = self._clock()
        self.stats = Stats(fps, start)
        self._live_mark = Mark(start)
        ticker = self._ticker = Ticker(fps, start)
        self._next_stats = start + self.loop.stats_interval
        end = start + duration if duration > 0 else float("inf")
        notifier = self.notifier
        seq = -1
        while True:
            now = self._clock()
            if now >= end:
                self.inbox.request_stop(f"ran for {duration:g} s")
                break
            wait = ticker.delay(now)
            if wait > 0:
                # Wake for the slot, a watchdog ping, the end of --duration, or a stop.
                if self.inbox.wait(min(wait, notifier.until_ping(), end - now)):
                    break
                notifier.watchdog()
                continue
            changed = self._drain_inbox()
            seq = self._tick(seq)
            self._after_tick(ticker, changed)
            if self.grabber.ended and self.grabber.latest(seq) is None:
                self.inbox.request_stop("the video file ended")
                break
            if self.inbox.stopping:
                break
            if ticker.done(self._clock()):
                log.debug("a tick overran its slot: %d slot(s) skipped so far", ticker.skipped)

    def _after_tick(self, ticker: Ticker, changed: bool) -> None:
        """The loop's periodic duties: watchdog, READY once, STATUS on change, stats.

        STATUS is sent when the camera, model or switch changed, and when the frame rate
        (sampled once a second, one decimal) did: at most once a second in a steady state.
        """
        notifier = self.notifier
        notifier.watchdog()
        stats = self.stats
        assert stats is not None
        now = self._clock()
        if stats.recent.due(now):
            changed = stats.recent.sample(now, stats.frames) or changed
            changed = self._sample_notes() or changed
            self._emit_live_stats(ticker)
        if not self._ready:
            self._ready = True
            notifier.ready(self.summary())
            log.info("running at %g fps: %s", self.loop.fps, self.summary())
        elif changed:
            notifier.status(self.summary())
        if now >= self._next_stats:
            self._emit_stats(ticker)
            self._next_stats = self._clock() + self.loop.stats_interval

    def _sample_notes(self) -> bool:
        """The outputs' STATUS= notes now; True when they changed."""
        notes = tuple(n for n in (o.status_note() for o in self._status_sources) if n)
        changed, self._notes = notes != self._notes, notes
        return changed

    def _shutdown(self) -> None:
        """Stop grabbing, final stats, outputs offline; exit on time whatever is stuck.

        Every part is asked first (outputs stop in parallel, each on a helper thread, so
        one that ignores time, such as a publisher waiting on a frozen broker, holds up
        nobody), then all are waited for against one deadline: `SHUTDOWN_BUDGET` from the
        stop request. What is still running then is left to end with the process (daemon
        threads) and named in one warning.
        """
        now = time.monotonic()
        asked = self.inbox.stop_at if self.inbox.stop_at is not None else now
        deadline = Deadline(max(asked + SHUTDOWN_BUDGET, now + SHUTDOWN_FLOOR))
        self.notifier.stopping()
        self.grabber.request_stop()
        self.store.request_stop()
        self._drain_inbox()
        if self.stats is not None and self._ticker is not None:
            self._emit_stats(self._ticker)
        stopping = [(out, _stop_on_a_thread(out)) for out in self.outputs]
        late = []
        if not self.grabber.join(deadline.remaining()):
            late.append("camera grabber (a read blocked in the driver)")
        if not self.store.join(deadline.remaining()):
            late.append("model loader (a load under way)")
        for out, thread in stopping:
            thread.join(deadline.remaining())
            if thread.is_alive():
                late.append(f"output {type(out).__name__}")
        if late:
            log.warning(
                "did not stop in time (%g s after the stop request), left to end with the "
                "process: %s",
                SHUTDOWN_BUDGET,
                "; ".join(late),
            )
        self.notifier.close()
        self.inbox.close()


def _stop_on_a_thread(out: Output) -> threading.Thread:
    """``out.stop()`` on a daemon thread of its own, started now: the caller waits for it
    only as long as the shutdown's deadline allows."""

    def stop() -> None:
        try:
            out.stop()
        except Exception:
            log.exception("output %s failed to stop cleanly", type(out).__name__)

    name = f"edged-stop-{type(out).__name__}"
    thread = threading.Thread(target=stop, name=name, daemon=True)
    thread.start()
    return thread
