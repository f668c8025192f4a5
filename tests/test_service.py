"""The daemon: ``edged run`` as a real subprocess on real video files, plus its loop parts.

Every subprocess test reads the daemon's JSON lines on stdout (``--stdout``) as they
come, through a reader thread, with generous liveness deadlines (never speed checks).
"""

from __future__ import annotations

import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
from conftest import CLASSES, Segment, sample_images, scene, train_sample_model

from edged.commands.run import build_service
from edged.daemon.inbox import Inbox
from edged.daemon.outputs import ExpressionEvent, ExpressionReport, JsonLinesOutput
from edged.daemon.stats import Ring
from edged.daemon.waker import Waker
from edged.settings import DetectorSettings, Settings, load_settings
from edged.vision.detector import Box, DetectorConfig, FaceDetector
from edged.vision.model_file import load_model
from edged.vision.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
LIVENESS = 20.0  # seconds: a generous deadline, not a speed assertion


class Daemon:
    """``python -m edged run ...`` with its stdout JSON lines collected as they arrive."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("EDGED_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")
        }
        full_env["EDGED_HTTP__PORT"] = "0"  # the page on a free port of its own
        full_env.update(env or {})
        self.stderr_path = tmp_path / f"stderr-{time.monotonic_ns()}.log"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--stdout", "--no-mqtt", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=tmp_path,
            env=full_env,
        )
        self.records: list[dict[str, Any]] = []
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(json.loads(line))
        self._q.put(None)

    def expect(self, pred: Callable[[dict[str, Any]], bool], timeout: float = LIVENESS) -> dict:
        """The next record matching ``pred`` (earlier ones are kept in ``records``)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching record within {timeout} s\n{self.stderr()}")
            try:
                rec = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if rec is None:
                raise AssertionError(f"daemon ended (exit {self.proc.wait()})\n{self.stderr()}")
            self.records.append(rec)
            if pred(rec):
                return rec

    def rest(self) -> list[dict[str, Any]]:
        """Every record until the daemon's stdout closes."""
        out = []
        while (rec := self._q.get(timeout=LIVENESS)) is not None:
            self.records.append(rec)
            out.append(rec)
        return out

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(tmp_path, *args, env=env)
        made.append(d)
        return d

    yield start
    for d in made:
        d.close()


def frame(kind: str = "frame") -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["type"] == kind


def top(rec: dict[str, Any]) -> str | None:
    return rec["faces"][0]["expression"] if rec["faces"] else "(no face)"


def collapse(values: list[Any]) -> list[Any]:
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def pipeline() -> Pipeline:
    d = DetectorSettings()
    return Pipeline(
        FaceDetector(DetectorConfig(d.scale_factor, d.min_neighbors, d.min_size, d.max_width))
    )


def replace_atomically(target: Path, data: bytes) -> None:
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


# -- the product: a clip of known faces through `edged run` -----------------------------


def clearly_recognised(model, want: int = 2) -> list[tuple[Path, str]]:
    """Sample photos whose expression the model gives unambiguously: the same answer for
    the face box nudged a few pixels or percent either way (the daemon's tracker finds
    slightly different boxes from frame to frame), each with a different expression."""
    p = pipeline()
    nudges = [(0, 0, 0), (-6, 0, 0), (6, 0, 0), (0, -6, 0), (0, 6, 0), (-8, -8, 16), (8, 8, -16)]
    found: list[tuple[Path, str]] = []
    for cls in CLASSES:
        for photo in sample_images(cls):
            _, jpg = cv2.imencode(".jpg", scene(photo))  # the clip's frames are JPEGs
            frame = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
            faces = p.process(frame, None).faces
            if len(faces) != 1:
                continue
            b, gray = faces[0].box, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            said = {
                model.predict(gray, Box(b.x + dx, b.y + dy, b.w + dw, b.h + dw)).expression
                for dx, dy, dw in nudges
            }
            if len(said) == 1 and (e := said.pop()) not in {x for _, x in found}:
                found.append((photo, e))
                break
        if len(found) == want:
            return found
    pytest.fail(f"the sample model recognises fewer than {want} sample faces unambiguously")


