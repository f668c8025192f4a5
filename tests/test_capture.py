"""Frame capture: real MJPG clips through the same cv2.VideoCapture code a camera uses.

Each clip's frame i is a flat grey of value ``(i % 60) * STEP``, so a test can tell from the
pixels which frame it got and check that it matches the frame's sequence number.
"""

from __future__ import annotations

import errno
import http.server
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.daemon.capture import (
    CameraError,
    FrameGrabber,
    Source,
    SourceKind,
    SourceUnsupported,
    display_name,
    has_gstreamer,
    open_source,
    source_kind,
    unreadable_reason,
)
from edged.settings import CameraSettings

STEP = 4  # grey step between frames: survives MJPG compression with room to spare


def write_clip(path: Path, frames: int, fps: float, size: tuple[int, int] = (64, 48)) -> Path:
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((h, w, 3), (i % 60) * STEP, np.uint8))
    writer.release()
    return path


def frame_index(image: np.ndarray) -> int:
    return round(float(image.mean()) / STEP)


def until(cond: Callable[[], object], timeout: float = 10.0, every: float = 0.01) -> None:
    """Wait for ``cond`` with a generous liveness deadline (never a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


class States:
    """Collects on_state reports (from the grabber thread)."""

    def __init__(self) -> None:
        self.items: list[tuple[bool, str]] = []
        self._lock = threading.Lock()

    def __call__(self, online: bool, reason: str) -> None:
        with self._lock:
            self.items.append((online, reason))

    def onlines(self) -> list[bool]:
        with self._lock:
            return [o for o, _ in self.items]


def settings(source: Path | str, **kw: object) -> CameraSettings:
    base: dict[str, object] = {"retry_initial": 0.05, "retry_max": 0.2}
    base.update(kw)
    return CameraSettings(source=str(source), **base)


@pytest.fixture
def grabbers() -> Callable[..., FrameGrabber]:
    """Factory for started grabbers that are always stopped, even when a test fails."""
    made: list[FrameGrabber] = []

    def make(s: CameraSettings, states: States | None = None) -> FrameGrabber:
        g = FrameGrabber(s, on_state=states)
        made.append(g)
        g.start()
        return g

    yield make
    for g in made:
        g.stop()


# -- source strings and one-shot opening -----------------------------------------------


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("0", SourceKind.DEVICE_INDEX),
        ("/dev/video0", SourceKind.DEVICE_PATH),
        ("clip.mp4", SourceKind.FILE),
        ("frames/img_%04d.jpg", SourceKind.FILE),
        ("rtsp://user:pw@cam.local/stream", SourceKind.URL),
        ("http://cam.local/video.mjpg", SourceKind.URL),
        ("v4l2src ! videoconvert ! appsink", SourceKind.GSTREAMER),
        ("picamera2", SourceKind.PICAMERA2),
    ],
)
def test_source_string_selects_the_right_kind_of_source(source: str, kind: SourceKind) -> None:
    assert source_kind(source) is kind


def test_auto_source_is_picamera2_only_where_it_is_importable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # not importable
    assert source_kind("auto") is SourceKind.DEVICE_INDEX


def test_url_credentials_never_reach_the_logs() -> None:
    assert display_name("rtsp://admin:secret@10.0.0.5/live") == "rtsp://***@10.0.0.5/live"
    assert display_name(" http://u:p/w d@cam/v?user=a&pwd=b&res=640 ") == (
        "http://***@cam/v?user=***&pwd=***&res=640"
    )


def test_missing_device_path_fails_with_a_clear_message() -> None:
    with pytest.raises(CameraError) as e:
        open_source(settings("/dev/video9"))
    assert str(e.value) == (
        "no camera at /dev/video9: device does not exist (is a camera connected? `ls /dev/video*`)"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="V4L2 device nodes")
def test_missing_device_index_names_its_device_node() -> None:
    assert not os.path.exists("/dev/video9")
    with pytest.raises(CameraError, match=r"no camera at /dev/video9: device does not exist"):
        open_source(settings("9"))


def test_missing_picamera2_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as where not installed
    with pytest.raises(SourceUnsupported) as e:
        open_source(settings("picamera2"))
    msg = str(e.value)
    assert "sudo apt install python3-picamera2" in msg
    assert "--system-site-packages" in msg


@pytest.mark.skipif(has_gstreamer(), reason="this OpenCV has GStreamer")
def test_gstreamer_pipeline_without_gstreamer_says_so() -> None:
    with pytest.raises(SourceUnsupported, match="built without GStreamer"):
        open_source(settings("videotestsrc ! videoconvert ! appsink"))


def test_missing_video_file_and_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match=r"video file .*nope\.avi does not exist"):
        open_source(settings(tmp_path / "nope.avi"))
    with pytest.raises(CameraError, match="is a folder"):
        open_source(settings(tmp_path))


def test_file_that_is_not_a_video_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "notes.avi"
    bad.write_text("not a video\n")
    with pytest.raises(CameraError, match="not a video OpenCV can decode"):
        open_source(settings(bad))


def test_image_sequence_plays_through_the_same_capture(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img_{i:04d}.png"), np.full((8, 8, 3), i * STEP, np.uint8))
    src = open_source(settings(tmp_path / "img_%04d.png"))
    try:
        got = []
        while (img := src.read(None)) is not None:
            got.append(frame_index(img))
    finally:
        src.release()
    assert got == [0, 1, 2]


def test_source_reads_into_the_buffer_it_is_given(tmp_path: Path) -> None:
    src = open_source(settings(write_clip(tmp_path / "c.avi", 3, 10)))
    try:
        first = src.read(None)
        assert first is not None
        again = src.read(first)
        assert again is first  # no allocation per frame once sizes are stable
    finally:
        src.release()


# -- the grabber -------------------------------------------------------------------------


def test_slow_consumer_gets_the_newest_frame_never_a_backlog(tmp_path, grabbers) -> None:
    clip = write_clip(tmp_path / "c.avi", 60, 50.0)
    g = grabbers(settings(clip, realtime=True))
    seqs = []
    last = -1
    for _ in range(5):
        time.sleep(0.15)  # a consumer much slower than the 50 fps source
        before = g.stats.grabbed
        f = g.latest(last)
        assert f is not None
        assert f.seq >= before - 2  # about the newest frame grabbed, not a queued old one
        assert frame_index(f.image) == f.seq - 1  # and the pixels are that frame's
        seqs.append(f.seq)
        last = f.seq
    assert all(b - a > 1 for a, b in itertools.pairwise(seqs))  # frames skipped
    st = g.stats
    assert st.taken == 5
    assert st.dropped >= st.grabbed - st.taken - 1  # all but the last untaken one counted
    assert st.dropped > 0


def test_only_frames_the_consumer_takes_are_decoded(tmp_path, grabbers) -> None:
    """A 5 fps loop on a 50 fps source: about one decode per take, yet fresh frames."""
    clip = write_clip(tmp_path / "c.avi", 60, 50.0)
    g = grabbers(settings(clip, realtime=True, loop=True))
    last = -1
    for _ in range(8):
        time.sleep(0.2)
        before = g.stats.grabbed
        f = g.latest(last)
        assert f is not None
        assert f.seq >= before - 2
        assert frame_index(f.image) == (f.seq - 1) % 60
        last = f.seq
    st = g.stats
    assert st.grabbed >= 60
    assert st.decoded <= 4 * st.taken + 2 < st.grabbed  # not one decode per grabbed frame
    assert st.dropped >= st.grabbed - st.taken - 1


def test_decode_all_decodes_every_frame(tmp_path) -> None:
    clip = write_clip(tmp_path / "c.avi", 20, 50.0)
    g = FrameGrabber(settings(clip, realtime=True), decode_all=True)
    g.start()
    try:
        until(lambda: g.ended)
        assert g.stats.decoded == g.stats.grabbed == 20
    finally:
        g.stop()


def test_paused_consumer_stops_decoding_and_gets_a_fresh_frame_back(tmp_path, grabbers):
    clip = write_clip(tmp_path / "c.avi", 60, 50.0)
    g = grabbers(settings(clip, realtime=True, loop=True))
    last = -1
    for _ in range(4):  # a rhythm of 10 takes a second
        time.sleep(0.1)
        f = g.latest(last)
        assert f is not None
        last = f.seq
    time.sleep(0.3)  # the consumer pauses: its next call was due 0.2 s ago
    decoded = g.stats.decoded
    time.sleep(0.5)
    assert g.stats.decoded == decoded  # decoding stopped after the missed calls
    before = g.stats.grabbed
    f = g.latest(last)
    assert f is not None
    assert f.seq >= before - 2  # not the frame decoded for a call that never came
    assert frame_index(f.image) == (f.seq - 1) % 60


def test_frame_held_by_the_consumer_is_never_overwritten(tmp_path, grabbers) -> None:
    clip = write_clip(tmp_path / "c.avi", 60, 25.0)
    g = grabbers(settings(clip, realtime=False, loop=True))
    f = g.wait(timeout=5)
    assert f is not None
    held = f.image.copy()
    until(lambda: g.stats.grabbed > f.seq + 20)  # the grabber wrote many frames meanwhile
    assert np.array_equal(f.image, held)


def test_latest_returns_none_when_nothing_newer(tmp_path, grabbers) -> None:
    clip = write_clip(tmp_path / "c.avi", 5, 25.0)
    g = grabbers(settings(clip, realtime=True))
    f = g.wait(timeout=5)
    assert f is not None
    assert frame_index(f.image) == f.seq - 1
    until(lambda: g.ended)
    assert g.latest(after_seq=f.seq) is None
    assert g.latest() is f  # asking again without a newer frame returns the same frame


def test_realtime_file_plays_at_its_own_rate(tmp_path, grabbers) -> None:
    clip = write_clip(tmp_path / "c.avi", 15, 20.0)  # 0.75 s of video
    t0 = time.monotonic()
    g = grabbers(settings(clip, realtime=True))
    until(lambda: g.ended)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.6  # paced like a camera: it cannot finish early
    assert g.stats.grabbed == 15
    assert g.stats.source_fps == 20.0


def test_camera_fps_overrides_a_files_own_rate(tmp_path, grabbers) -> None:
    clip = write_clip(tmp_path / "c.avi", 6, 100.0)  # 0.06 s at its own rate
    t0 = time.monotonic()
    g = grabbers(settings(clip, realtime=True, fps=10.0))  # 0.6 s at 10 fps
    until(lambda: g.ended)
    assert time.monotonic() - t0 >= 0.45
    assert g.stats.source_fps == 10.0


def test_non_realtime_file_is_read_as_fast_as_it_decodes(tmp_path, grabbers) -> None:
    clip = write_clip(tmp_path / "c.avi", 100, 1.0)  # 100 s of video at its own rate
    g = grabbers(settings(clip, realtime=False))
    until(lambda: g.ended, timeout=20)  # liveness only: far less than 100 s
    assert g.stats.grabbed == 100


def test_looping_file_starts_again_from_its_first_frame(tmp_path, grabbers) -> None:
    clip = write_clip(tmp_path / "c.avi", 10, 100.0)
    states = States()
    g = grabbers(settings(clip, realtime=True, loop=True), states)
    last = -1
    seen: list[int] = []
    deadline = time.monotonic() + 10
    while last < 35 and time.monotonic() < deadline:
        f = g.wait(last, timeout=2)
        assert f is not None
        assert frame_index(f.image) == (f.seq - 1) % 10
        seen.append(frame_index(f.image))
        last = f.seq
    assert last >= 35  # three times through a 10-frame clip
    assert not g.ended
    assert states.onlines() == [True]  # a loop is not a reconnect


def test_file_that_ends_goes_offline_once_and_stops(tmp_path, grabbers) -> None:
    clip = write_clip(tmp_path / "c.avi", 5, 25.0)
    states = States()
    g = grabbers(settings(clip, realtime=False), states)
    until(lambda: g.ended)
    until(lambda: not g.running)
    assert not g.online
    assert states.items[0][0] is True
    assert states.items[1:] == [(False, f"end of {clip}")]
    assert g.stats.failures == 0


def test_missing_file_retries_then_recovers_when_it_appears(
    tmp_path, grabbers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.daemon.capture")
    target = tmp_path / "later.avi"
    states = States()
    g = grabbers(settings(target, realtime=True, loop=True), states)
    until(lambda: g.stats.failures >= 4)  # several retries...
    assert g.running
    assert states.items == [(False, f"video file {target} does not exist")]  # ...reported once
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # and logged once, not once per retry
    # The file appears (renamed into place, as a copy tool would finish).
    write_clip(tmp_path / "tmp.avi", 10, 50.0)
    os.replace(tmp_path / "tmp.avi", target)
    f = g.wait(timeout=10)
    assert f is not None
    assert g.online
    assert states.onlines() == [False, True]
    assert g.wait(f.seq, timeout=5) is not None  # and frames keep flowing


def test_broken_stream_is_reopened_and_frames_flow_again(http_dir, grabbers) -> None:
    """A network stream that stops delivering (the connection ends) is reconnected."""
    folder, base = http_dir
    write_clip(folder / "s.avi", 10, 25.0)
    states = States()
    g = grabbers(settings(f"{base}/s.avi", realtime=False), states)
    until(lambda: g.stats.reconnects >= 2)  # each time the stream ends, it is reopened
    assert g.running
    assert not g.ended  # a stream is never "ended" like a file
    onlines = states.onlines()
    assert onlines[:4] == [True, False, True, False]  # one report per change, in order
    assert all(a != b for a, b in itertools.pairwise(onlines))
    reason = states.items[1][1]
    assert reason == f"{base}/s.avi stopped delivering frames (unplugged or stream broken?)"
    assert g.stats.grabbed >= 20  # two whole plays, then the third began


def test_unreachable_stream_is_retried_with_a_clear_reason(http_dir, grabbers) -> None:
    _, base = http_dir
    states = States()
    g = grabbers(settings(f"{base}/missing.avi"), states)
    until(lambda: g.stats.failures >= 2)
    assert g.running
    assert states.items == [
        (
            False,
            f"cannot open stream {base}/missing.avi (unreachable, wrong address or credentials?)",
        )
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_stalled_source_goes_offline_then_online_when_frames_resume(tmp_path, grabbers):
    """A read blocked for good (a hung driver) is noticed by the consumer's calls.

    A named pipe plays the hung camera: the writer stops mid-clip, keeping it open.
    """
    data = write_clip(tmp_path / "c.avi", 200, 25.0).read_bytes()
    fifo = tmp_path / "stalled.avi"
    os.mkfifo(fifo)
    resume = threading.Event()

    def writer() -> None:
        with open(fifo, "wb") as f:
            f.write(data[: len(data) // 3])
            f.flush()
            resume.wait(30)
            f.write(data[len(data) // 3 :])

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    states = States()
    g = grabbers(settings(fifo, realtime=False, read_timeout=0.3), states)
    try:
        until(lambda: g.online)

        def consumer_sees_stall() -> bool:
            g.latest()  # the daemon's loop keeps calling once per tick
            return not g.online

        until(consumer_sees_stall)
        assert states.items[-1] == (False, "no frame for 0.3 s (camera or stream stalled?)")
        assert g.stats.last_error == states.items[-1][1]
        resume.set()
        until(lambda: g.online or g.ended)
        assert (True, f"{fifo} delivers frames again") in states.items
    finally:
        resume.set()
        t.join(5)


def test_stalled_stream_times_out_after_read_timeout(tmp_path, grabbers) -> None:
    """A network stream that stops sending (connection still open) counts as failed."""
    data = write_clip(tmp_path / "s.avi", 200, 25.0).read_bytes()
    release = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 4])
            self.wfile.flush()
            release.wait(20)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/live.avi"
    states = States()
    try:
        g = grabbers(settings(url, realtime=False, read_timeout=0.5, retry_initial=5.0), states)
        until(lambda: g.stats.failures >= 1)  # no consumer calls: FFmpeg's own timeout
        assert states.items[-1] == (
            False,
            f"{url} stopped delivering frames (unplugged or stream broken?)",
        )
        assert g.running
    finally:
        release.set()
        srv.shutdown()
        srv.server_close()


def test_backoff_grows_up_to_its_cap(tmp_path, grabbers) -> None:
    target = tmp_path / "never.avi"
    g = grabbers(settings(target, retry_initial=0.05, retry_max=0.2))
    time.sleep(1.0)
    # 0.05 + 0.1 + 0.2 + 0.2 + 0.2 ... : about 6 tries in 1 s; without backoff, 20;
    # without the cap, 4 (0.05 + 0.1 + 0.2 + 0.4 + 0.8 > 1).
    assert 4 <= g.stats.failures <= 9


def test_stop_is_immediate_even_during_a_long_backoff(tmp_path) -> None:
    g = FrameGrabber(settings(tmp_path / "none.avi", retry_initial=30.0, retry_max=60.0))
    g.start()
    until(lambda: g.stats.failures >= 1)
    t0 = time.monotonic()
    g.stop()
    assert time.monotonic() - t0 < 1.0  # not the 30 s backoff
    assert not g.running


def test_stop_releases_a_playing_source_and_wakes_a_waiting_consumer(tmp_path) -> None:
    clip = write_clip(tmp_path / "c.avi", 100, 5.0)
    g = FrameGrabber(settings(clip, realtime=True))
    g.start()
    f = g.wait(timeout=5)
    assert f is not None
    result: list[object] = []
    waiter = threading.Thread(target=lambda: result.append(g.wait(f.seq + 100, timeout=30)))
    waiter.start()
    g.stop()
    waiter.join(5)
    assert not waiter.is_alive()
    assert not g.running


def test_missing_device_keeps_the_grabber_alive_and_says_why(grabbers) -> None:
    states = States()
    g = grabbers(settings("/dev/video9"), states)
    until(lambda: g.stats.failures >= 2)
    assert g.running
    assert states.items == [
        (
            False,
            "no camera at /dev/video9: device does not exist (is a camera connected? "
            "`ls /dev/video*`)",
        )
    ]
    assert g.stats.last_error == states.items[0][1]


# -- an unexpected exception in the grabber thread --------------------------------------


class RaisingSource(Source):
    """A backend that raises mid-read, as a buggy driver binding might."""

    kind = SourceKind.DEVICE_PATH
    name = "/dev/video-broken"

    def __init__(self) -> None:
        self.released = False

    def grab(self) -> bool:
        raise RuntimeError("driver returned garbage")

    def release(self) -> None:
        self.released = True


def test_a_source_raising_in_grab_is_logged_once_and_the_grabber_recovers(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """The exception reaches the grabber's Worker: one ERROR with its traceback, a restart,
    and a later source that works is opened and delivers frames."""
    caplog.set_level(logging.DEBUG, logger="edged.daemon")
    clip = write_clip(tmp_path / "c.avi", 10, 50.0)
    s = settings(clip, realtime=True, loop=True, retry_initial=0.01, retry_max=0.02)
    broken = [RaisingSource() for _ in range(3)]
    handed_out = iter(broken)

    def opener(cs: CameraSettings) -> Source:
        return next(handed_out, None) or open_source(cs)

    states = States()
    fatal: list[str] = []
    g = FrameGrabber(s, on_state=states, opener=opener, on_fatal=fatal.append)
    g.start()
    try:
        f = g.wait(timeout=10)
        assert f is not None  # the working source came online and delivers frames
        assert g.online
        assert g.wait(f.seq, timeout=5) is not None  # and keeps delivering
        assert g.running
    finally:
        g.stop()
    assert all(b.released for b in broken)  # each broken source was still released
    errors = [
        r for r in caplog.records if r.name == "edged.daemon.workers" and r.levelno >= logging.ERROR
    ]
    assert len(errors) == 1  # once, though it failed three times
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is RuntimeError
    assert "edged-capture" in errors[0].getMessage()
    assert fatal == []
    # The owner heard the outage (once) and the recovery.
    reason = "unexpected error reading /dev/video-broken: RuntimeError: driver returned garbage"
    assert states.items[0] == (False, reason)
    assert states.onlines() == [False, True]
    assert g.stats.last_error == reason
    assert g.stats.failures == 3


# -- a source that cannot be opened: why, in one line, once -------------------------------

SERVICE = {"INVOCATION_ID": "0f3c"}  # what systemd sets for a service's processes
DENIED = PermissionError(errno.EACCES, "Permission denied")
MISSING = FileNotFoundError(errno.ENOENT, "No such file or directory")
PUT_IT = "put the file in /srv/edged (mode 0644) or see README, Deployment"
HOME = "which the service cannot see (ProtectHome=yes in edged.service)"
TMP = (
    "which is private to the service (PrivateTmp=yes in edged.service: it sees an empty "
    "folder of its own there)"
)


def hidden(path: str, root: str, why: str) -> str:
    return (
        f"video file {path} is not readable by the edged service: it lies under {root}, "
        f"{why}; {PUT_IT}"
    )


REASONS = [
    ("/home/pi/clip.mp4", DENIED, SERVICE, hidden("/home/pi/clip.mp4", "/home", HOME)),
    ("/root/clip.mp4", MISSING, SERVICE, hidden("/root/clip.mp4", "/root", HOME)),
    ("/run/user/1000/c.avi", DENIED, SERVICE, hidden("/run/user/1000/c.avi", "/run/user", HOME)),
    ("/tmp/clip.mp4", MISSING, SERVICE, hidden("/tmp/clip.mp4", "/tmp", TMP)),
    ("/opt/clips/c.avi", DENIED, SERVICE,
     "video file /opt/clips/c.avi is not readable by the edged service (permission denied: "
     "it runs as a user of its own, so the file needs mode 0644 and each folder above it "
     f"0755); {PUT_IT}"),
    ("/srv/edged/c.avi", MISSING, SERVICE, "video file /srv/edged/c.avi does not exist"),
    ("/homework/c.avi", MISSING, SERVICE, "video file /homework/c.avi does not exist"),
    ("/home/pi/c.avi", DENIED, {}, "video file /home/pi/c.avi cannot be read: permission denied"),
    ("/home/pi/c.avi", MISSING, {}, "video file /home/pi/c.avi does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "err", "environ", "reason"), REASONS)
def test_an_unreadable_file_says_whether_the_service_sandbox_hides_it(path, err, environ, reason):
    assert unreadable_reason("video file", path, err, environ) == reason


def test_an_unexpected_opener_error_logs_its_traceback_once_per_distinct_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same unexpected error on every retry: one traceback, then DEBUG lines; a
    different error is news (one more traceback); the owner hears each change once."""
    caplog.set_level(logging.DEBUG, logger="edged.daemon.capture")
    calls = itertools.count()

    def opener(cs: CameraSettings) -> Source:
        raise RuntimeError("backend exploded" if next(calls) < 4 else "backend exploded again")

    states = States()
    g = FrameGrabber(
        settings("/dev/video-odd", retry_initial=0.01, retry_max=0.02),
        on_state=states,
        opener=opener,
    )
    g.start()
    try:
        until(lambda: g.stats.failures >= 10)
    finally:
        g.stop()
    tracebacks = [
        r for r in caplog.records if r.exc_info or "Traceback (most recent" in r.getMessage()
    ]
    assert [r.getMessage().splitlines()[-1] for r in tracebacks] == [
        "RuntimeError: backend exploded",
        "RuntimeError: backend exploded again",
    ]
    again = [
        r for r in caplog.records if r.levelno == logging.DEBUG and "(again)" in r.getMessage()
    ]
    assert len(again) >= 7
    assert states.items == [
        (False, "unexpected error opening /dev/video-odd: RuntimeError: backend exploded"),
        (False, "unexpected error opening /dev/video-odd: RuntimeError: backend exploded again"),
    ]