@pytest.mark.slow
def test_a_face_clip_gives_the_expected_expressions_at_the_configured_rate(
    daemon, face_video, sample_model, tmp_path
):
    model = load_model(sample_model)
    (first, e1), (second, e2) = clearly_recognised(model)
    segments = [Segment(first, 2.0), Segment(None, 1.5), Segment(second, 2.0)]
    clip, _ = face_video(segments)
    expected = [e1, "(no face)", e2]

    d = daemon("--source", str(clip), "--model", str(sample_model), "--fps", "5")
    records = d.rest()  # a file that ends stops the daemon by itself
    assert d.proc.wait(timeout=LIVENESS) == 0, d.stderr()
    frames = [r for r in records if r["type"] == "frame"]
    assert collapse([top(r) for r in frames]) == expected
    assert {r["model_version"] for r in frames} == {model.version}
    # 5.5 s of clip at 5 fps: never more than the rate allows, and most slots served.
    assert 0.5 * 27 <= len(frames) <= 27 + 2
    stats = [r for r in records if r["type"] == "stats"][-1]
    assert stats["target_fps"] == 5.0
    assert stats["frames"] == len(frames)
    assert {"p50", "p95"} <= stats["latency_ms"].keys()
    for key in ("fps", "skipped_ticks", "cpu_percent", "rss_mb", "uptime_s", "camera", "model"):
        assert key in stats
    assert stats["model"]["version"] == model.version
    kinds = [r["type"] for r in records]
    assert kinds.index("model") < kinds.index("frame")  # the model is announced first
    assert "end of" in d.stderr()


# -- model reloads ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[bytes, bytes]:
    """Two different valid model files (as bytes) trained on the sample."""
    base = tmp_path_factory.mktemp("models")
    train_sample_model(base / "a.yml", CLASSES, per_class=6)
    train_sample_model(base / "b.yml", CLASSES, per_class=10)
    return (base / "a.yml").read_bytes(), (base / "b.yml").read_bytes()


RELOAD_ENV = {"EDGED_MODEL__POLL_INTERVAL": "0.1"}


def version_of(data: bytes, tmp_path: Path) -> str:
    p = tmp_path / "probe.yml"
    p.write_bytes(data)
    return load_model(p).version


@pytest.mark.slow
def test_a_model_replaced_atomically_mid_run_is_used_from_the_next_frames(
    daemon, face_video, two_models, tmp_path
):
    a, b = two_models
    va, vb = version_of(a, tmp_path), version_of(b, tmp_path)
    model = tmp_path / "trainer.yml"
    model.write_bytes(a)
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    d = daemon(
        "--source", str(clip), "--loop", "--model", str(model), "--fps", "10", env=RELOAD_ENV
    )
    d.expect(lambda r: r["type"] == "frame" and r["model_version"] == va)
    replace_atomically(model, b)
    rec = d.expect(lambda r: r["type"] == "model" and r["version"] == vb)
    assert rec["state"] == "loaded" and rec["reloads"] == 1
    d.expect(lambda r: r["type"] == "frame" and r["model_version"] == vb)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=LIVENESS) == 0