def test_a_secret_in_an_opener_error_reaches_neither_the_reason_nor_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.daemon.capture")
    source = "rtsp://cam-user:Sekr1t/pw@cam/x?token=T0k3n-55"

    def opener(cs: CameraSettings) -> Source:
        raise ValueError(f"cannot parse {cs.source}")

    states = States()
    g = FrameGrabber(settings(source), on_state=states, opener=opener)
    g.start()
    try:
        until(lambda: g.stats.failures >= 2)
    finally:
        g.stop()
    shown = "rtsp://***@cam/x?token=***"
    assert states.items == [
        (False, f"unexpected error opening {shown}: ValueError: cannot parse {shown}")
    ]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Traceback" in logged
    assert "Sekr1t" not in logged and "T0k3n" not in logged and "cam-user" not in logged


def _as_the_service(private: Path) -> list[str]:
    """A command prefix under which ``private`` (made here) cannot be read, as the unit's
    sandbox makes a folder under /home: root without capabilities (the unit's empty
    CapabilityBoundingSet=) facing another user's 0700 folder; or, not root, mode 000."""
    private.mkdir()
    if os.geteuid() != 0:
        private.chmod(0)
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    os.chown(private, 65534, 65534)
    private.chmod(0o700)
    return [setpriv, "--bounding-set", "-all", "--inh-caps", "-all"]