@pytest.mark.slow
def test_garbage_half_a_file_or_deletion_keeps_the_old_model_and_says_why(
    daemon, face_video, two_models, tmp_path
):
    a, _ = two_models
    va = version_of(a, tmp_path)
    model = tmp_path / "trainer.yml"
    model.write_bytes(a)
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    d = daemon(
        "--source", str(clip), "--loop", "--model", str(model), "--fps", "10", env=RELOAD_ENV
    )
    d.expect(lambda r: r["type"] == "frame" and r["model_version"] == va)

    def bad(r: dict) -> bool:
        return r["type"] == "model" and r["error"] is not None and r["failures"] > failures

    failures = 0
    for damage in (b"this is not a model\n" * 10, a[: len(a) // 2], None):
        if damage is None:
            model.unlink()
        else:
            replace_atomically(model, damage)
        rec = d.expect(bad)
        failures = rec["failures"]
        assert rec["version"] == va, "the old model must be kept"
        assert str(model) in rec["error"]
        assert f"keeping model {va}" in rec["error"]
        # Frames keep being classified by the old model.
        nxt = d.expect(frame())
        assert nxt["model_version"] == va and nxt["faces"][0]["expression"] is not None
    assert "deleted" in rec["error"]
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=LIVENESS) == 0


@pytest.mark.slow
def test_starting_without_a_model_runs_and_classifies_once_one_appears(
    daemon, face_video, two_models, tmp_path
):
    a, _ = two_models
    model = tmp_path / "trainer.yml"
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    d = daemon(
        "--source", str(clip), "--loop", "--model", str(model), "--fps", "10", env=RELOAD_ENV
    )
    rec = d.expect(frame("model"))
    assert rec["state"] == "no model" and rec["version"] is None
    f = d.expect(lambda r: r["type"] == "frame" and r["faces"])
    assert f["faces"][0]["expression"] is None and f["model_version"] is None  # detected only
    replace_atomically(model, a)
    f = d.expect(lambda r: r["type"] == "frame" and r["model_version"] is not None)
    assert f["faces"][0]["expression"] in CLASSES
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=LIVENESS) == 0


@pytest.mark.slow
def test_sighup_reloads_the_model_file(daemon, face_video, sample_model):
    clip, _ = face_video([Segment(None, 1.0)])
    d = daemon("--source", str(clip), "--loop", "--model", str(sample_model), "--fps", "10")
    d.expect(frame())
    d.proc.send_signal(signal.SIGHUP)
    rec = d.expect(lambda r: r["type"] == "model" and r["reloads"] == 1)
    assert rec["state"] == "loaded"
    d.expect(frame())  # still running
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=LIVENESS) == 0


# -- the camera: retried, never fatal ---------------------------------------------------


CAMERA_RETRY = {"EDGED_CAMERA__RETRY_INITIAL": "0.1", "EDGED_CAMERA__RETRY_MAX": "0.3"}


@pytest.mark.slow
def test_a_missing_source_is_retried_and_frames_flow_once_it_appears(
    daemon, face_video, sample_model, tmp_path
):
    target = tmp_path / "later.avi"
    d = daemon(
        "--source", str(target), "--loop", "--model", str(sample_model), env=CAMERA_RETRY
    )  # fmt: skip
    rec = d.expect(frame("camera"))
    assert rec["online"] is False and str(target) in rec["reason"]
    time.sleep(1.0)  # several retries: the daemon must still be there
    assert d.proc.poll() is None
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    os.replace(clip, target)
    assert d.expect(frame("camera"))["online"] is True
    assert d.expect(lambda r: r["type"] == "frame" and r["faces"])["faces"][0]["expression"]
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=LIVENESS) == 0


@pytest.mark.slow
def test_a_stream_that_stops_delivering_is_retried_and_recovers(
    daemon, face_video, sample_model, http_dir
):
    folder, base = http_dir
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    shutil.copy(clip, folder / "cam.avi")
    d = daemon("--source", f"{base}/cam.avi", "--model", str(sample_model), env=CAMERA_RETRY)
    assert d.expect(frame("camera"))["online"] is True
    d.expect(lambda r: r["type"] == "frame" and r["faces"])
    (folder / "cam.avi").unlink()  # the stream ends and cannot be reopened: the camera is gone
    # Offline once the stream ends ("stopped delivering"), then "cannot open" on retries.
    d.expect(lambda r: r["type"] == "camera" and "cannot open" in r["reason"])
    time.sleep(0.5)
    assert d.proc.poll() is None, "the daemon must survive a lost camera"
    shutil.copy(clip, folder / "cam.avi")  # back again
    assert d.expect(frame("camera"))["online"] is True
    d.expect(lambda r: r["type"] == "frame" and r["faces"])
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=LIVENESS) == 0


# -- systemd and shutdown ---------------------------------------------------------------