def test_a_file_the_service_cannot_read_is_one_line_once_never_a_traceback(
    tmp_path: Path, clean_env
) -> None:
    """The real daemon under systemd's eyes (INVOCATION_ID), a file it may not read, many
    retries: one WARNING naming why, the same reason in the JSON line, no traceback."""
    private = tmp_path / "private"
    prefix = _as_the_service(private)
    clip = private / "clip.avi"
    env = {
        **os.environ,
        "INVOCATION_ID": "0f3c",
        "EDGED_CAMERA__RETRY_INITIAL": "0.05",
        "EDGED_CAMERA__RETRY_MAX": "0.1",
    }
    try:
        proc = subprocess.run(
            [
                *prefix, sys.executable, "-m", "edged", "run", "--source", str(clip),
                "--stdout", "--no-mqtt", "--duration", "1.5", "--log-level", "debug",
                "--model", str(tmp_path / "no-model.yml"),
            ],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
    finally:
        private.chmod(0o700)
    assert proc.returncode == 0, proc.stderr
    retries = [line for line in proc.stderr.splitlines() if "camera still offline" in line]
    assert len(retries) >= 3  # it did retry, many times...
    warnings = [line for line in proc.stderr.splitlines() if "camera offline:" in line]
    assert len(warnings) == 1, proc.stderr  # ...and said so once
    assert "Traceback" not in proc.stderr
    reasons = [
        json.loads(line)["reason"]
        for line in proc.stdout.splitlines()
        if line.startswith('{"type": "camera"')
    ]
    assert len(reasons) == 1
    reason = reasons[0]
    assert reason.startswith(f"video file {clip} is not readable by the edged service")
    assert reason.endswith(PUT_IT)
    if str(clip).startswith("/tmp/"):
        assert f"it lies under /tmp, {TMP}" in reason
    assert reason in warnings[0]