@pytest.mark.slow
def test_notify_socket_gets_ready_status_watchdog_pings_and_stopping(
    daemon, face_video, sample_model, tmp_path
):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(LIVENESS)
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}  # ping every 0.2 s
    d = daemon(
        "--source", str(clip), "--loop", "--model", str(sample_model), "--fps", "2",
        "--duration", "2.5", env=env,
    )  # fmt: skip
    messages: list[str] = []
    try:
        while not any(m.startswith("STOPPING=1") for m in messages):
            messages.append(sock.recv(4096).decode())
    finally:
        sock.close()
    assert d.proc.wait(timeout=LIVENESS) == 0
    ready = [m for m in messages if m.startswith("READY=1")]
    assert len(ready) == 1
    assert "STATUS=camera " in ready[0] and "model " in ready[0]
    statuses = [m for m in messages if "STATUS=camera online" in m]
    assert statuses, messages  # the one-line summary follows the camera's state
    pings = messages.count("WATCHDOG=1")
    # 2.5 s at one ping per 0.2 s is ~12; at 2 fps the loop wakes for pings between frames.
    assert pings >= 5, messages
    assert messages.index(ready[0]) < len(messages) - 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_stops_cleanly_with_exit_0_within_2_seconds(
    daemon, face_video, sample_model, sig
):
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    d = daemon("--source", str(clip), "--loop", "--model", str(sample_model), "--fps", "10")
    d.expect(frame())
    t0 = time.monotonic()
    d.proc.send_signal(sig)
    rest = d.rest()
    assert d.proc.wait(timeout=2.0) == 0
    assert time.monotonic() - t0 < 2.0
    assert rest and rest[-1]["type"] == "stats"  # final stats, flushed before exit
    assert f"stopped ({signal.Signals(sig).name})" in d.stderr()


def test_bad_configuration_exits_78_naming_the_field_value_and_reason(daemon, tmp_path):
    cfg = tmp_path / "edged.toml"
    cfg.write_text("[loop]\nfps = 0\n[camera]\nbogus = 1\n")
    d = daemon("--config", str(cfg))
    assert d.proc.wait(timeout=LIVENESS) == 78
    err = d.stderr()
    assert f"loop.fps = 0 ({cfg}): Input should be greater than or equal to 0.01" in err
    assert f"camera.bogus ({cfg}): unknown setting" in err
    d = daemon("--source", "x.avi", env={"EDGED_CAMERA__WIDTH": "wide"})
    assert d.proc.wait(timeout=LIVENESS) == 78
    assert "camera.width = 'wide' (environment EDGED_CAMERA__WIDTH): " in d.stderr()


def test_a_bad_flag_value_is_a_usage_error(daemon):
    d = daemon("--fps", "-2")
    assert d.proc.wait(timeout=LIVENESS) == 2
    assert "must be more than 0" in d.stderr()


# -- the loop in-process: outputs, privacy switch ---------------------------------------


class Recorder:
    """An Output that records what it is given (and can send the daemon commands)."""

    def __init__(self, on_frame: Callable[[Recorder, Any], None] | None = None) -> None:
        self.frames: list[Any] = []
        self.cameras: list[tuple[bool, str]] = []
        self.models: list[Any] = []
        self.stats: list[dict] = []
        self.states: list[Any] = []
        self.events: list[Any] = []
        self.detect: list[bool] = []
        self.started = self.stopped = False
        self.commands: Any = None
        self._hook = on_frame

    def start(self, commands) -> None:
        self.started = True
        self.commands = commands

    def on_state(self, report) -> None:
        self.states.append(report)

    def on_event(self, event) -> None:
        self.events.append(event)

    def on_detect(self, on) -> None:
        self.detect.append(on)

    def on_frame(self, result, now) -> None:
        self.frames.append(result)
        if self._hook:
            self._hook(self, result)

    def on_camera(self, online, reason) -> None:
        self.cameras.append((online, reason))

    def on_model(self, status) -> None:
        self.models.append(status)

    def on_stats(self, stats) -> None:
        self.stats.append(stats)

    def stop(self) -> None:
        self.stopped = True


class Broken(Recorder):
    def on_frame(self, result, now) -> None:
        raise RuntimeError("output bug")


def looping_clip_settings(clip: Path, model: Path, fps: float, duration: float) -> Settings:
    """Settings for an in-process daemon on a looping clip, no MQTT, stopping by itself."""
    return load_settings(
        None,
        {
            "camera": {"source": str(clip), "loop": True},
            "model": {"path": str(model)},
            "loop": {"fps": fps, "duration": duration},
            "mqtt": {"enabled": False},
        },
    )


@pytest.mark.slow
def test_clearing_the_detect_switch_stops_face_processing_and_a_broken_output_harms_nobody(
    face_video, sample_model, clean_env
):
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    settings = looping_clip_settings(clip, sample_model, fps=20, duration=1.5)

    def pause_after_five(rec: Recorder, result) -> None:
        if sum(r is not None for r in rec.frames) == 5 and rec.detect[-1]:
            rec.commands.set_detect(False, "test")

    rec = Recorder(pause_after_five)
    broken = Broken()
    svc = build_service(settings, [broken, rec])
    assert svc.run() == 0
    assert rec.started and rec.stopped and broken.stopped
    seen = [r is not None for r in rec.frames]
    assert sum(seen) == 5, "no results once the switch is off"
    after = len(seen) - 1 - seen[::-1].index(True)
    assert len(rec.frames) - after >= 5  # the loop kept ticking: None for every later tick
    assert rec.models[0].state == "loaded"
    assert rec.cameras[0][0] is True
    assert rec.stats[-1]["output_errors"] == len(rec.frames)
    assert "detection paused" in svc.summary()
    assert rec.detect == [True, False]  # told once at start, once at the switch
    assert rec.states[-1].expression == "none" and rec.states[-1].detect is False


@pytest.mark.slow
def test_switching_detection_back_on_searches_the_whole_frame_afresh(
    face_video, sample_model, clean_env
):
    """Faces followed before a pause are not known after it: the first frame after the
    switch goes back on gets a full scan (with the motion gate, a still scene would
    otherwise get none until the next interval)."""
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    settings = looping_clip_settings(clip, sample_model, fps=20, duration=2.0)
    ticks = {"off": 0}

    def pause_then_resume(rec: Recorder, result) -> None:
        if sum(r is not None for r in rec.frames) == 5 and rec.detect[-1]:
            rec.commands.set_detect(False, "test")
        elif not rec.detect[-1]:
            ticks["off"] += 1
            if ticks["off"] == 5:
                rec.commands.set_detect(True, "test")

    rec = Recorder(pause_then_resume)
    svc = build_service(settings, [rec])
    assert svc.run() == 0
    assert rec.detect == [True, False, True]
    assert svc.pipeline.tracker is not None and svc.pipeline.tracker.gate is not None
    assert rec.stats[-1]["full_scans"] == 2  # the first frame, and the first after the pause
    last = [r for r in rec.frames if r is not None][-1]
    assert len(last.faces) == 1


@pytest.mark.slow
def test_the_daemon_owns_the_expression_so_json_lines_alone_get_state_and_events(
    face_video, sample_model, clean_env
):
    """No MQTT: the debounced state and its change events still reach every output."""
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.5), Segment(None, 1.0)])
    settings = load_settings(
        None,
        {
            "camera": {"source": str(clip)},
            "model": {"path": str(sample_model)},
            "loop": {"fps": 10},
            "mqtt": {"enabled": False},
            "publish": {"clear_after": 0.5},
        },
    )
    rec = Recorder()
    assert build_service(settings, [rec]).run() == 0
    assert rec.states[0].expression == "none"  # stated once at start
    tos = [e.to for e in rec.events]
    assert tos and tos[-1] == "none", "the face left: the state cleared"
    assert any(t != "none" for t in tos), "the face's expression was reported"
    for e in rec.events:
        assert e.from_ != e.to


# -- small parts ------------------------------------------------------------------------


def test_the_latency_ring_keeps_only_the_last_samples():
    r = Ring(4)
    assert r.percentiles(50) == [None]
    for v in (100, 100, 100, 100, 1, 2, 3, 4):
        r.add(v)
    assert r.percentiles(0, 100) == [1.0, 4.0]  # the old 100s were overwritten
    assert r.count == 8


def test_the_status_frame_rate_is_sampled_once_a_second_over_the_last_five():
    from edged.daemon.stats import FrameRate

    rate = FrameRate(100.0)
    frames, tick, samples = 0, 0, []

    def run(seconds: int, per_tick: int) -> None:
        nonlocal frames, tick
        for _ in range(seconds * 8):  # 8 ticks a second (exact in binary: no rounding)
            tick += 1
            now = 100.0 + tick / 8
            frames += per_tick
            if rate.due(now):
                samples.append((now, rate.sample(now, frames), rate.value))

    assert rate.value is None and not rate.due(100.875)
    run(3, 1)  # 8 fps
    assert samples[0] == (101.0, True, 8.0)  # after the first second
    assert [s[0] for s in samples] == [101.0, 102.0, 103.0]  # once a second
    assert [s[1] for s in samples[1:]] == [False, False]  # unchanged: no new STATUS
    run(8, 0)  # the camera stops: the rate falls over the window, to 0 after five seconds
    values = [s[2] for s in samples[3:]]
    assert values == [6.0, 4.8, 3.2, 1.6, 0.0, 0.0, 0.0, 0.0]  # 24 frames/4 s, /5 s, ...
    assert [s[1] for s in samples[3:]] == [True] * 5 + [False] * 3


def test_the_waker_returns_at_once_when_set_and_sleeps_otherwise():
    w = Waker()
    try:
        assert w.wait(0.01) is False
        threading.Timer(0.05, w.set).start()
        t0 = time.monotonic()
        assert w.wait(LIVENESS) is True
        assert time.monotonic() - t0 < LIVENESS / 2
    finally:
        w.close()


def test_json_lines_output_writes_one_parseable_record_per_event():
    from edged.daemon.outputs import ModelStatus
    from edged.vision.detector import Box
    from edged.vision.pipeline import FaceResult, FrameResult

    buf = io.StringIO()
    out = JsonLinesOutput(buf)
    out.on_frame(None, 1.0)  # no frame this tick: nothing written
    out.on_frame(
        FrameResult([FaceResult(Box(1, 2, 3, 4), "happy", 0.87654, 12.345)], "v1", 1.5, 0.5, 9.0),
        10.0,
    )
    out.on_camera(False, "gone")
    out.on_model(ModelStatus("loaded", version="v1", load_ms=12.3456))
    out.on_stats({"fps": 5.0})
    out.on_state(ExpressionReport("happy", 0.91234, 40.0, 1, 100.0, 101.25, "v1", True))
    out.on_event(ExpressionEvent("none", "happy", 0.91234, 101.25))
    out.on_detect(False)
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert lines[0] == {
        "type": "frame",
        "time": 9.0,
        "model_version": "v1",
        "faces": [
            {"expression": "happy", "confidence": 0.8765, "distance": 12.35, "box": [1, 2, 3, 4]}
        ],
        "detect_ms": 1.5,
        "classify_ms": 0.5,
    }
    assert lines[1] == {"type": "camera", "online": False, "reason": "gone"}
    assert lines[2]["type"] == "model" and lines[2]["load_ms"] == 12.3
    assert lines[3] == {"type": "stats", "fps": 5.0}
    assert lines[4] == {
        "type": "state",
        "expression": "happy",
        "confidence": 0.9123,
        "distance": 40.0,
        "faces": 1,
        "since": 100.0,
        "timestamp": 101.25,
        "model_version": "v1",
        "detect": True,
    }
    assert lines[5] == {"type": "event", "from": "none", "to": "happy", "confidence": 0.9123,
                        "time": 101.25}  # fmt: skip
    assert lines[6] == {"type": "detect", "on": False}


def test_a_closed_stdout_turns_the_json_output_off_instead_of_killing_the_daemon(tmp_path):
    r, w = os.pipe()
    os.close(r)
    stream = os.fdopen(w, "w")
    out = JsonLinesOutput(stream)
    old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it at start-up
    try:
        assert out.open
        out.on_camera(True, "x")  # BrokenPipeError inside: swallowed, output off
        assert not out.open
        out.on_camera(True, "y")  # no second attempt, no exception
        out.stop()
        os.write(stream.fileno(), b"z")  # the fd now points at /dev/null: exit flush is safe
    finally:
        signal.signal(signal.SIGPIPE, old)
        stream.close()


# -- a hung loop and an impatient user ----------------------------------------------------


@pytest.mark.slow
def test_watchdog_pings_come_only_from_the_loop_so_a_hung_frame_stops_them(
    face_video, sample_model, clean_env
):
    from edged.daemon.notify import Notifier

    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    settings = looping_clip_settings(clip, sample_model, fps=10, duration=3.0)
    pings: list[float] = []

    def send(message: str) -> None:
        if "WATCHDOG=1" in message:
            pings.append(time.monotonic())

    notifier = Notifier(environ={"NOTIFY_SOCKET": "unused", "WATCHDOG_USEC": "200000"}, send=send)
    hung: list[float] = []

    def hang_once(rec: Recorder, result) -> None:
        if result is not None and not hung and len(rec.frames) > 5:
            hung.append(time.monotonic())
            time.sleep(1.2)  # the pipeline hangs: a real daemon would be killed by systemd
            hung.append(time.monotonic())

    build_service(settings, [Recorder(hang_once)], notifier=notifier).run()
    assert len(hung) == 2
    during = [t for t in pings if hung[0] < t < hung[1]]
    assert during == [], "a ping while the loop was stuck would hide the hang from systemd"
    assert len([t for t in pings if t < hung[0]]) >= 3  # pinged every 0.1 s before
    assert [t for t in pings if t > hung[1]]  # and again once the loop moved on


@pytest.mark.slow
def test_status_shows_the_frame_rate_from_the_first_second_without_flooding_systemd(
    face_video, sample_model, clean_env
):
    """Not only after the first 30 s stats window; and at most about one STATUS a second."""
    from edged.daemon.notify import Notifier

    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    settings = looping_clip_settings(clip, sample_model, fps=10, duration=4.0)
    assert settings.loop.stats_interval == 30.0
    sent: list[tuple[float, str]] = []

    def send(message: str) -> None:
        sent.append((time.monotonic(), message))

    notifier = Notifier(environ={"NOTIFY_SOCKET": "unused"}, send=send)
    assert build_service(settings, [Recorder()], notifier=notifier).run() == 0
    ready = next(t for t, m in sent if m.startswith("READY=1"))
    statuses = [(t, m) for t, m in sent if m.startswith("STATUS=")]  # not READY, STOPPING
    with_fps = [(t, m) for t, m in statuses if m.endswith(" fps")]
    assert with_fps, sent
    assert with_fps[0][0] - ready <= 1.5, sent
    # a looping clip at 10 fps: "camera online, model ..., 10.0 fps" (less on a busy machine)
    assert 0.0 < float(with_fps[-1][1].split(", ")[-1].split()[0]) <= 12.0, sent
    for t, _ in statuses:
        assert len([u for u, _ in statuses if t <= u < t + 1.0]) <= 2, statuses
    assert len(statuses) <= 2 * 4.0 + 2, statuses


HANGING_STOP = """
import sys, time
from edged.commands.run import build_service
from edged.settings import load_settings

class HangsOnStop:
    def start(self, commands): pass
    def on_frame(self, result, now):
        if result is not None:
            print("frame", flush=True)
    def on_state(self, report): pass
    def on_event(self, event): pass
    def on_detect(self, on): pass
    def on_camera(self, online, reason): pass
    def on_model(self, status): pass
    def on_stats(self, stats): pass
    def stop(self):
        print("stopping", flush=True)
        time.sleep(60)  # a broker that never answers, say

s = load_settings(None, {"camera": {"source": sys.argv[1], "loop": True},
                         "model": {"path": sys.argv[2]}, "mqtt": {"enabled": False}})
sys.exit(build_service(s, [HangsOnStop()]).run())
"""


@pytest.mark.slow
def test_a_second_ctrl_c_forces_exit_when_shutdown_hangs(face_video, sample_model, tmp_path):
    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    script = tmp_path / "hang.py"
    script.write_text(HANGING_STOP)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(clip), str(sample_model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "frame\n"
        proc.send_signal(signal.SIGINT)
        while proc.stdout.readline() != "stopping\n":
            pass
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=LIVENESS) == 128 + signal.SIGINT
        assert "forced exit" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_the_loop_never_waits_for_the_camera_longer_than_half_a_slot(
    face_video, sample_model, clean_env
):
    """A camera slower than the loop must not make ticks overrun (and count as skipped)."""
    from edged.daemon.capture import FrameGrabber

    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)], fps=2.0)
    settings = looping_clip_settings(clip, sample_model, fps=5, duration=1.0)
    timeouts: list[float | None] = []

    class Watched(FrameGrabber):
        def latest(self, after_seq=-1, timeout=None):
            timeouts.append(timeout)
            return super().latest(after_seq, timeout)

    inbox = Inbox()
    grabber = Watched(settings.camera, on_state=inbox.camera_changed)
    svc = build_service(settings, [Recorder()], inbox=inbox, grabber=grabber)
    assert svc.run() == 0
    assert timeouts and all(t is not None and t <= 0.5 / 5 for t in timeouts)


def test_tracking_can_be_switched_off_for_a_full_scan_every_frame(clean_env):
    no_mqtt = {"mqtt": {"enabled": False}}
    on = build_service(load_settings(None, no_mqtt), [])
    off = build_service(load_settings(None, {"detector": {"track": False}, **no_mqtt}), [])
    assert on.pipeline.tracker is not None
    assert off.pipeline.tracker is None
    for svc in (on, off):
        svc.inbox.close()  # never run: close its wake-up pipe here


@pytest.mark.slow
def test_a_worker_that_keeps_failing_stops_the_daemon_with_a_failure_status_for_systemd(
    sample_model, clean_env, caplog
):
    """No half-alive daemon: a camera thread that crashes every time it is restarted makes
    the whole daemon exit 70 (systemd's Restart=on-failure starts it afresh)."""
    from edged.daemon.capture import FrameGrabber, Source, SourceKind

    class Crashing(Source):
        kind = SourceKind.DEVICE_PATH
        name = "/dev/video-broken"

        def grab(self) -> bool:
            raise RuntimeError("driver returned garbage")

        def release(self) -> None:
            pass

    settings = load_settings(
        None,
        {
            "camera": {"source": "/dev/video-broken", "retry_initial": 0.01, "retry_max": 0.02},
            "model": {"path": str(sample_model)},
            "loop": {"fps": 20, "duration": 30},
            "mqtt": {"enabled": False},
        },
    )
    inbox = Inbox()
    grabber = FrameGrabber(
        settings.camera,
        on_state=inbox.camera_changed,
        on_fatal=inbox.worker_failed,
        opener=lambda _cs: Crashing(),
    )
    rec = Recorder()
    t0 = time.monotonic()
    assert build_service(settings, [rec], inbox=inbox, grabber=grabber).run() == 70
    assert time.monotonic() - t0 < 15, "stopped long before --duration ran out"
    assert rec.stopped, "outputs were shut down cleanly (offline published)"
    assert "edged-capture" in inbox.stop_reason
    assert any("giving up" in r.getMessage() for r in caplog.records)


class Clashing(Recorder):
    """An output that, after a few frames, has something STATUS= must show (as the MQTT
    publisher does when another edged owns its topics)."""

    def status_note(self) -> str | None:
        return "MQTT silent: another edged uses this device_id" if len(self.frames) > 3 else None


@pytest.mark.slow
def test_an_outputs_status_note_reaches_systemds_status_line_when_it_appears(
    face_video, sample_model, clean_env
):
    from edged.daemon.notify import Notifier

    clip, _ = face_video([Segment(sample_images("happy")[0], 1.0)])
    settings = looping_clip_settings(clip, sample_model, fps=10, duration=3.0)
    sent: list[str] = []
    notifier = Notifier(environ={"NOTIFY_SOCKET": "unused"}, send=sent.append)
    assert build_service(settings, [Clashing()], notifier=notifier).run() == 0
    statuses = [m for m in sent if m.startswith(("STATUS=", "READY=1"))]
    noted = [m for m in statuses if "MQTT silent: another edged uses this device_id" in m]
    assert noted, statuses
    # Before the note appeared, STATUS= did not show it; with it, the frame rate stays last.
    assert "MQTT silent" not in statuses[0]
    assert noted[-1].rstrip().endswith(" fps"), noted
