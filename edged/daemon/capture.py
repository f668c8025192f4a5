"""Frame sources and the newest-frame grabber.

A camera keeps producing frames whether or not we keep up. `FrameGrabber` reads them on
its own thread and keeps only the newest, so the frame loop never works on a stale,
buffered frame (frigate's ``capture_frames`` drops rather than queues, and so do we).
A source that fails is reopened with capped exponential backoff; the grabber reports
online/offline changes to its owner. An unexpected exception (a bug, a backend raising
mid-read) reports the camera offline and goes to the grabber's `Worker`, which logs it
and restarts the grabber, or tells the owner (``on_fatal``) when it keeps failing.

Buffer ownership (triple buffering, no per-frame allocation once sizes are stable):
the grabber thread owns the *back* buffer and reads into it; under the lock it swaps
back <-> *ready*. `FrameGrabber.latest` swaps ready <-> *front* under the same lock and
returns the front buffer. So the image in the `Frame` that `latest` returned is never
written by the grabber and stays valid until the *next* `latest`/`wait` call. There is
one consumer: copy the image if you need it longer.
"""

from __future__ import annotations

import enum
import errno
import importlib.util
import logging
import os
import re
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edged.daemon.workers import FatalHandler, Worker, describe
from edged.errors import CameraError
from edged.redact import redact, url_secrets
from edged.settings import CameraSettings

log = logging.getLogger(__name__)

StateCallback = Callable[[bool, str], None]

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
DEFAULT_FILE_FPS = 25.0  # pace for a file (or image sequence) that states no rate
STALE_GRABS = 2  # a decoded frame this many grabs behind the newest is not handed out


class SourceKind(enum.Enum):
    DEVICE_INDEX = "device index"
    DEVICE_PATH = "device path"
    FILE = "video file"
    URL = "stream URL"
    GSTREAMER = "GStreamer pipeline"
    PICAMERA2 = "picamera2"


class SourceUnsupported(CameraError):
    """This installation cannot open this kind of source (no GStreamer, no picamera2).

    Retrying does not help until the user installs what is missing; a CLI tool should
    give up at once (the daemon still retries, and says why once).
    """


def picamera2_available() -> bool:
    return importlib.util.find_spec("picamera2") is not None


def source_kind(source: str) -> SourceKind:
    """What kind of source a ``camera.source`` string names (``auto`` resolved)."""
    s = source.strip()
    if s == "auto":
        s = "picamera2" if picamera2_available() else "0"
    if s == "picamera2":
        kind = SourceKind.PICAMERA2
    elif "!" in s:
        kind = SourceKind.GSTREAMER
    elif s.isdigit():
        kind = SourceKind.DEVICE_INDEX
    elif s.startswith("/dev/"):
        kind = SourceKind.DEVICE_PATH
    elif _URL.match(s):
        kind = SourceKind.URL
    else:
        kind = SourceKind.FILE
    return kind


def display_name(source: str) -> str:
    """The source as it may appear anywhere (logs, reasons, payloads): a URL's user info
    and secret parameters hidden (`edged.redact`). Every source string shown goes
    through here."""
    return redact(source.strip(), url_secrets(source))


def quiet_backends(environ: Mapping[str, str] = os.environ) -> None:
    """Silence OpenCV's and FFmpeg's own messages on stderr.

    They bypass edged's logging, so its redaction too (FFmpeg names the URLs it fails to
    open), and they repeat on every retry ("once per change" is edged's promise): edged
    says why a source failed in its own words. Whoever sets ``OPENCV_LOG_LEVEL`` or
    ``OPENCV_FFMPEG_LOGLEVEL`` in the environment gets them back, unredacted.
    """
    if "OPENCV_LOG_LEVEL" not in environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if "OPENCV_FFMPEG_LOGLEVEL" not in environ and "OPENCV_FFMPEG_DEBUG" not in environ:
        # Read when OpenCV's FFmpeg backend first opens something: -8 is AV_LOG_QUIET.
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"


# Where a file source cannot be under the systemd unit's sandbox (deploy/edged.service),
# and why; README, Deployment says where it belongs instead.
FILE_SOURCE_HOME = "/srv/edged"
_SANDBOXED = (
    (
        ("/home", "/root", "/run/user"),
        "which the service cannot see (ProtectHome=yes in edged.service)",
    ),
    (
        ("/tmp", "/var/tmp"),
        "which is private to the service (PrivateTmp=yes in edged.service: it sees an "
        "empty folder of its own there)",
    ),
)
_PUT_IT = f"put the file in {FILE_SOURCE_HOME} (mode 0644) or see README, Deployment"


def under_systemd(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is a systemd service (systemd sets INVOCATION_ID for it)."""
    return bool(environ.get("INVOCATION_ID"))


def unreadable_reason(
    what: str, path: str, err: OSError, environ: Mapping[str, str] = os.environ
) -> str:
    """One line on why ``path`` (a ``what``: "video file", ...) cannot be read.

    Under systemd it says whether the *service* cannot read it and why: a path under a
    folder the unit's sandbox hides, or a file its dynamic user may not read. Otherwise
    plainly "does not exist" or "cannot be read: permission denied".
    """
    missing = err.errno in (errno.ENOENT, errno.ENOTDIR)
    why = "permission denied" if err.errno in (errno.EACCES, errno.EPERM) else err.strerror
    if not under_systemd(environ):
        return (
            f"{what} {path} does not exist" if missing else f"{what} {path} cannot be read: {why}"
        )
    absolute = os.path.abspath(path)
    for roots, hidden in _SANDBOXED:
        for root in roots:
            if absolute == root or absolute.startswith(root + "/"):
                return (
                    f"{what} {path} is not readable by the edged service: it lies under "
                    f"{root}, {hidden}; {_PUT_IT}"
                )
    if missing:
        return f"{what} {path} does not exist"
    return (
        f"{what} {path} is not readable by the edged service ({why}: it runs as a user of "
        f"its own, so the file needs mode 0644 and each folder above it 0755); {_PUT_IT}"
    )


def _stat_readable(what: str, path: Path, folder: bool = False) -> os.stat_result:
    """``path``'s stat, or `CameraError` (`unreadable_reason`) if this process cannot read
    it. A folder sandboxed away raises PermissionError, which ``Path.exists`` does not
    catch (an unexpected error on every retry, once)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise CameraError(unreadable_reason(what, str(path), e)) from None
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        raise CameraError(unreadable_reason(what, str(path), denied))
    return st


def has_gstreamer() -> bool:
    """Whether this OpenCV can open GStreamer pipelines (the PyPI wheels cannot)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


@dataclass(frozen=True, slots=True)
class Frame:
    """One grabbed frame. ``image`` is BGR and valid until the next `latest` call."""

    image: np.ndarray
    seq: int  # 1, 2, 3, ... in grab order; a gap means frames were dropped
    timestamp: float  # wall clock (time.time()) when grabbed, for payloads
    monotonic: float  # time.monotonic() when grabbed, for staleness checks


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """A snapshot of the grabber's counters."""

    online: bool
    ended: bool
    grabbed: int  # frames taken off the source
    decoded: int  # frames decoded (only those the consumer is about to want)
    taken: int  # frames handed to the consumer
    dropped: int  # frames grabbed but never handed over (undecoded, or replaced by newer)
    reconnects: int  # successful opens after the first
    failures: int  # failed opens and broken reads
    last_error: str | None
    source_fps: float  # the rate the source delivers (a file's own rate; 0 if unknown)


class Source:
    """An open frame source.

    ``grab`` takes the next frame off the source (cheap: a V4L2 buffer dequeue, a packet
    read); ``retrieve`` decodes the grabbed frame into a BGR buffer (the costly part: MJPG
    decoding, colour conversion). The grabber grabs every frame, so the source never
    queues stale ones, but retrieves only the frames its consumer will take.
    """

    kind: SourceKind
    name: str
    fps: float = 0.0  # native rate, 0 if unknown
    is_file: bool = False

    def grab(self) -> bool:
        """Take the next frame; False at the end of a file or when the source fails."""
        raise NotImplementedError

    def retrieve(self, out: np.ndarray | None) -> np.ndarray | None:
        """The grabbed frame as BGR (in ``out`` where the size fits), None on failure."""
        raise NotImplementedError

    def read(self, out: np.ndarray | None) -> np.ndarray | None:
        """Grab and retrieve: the next frame, or None at the end / on failure."""
        return self.retrieve(out) if self.grab() else None

    def rewind(self) -> bool:
        """Back to the first frame of a file; False where impossible."""
        return False

    def release(self) -> None:
        raise NotImplementedError


class CvSource(Source):
    """Anything ``cv2.VideoCapture`` opens: V4L2 devices, files, URLs, GStreamer."""

    def __init__(self, cap: cv2.VideoCapture, kind: SourceKind, name: str, fps: float) -> None:
        self._cap = cap
        self.kind = kind
        self.name = name
        self.fps = fps
        self.is_file = kind is SourceKind.FILE

    def grab(self) -> bool:
        return bool(self._cap.grab())

    def retrieve(self, out: np.ndarray | None) -> np.ndarray | None:
        ok, image = self._cap.retrieve(out) if out is not None else self._cap.retrieve()
        return image if ok and image is not None and image.size else None

    def rewind(self) -> bool:
        return bool(self.is_file and self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def release(self) -> None:
        self._cap.release()


class Picamera2Source(Source):
    """A Raspberry Pi CSI camera through libcamera, which ``cv2.VideoCapture(0)`` cannot reach.

    ``picamera2`` comes from Raspberry Pi OS's apt repository, not PyPI, so it is imported
    only here, when asked for.
    """

    kind = SourceKind.PICAMERA2
    name = "picamera2"

    def __init__(self, settings: CameraSettings) -> None:
        try:
            # Optional, and only on a Pi: imported only when asked for.
            from picamera2 import Picamera2  # noqa: PLC0415
        except ImportError:
            raise SourceUnsupported(
                "camera.source 'picamera2' needs the picamera2 package, which this Python "
                "cannot import: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
                "and create the virtualenv with `python3 -m venv --system-site-packages .venv` "
                "so it can see the system package"
            ) from None
        size = (settings.width or 640, settings.height or 480)
        controls = {"FrameRate": settings.fps} if settings.fps else {}
        try:
            cam = Picamera2()
        except Exception as e:  # libcamera raises IndexError/RuntimeError when none is found
            raise CameraError(
                f"no Raspberry Pi camera found by libcamera ({e}); is it connected and "
                "enabled? (`rpicam-hello --list-cameras`)"
            ) from None
        try:
            # "RGB888" is B, G, R in memory: exactly OpenCV's BGR order.
            config = cam.create_video_configuration(
                main={"size": size, "format": "RGB888"}, controls=controls
            )
            cam.configure(config)
            cam.start()
        except Exception as e:
            cam.close()
            raise CameraError(f"cannot start the Raspberry Pi camera: {e}") from None
        self._cam = cam
        self._pending: np.ndarray | None = None
        self.fps = float(settings.fps)

    def grab(self) -> bool:
        # picamera2 hands over whole arrays, so there is no cheaper grab than a capture.
        try:
            image = self._cam.capture_array("main")
        except Exception as e:
            log.debug("picamera2 capture failed: %s", e)
            self._pending = None
            return False
        self._pending = image[:, :, :3] if image.ndim == 3 and image.shape[2] == 4 else image
        return True

    def retrieve(self, out: np.ndarray | None) -> np.ndarray | None:
        return self._pending

    def release(self) -> None:
        try:
            self._cam.stop()
        finally:
            self._cam.close()


def _v4l2_backend() -> int:
    return cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY


def _check_device(path: str) -> None:
    if not os.path.exists(path):
        raise CameraError(
            f"no camera at {path}: device does not exist (is a camera connected? `ls /dev/video*`)"
        )
    if os.access(path, os.R_OK | os.W_OK):
        return
    if under_systemd():
        raise CameraError(
            f"permission denied on {path} for the edged service: it runs in group 'video', "
            f"so the device must belong to that group (`ls -l {path}`)"
        )
    raise CameraError(
        f"permission denied on {path}: add your user to the 'video' group "
        "(`sudo usermod -aG video $USER`, then log in again)"
    )


def _configure_device(cap: cv2.VideoCapture, settings: CameraSettings) -> None:
    if settings.width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, settings.width)
    if settings.height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, settings.height)
    if settings.fps:
        cap.set(cv2.CAP_PROP_FPS, settings.fps)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer frames queued in the driver: fresher frames


def _device_index(src: str) -> int:
    return 0 if src == "auto" else int(src)


def _video_capture(settings: CameraSettings, kind: SourceKind, src: str) -> cv2.VideoCapture:
    """A capture for ``src`` (not yet known to be open); `CameraError` when it cannot be."""
    if kind is SourceKind.DEVICE_INDEX:
        index = _device_index(src)
        if sys.platform.startswith("linux"):
            _check_device(f"/dev/video{index}")
        return cv2.VideoCapture(index, _v4l2_backend())
    if kind is SourceKind.DEVICE_PATH:
        _check_device(src)
        return cv2.VideoCapture(src, _v4l2_backend())
    if kind is SourceKind.GSTREAMER:
        if not has_gstreamer():
            raise SourceUnsupported(
                "camera.source looks like a GStreamer pipeline (it contains '!'), but this "
                f"OpenCV {cv2.__version__} was built without GStreamer (the PyPI wheels are): "
                "use a device, file or URL source, or an OpenCV built with GStreamer "
                "(e.g. the distribution's python3-opencv, with a venv made with "
                "--system-site-packages)"
            )
        return cv2.VideoCapture(src, cv2.CAP_GSTREAMER)
    if kind is SourceKind.URL:
        ms = int(settings.read_timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return cv2.VideoCapture(src, cv2.CAP_FFMPEG, params)
    return _file_capture(Path(src).expanduser())


def _file_capture(path: Path) -> cv2.VideoCapture:
    if "%" in path.name:  # an image sequence such as frames/img_%04d.jpg
        folder = path.parent
        if not stat.S_ISDIR(_stat_readable("image sequence folder", folder, True).st_mode):
            raise CameraError(f"image sequence folder {folder} is not a folder")
        return cv2.VideoCapture(str(path), cv2.CAP_IMAGES)
    if stat.S_ISDIR(_stat_readable("video file", path).st_mode):
        raise CameraError(
            f"{path} is a folder: give a video file, or an image sequence pattern "
            f"such as {path}/img_%04d.jpg"
        )
    return cv2.VideoCapture(str(path))


def _open_cv(settings: CameraSettings, kind: SourceKind) -> CvSource:
    src = settings.source.strip()
    quiet_backends()
    cap = _video_capture(settings, kind, src)
    name = display_name(src)
    if kind is SourceKind.DEVICE_INDEX:
        name = f"camera {_device_index(src)}"
    if not cap.isOpened():
        cap.release()
        raise CameraError(_open_failure(kind, name))
    if kind in (SourceKind.DEVICE_INDEX, SourceKind.DEVICE_PATH):
        _configure_device(cap, settings)
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 0.0
    return CvSource(cap, kind, name, fps)


def _open_failure(kind: SourceKind, name: str) -> str:
    if kind in (SourceKind.DEVICE_INDEX, SourceKind.DEVICE_PATH):
        return f"cannot open {name} (in use by another program, or not a capture device?)"
    if kind is SourceKind.URL:
        return f"cannot open stream {name} (unreachable, wrong address or credentials?)"
    if kind is SourceKind.GSTREAMER:
        return f"GStreamer cannot start the pipeline {name!r}"
    return f"cannot read {name}: not a video OpenCV can decode"


def open_source(settings: CameraSettings) -> Source:
    """Open the configured source once; raises `CameraError` with a message for a person.

    Used by the grabber (which retries) and directly by one-shot CLI tools.
    """
    kind = source_kind(settings.source)
    if kind is SourceKind.PICAMERA2:
        return Picamera2Source(settings)
    return _open_cv(settings, kind)


class FrameGrabber:
    """Grabs every frame of a source on its own thread and decodes only what is wanted.

    Frames nobody takes are not decoded: the grabber learns the consumer's rhythm (the
    interval between takes) and decodes each frame grabbed from one source interval
    before the consumer's next expected call until that call, so a fixed-rate loop finds
    a frame at most about one source interval old, and a 30 fps camera read by a 5 fps
    loop costs 5 decodes a second, not 30. A call that finds nothing decoded (the first,
    or an irregular consumer) waits for the next grabbed frame, at most a few source
    intervals. ``decode_all`` decodes every frame instead (for comparison benchmarks).

    ``on_state(online, reason)`` is called on every change of state (and when the reason
    for being offline changes), never once per retry: from the grabber thread, except
    that a stall (no frame for ``read_timeout`` while a read is blocked in the driver)
    is noticed, and reported, by the thread calling `latest`.
    A video file that ends (without ``loop``) sets `ended` and stops the thread; every
    other failure is retried with capped exponential backoff until `stop`. A file is
    played at its own rate when ``realtime`` (``camera.fps`` overrides that rate),
    otherwise as fast as it decodes.
    """

    def __init__(
        self,
        settings: CameraSettings,
        on_state: StateCallback | None = None,
        opener: Callable[[CameraSettings], Source] = open_source,
        decode_all: bool = False,
        *,
        on_fatal: FatalHandler | None = None,
    ) -> None:
        self.settings = settings
        self._on_state = on_state
        self._opener = opener
        self._decode_all = decode_all
        self._on_fatal = on_fatal
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()  # taken before _lock, never inside it
        self._cond = threading.Condition(self._lock)
        self._worker: Worker | None = None  # made by start
        self._runner: threading.Thread | None = None  # the thread running `_run`
        # Buffers (see the module docstring): back is the thread's, front the consumer's.
        self._back: np.ndarray | None = None
        self._ready: np.ndarray | None = None
        self._front: np.ndarray | None = None
        self._ready_seq = 0
        self._ready_time = (0.0, 0.0)
        self._fresh = False
        self._front_frame: Frame | None = None
        # The consumer's rhythm, for decoding just before it calls (under the lock).
        self._wanted = False  # a call found nothing: decode the next frame
        self._last_take = 0.0  # monotonic time of the last take
        self._period = 0.0  # smoothed interval between takes (0: not known yet)
        self._interval = 0.0  # smoothed interval between grabs (the thread's own)
        self._last_grab = 0.0  # monotonic time of the last grab, for the stall check
        # Counters and state, written under the lock by the thread.
        self._grabbed = 0
        self._decoded = 0
        self._taken = 0
        self._dropped = 0
        self._opens = 0
        self._failures = 0
        self._online = False
        self._ended = False
        self._last_error: str | None = None
        self._source_fps = 0.0
        self._reported: tuple[bool, str | None] | None = None
        self._secrets = url_secrets(settings.source)  # hidden in every reason and log line
        self._unexpected: set[tuple[type[Exception], str]] = set()  # logged with traceback

    # -- owner's side ---------------------------------------------------------------

    def start(self) -> None:
        if self._worker is not None:
            raise RuntimeError("FrameGrabber.start() called twice")
        s = self.settings
        # A restart after an unexpected error is one more camera retry: the same backoff.
        self._worker = Worker(
            "edged-capture",
            self._run,
            on_fatal=self._on_fatal,
            backoff=(s.retry_initial, max(s.retry_initial, s.retry_max)),
        )
        self._worker.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop at once (even mid-backoff), join the thread; the thread releases the source."""
        self.request_stop()
        if not self.join(timeout):
            log.warning(
                "camera thread did not stop within %.1f s (a read is blocked in the "
                "driver); it ends with the process",
                timeout,
            )

    def request_stop(self) -> None:
        """Ask the thread to end (even mid-backoff) without waiting: the daemon's shutdown
        asks every part first, then waits for all of them against one deadline."""
        self._stop.set()
        worker = self._worker
        if worker is not None:
            worker.stop()
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the thread; True if it ended (or never ran, or
        this is the thread itself, which ends once it returns)."""
        worker = self._worker
        if worker is None or threading.current_thread() is self._runner:
            return True
        return worker.join(timeout)

    def latest(self, after_seq: int = -1, timeout: float | None = None) -> Frame | None:
        """The newest frame if its seq is above ``after_seq``, else None. One consumer only.

        While the source is online and nothing newer is decoded yet, waits for the next
        grabbed frame (a few source intervals at most, and never more than ``timeout``:
        the frame loop's budget). The returned image is not written by the grabber until
        the next call.
        """
        self._check_stall()
        with self._cond:
            self._drop_stale()
            if not self._has_newer(after_seq) and self._online and not self._stop.is_set():
                self._wanted = True
                self._cond.notify_all()
                self._cond.wait_for(
                    lambda: self._has_newer(after_seq) or not self._online,
                    min(self._catch_up_time(), float("inf") if timeout is None else timeout),
                )
            return self._take(after_seq)

    def wait(self, after_seq: int = -1, timeout: float | None = None) -> Frame | None:
        """Like `latest`, but waits up to ``timeout`` s for a frame newer than ``after_seq``.

        Returns None on timeout, on `stop`, or once a file has ended.
        """
        with self._cond:
            self._drop_stale()
            if not self._has_newer(after_seq):
                self._wanted = True
                self._cond.wait_for(
                    lambda: self._has_newer(after_seq) or self._stop.is_set() or self._ended,
                    timeout,
                )
            return self._take(after_seq)

    def _check_stall(self) -> None:
        """A read blocked in the driver cannot report itself: the consumer notices.

        No frame for ``read_timeout`` (or three source intervals, if longer) while online
        means offline; the grabber reports online again when frames resume.
        """
        if not self._online or not self._last_grab:
            return
        silent = time.monotonic() - self._last_grab
        limit = max(self.settings.read_timeout, 3 * self._interval)
        if silent > limit and not self._ended and not self._stop.is_set():
            self._report(False, f"no frame for {limit:g} s (camera or stream stalled?)")

    def _drop_stale(self) -> None:
        """Under the lock: a frame decoded for a call that never came is too old now."""
        if self._fresh and self._online and self._grabbed - self._ready_seq > STALE_GRABS:
            self._fresh = False
            self._dropped += 1

    def _has_newer(self, after_seq: int) -> bool:
        if self._fresh:
            return self._ready_seq > after_seq
        f = self._front_frame
        return f is not None and f.seq > after_seq

    def _catch_up_time(self) -> float:
        """How long a call may wait for the next frame: a few grab intervals, capped."""
        return min(0.25, max(0.05, 3 * self._interval))

    def _take(self, after_seq: int) -> Frame | None:
        """Under the lock: hand the ready buffer to the consumer, take back its old one."""
        if self._fresh:
            self._front, self._ready = self._ready, self._front
            assert self._front is not None
            wall, mono = self._ready_time
            self._front_frame = Frame(self._front, self._ready_seq, wall, mono)
            self._fresh = False
            self._wanted = False
            self._taken += 1
            now = time.monotonic()
            if self._last_take:
                gap = now - self._last_take
                self._period = gap if not self._period else 0.7 * self._period + 0.3 * gap
            self._last_take = now
        f = self._front_frame
        return f if f is not None and f.seq > after_seq else None

    @property
    def online(self) -> bool:
        return self._online

    @property
    def ended(self) -> bool:
        """True once a video file played to its end (without ``loop``)."""
        return self._ended

    @property
    def running(self) -> bool:
        """Whether the grabber thread is alive (also while it waits to restart)."""
        return self._worker is not None and self._worker.alive

    @property
    def stats(self) -> CaptureStats:
        with self._lock:
            return CaptureStats(
                online=self._online,
                ended=self._ended,
                grabbed=self._grabbed,
                decoded=self._decoded,
                taken=self._taken,
                dropped=self._dropped,
                reconnects=max(0, self._opens - 1),
                failures=self._failures,
                last_error=self._last_error,
                source_fps=self._source_fps,
            )

    # -- the grabber thread ------------------------------------------------------------

    def _run(self) -> None:
        """Open, pump, retry until stopped. A `CameraError` is the camera's problem and is
        retried here; an exception escaping this goes to the `Worker`."""
        self._runner = threading.current_thread()
        s = self.settings
        delay = s.retry_initial
        while not self._stop.is_set():
            try:
                source = self._opener(s)
            except CameraError as e:
                self._failed(str(e))
            except Exception as e:  # a backend bug must not kill the thread
                self._failed(self._unexpected_open(e))
            else:
                try:
                    online_for, reason = self._pump(source)
                except Exception as e:  # the owner hears "offline"; the Worker logs it
                    self._failed(f"unexpected error reading {source.name}: {describe(e)}")
                    raise
                if reason is None:  # stopped, or a file ended
                    return
                if online_for >= delay:  # it worked for a while: start backoff afresh
                    delay = s.retry_initial
                self._failed(reason)
            log.debug("camera retry in %.2f s", delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, s.retry_max)

    def _unexpected_open(self, e: Exception) -> str:
        """The reason for an opener's unexpected exception (a bug, a backend's surprise).

        Its traceback is logged once per distinct error (until the camera works again),
        as the `Worker` does; a retry that fails the same way is a DEBUG line.
        """
        name = display_name(self.settings.source)
        reason = f"unexpected error opening {name}: {describe(e)}"
        key = (type(e), str(e))
        if key in self._unexpected:
            log.debug("%s (again)", self._redact(reason))
        else:
            self._unexpected.add(key)
            tb = self._redact("".join(traceback.format_exception(e)).rstrip())
            log.error("%s (retrying; its traceback, shown once):\n%s", self._redact(reason), tb)
        return reason

    def _redact(self, text: str) -> str:
        """``text`` without the source's secrets (or any registered one)."""
        return redact(text, self._secrets)

    def _pump(self, source: Source) -> tuple[float, str | None]:
        """Grab until failure: (seconds it delivered frames, reason) or (…, None) to end."""
        s = self.settings
        opened = time.monotonic()
        try:
            rate = s.fps or source.fps or DEFAULT_FILE_FPS
            period = 1.0 / rate if source.is_file and s.realtime else 0.0
            first = source.read(self._back)
            if first is None:
                return 0.0, f"{source.name} opened but delivered no frame"
            last_grab = self._went_online(source, first, rate)
            next_due = last_grab + period
            while not self._stop.is_set():
                if period:
                    due = self._pace(next_due, period)
                    if due is None:
                        break
                    next_due = due
                ok, reason = self._grab(source)
                if not ok:
                    return time.monotonic() - opened, reason
                now = time.monotonic()
                self._interval = 0.9 * self._interval + 0.1 * (now - last_grab)
                last_grab = now
                seq = self._count_grab()
                if not self._online:  # a stall (see `latest`) is over
                    self._report(True, f"{source.name} delivers frames again")
                if not self._should_decode(now):
                    with self._lock:
                        self._dropped += 1
                    continue
                image = source.retrieve(self._back)
                if image is None:
                    return now - opened, f"{source.name} delivered a frame that cannot be decoded"
                self._publish(image, seq, now)
            return time.monotonic() - opened, None
        finally:
            self._release(source)

    def _went_online(self, source: Source, first: np.ndarray, rate: float) -> float:
        """Count the open, report online, publish the first frame; returns its grab time."""
        with self._lock:
            self._opens += 1
            self._source_fps = rate if source.is_file else source.fps
            self._interval = 1.0 / self._source_fps if self._source_fps else 0.0
            self._online = True
        self._unexpected.clear()  # it works: a new failure is news again
        h, w = first.shape[:2]
        fps_text = f" at {self._source_fps:g} fps" if self._source_fps else ""
        self._report(True, f"{source.name} delivers {w}x{h}{fps_text}")
        last_grab = time.monotonic()
        self._publish(first, self._count_grab(), last_grab)
        return last_grab

    def _pace(self, next_due: float, period: float) -> float | None:
        """Wait until a realtime file's next frame is due; its next due time, None on stop."""
        wait = next_due - time.monotonic()
        if wait > 0 and self._stop.wait(wait):
            return None
        # After a stall, resume the pace instead of bursting to catch up.
        return max(next_due + period, time.monotonic())

    def _grab(self, source: Source) -> tuple[bool, str | None]:
        """Grab the next frame (rewinding a looping file): (True, None) when grabbed,
        else (False, why it failed), or (False, None) at the end of a file."""
        if source.grab():
            return True, None
        if source.is_file and self.settings.loop:
            if source.rewind() and source.grab():
                return True, None
            return False, f"cannot loop {source.name}"
        if source.is_file:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            self._report(False, f"end of {source.name}")
            return False, None
        return False, f"{source.name} stopped delivering frames (unplugged or stream broken?)"

    def _release(self, source: Source) -> None:
        try:
            source.release()
        except Exception:
            log.exception("error releasing %s", source.name)
        with self._cond:
            self._online = False
            self._cond.notify_all()

    def _count_grab(self) -> int:
        with self._lock:
            self._grabbed += 1
            self._last_grab = time.monotonic()
            return self._grabbed

    def _should_decode(self, now: float) -> bool:
        """Decode when asked, or from one grab interval before the consumer's next call."""
        if self._decode_all:
            return True
        with self._lock:
            if self._wanted:
                return True
            if not self._period:
                return False
            # From just before the expected call until it is clearly not coming (a paused
            # consumer): then only a call's own request decodes.
            due = self._last_take + self._period
            return due - 1.5 * self._interval <= now <= due + self._period

    def _publish(self, image: np.ndarray, seq: int, mono: float) -> None:
        wall = time.time() - (time.monotonic() - mono)
        with self._cond:
            if self._fresh:
                self._dropped += 1
            # The old ready buffer becomes the next read target; the consumer's is untouched.
            self._back, self._ready = self._ready, image
            self._decoded += 1
            self._wanted = False  # one decode per request; the caller takes it or it ages
            self._ready_seq = seq
            self._ready_time = (wall, mono)
            self._fresh = True
            self._cond.notify_all()

    def _failed(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
        self._report(False, reason)

    def _report(self, online: bool, reason: str) -> None:
        """Log and tell the owner once per change of state (or of the offline reason).

        Both the grabber thread and the consumer (a stall noticed in ``latest``) report;
        ``_report_lock`` keeps the state change and its callback together, so the owner
        hears the changes in the order they happened.
        """
        reason = self._redact(reason)  # every reason leaves the grabber through here
        with self._report_lock:
            self._report_locked(online, reason)

    def _report_locked(self, online: bool, reason: str) -> None:
        key = (online, None if online else reason)
        with self._cond:
            self._online = online
            if not online:
                self._last_error = reason
            changed = key != self._reported
            self._reported = key
            self._cond.notify_all()
        if not changed:
            log.debug("camera still offline: %s", reason)
            return
        if online:
            log.info("camera online: %s", reason)
        elif self._ended:
            log.info("camera offline: %s", reason)
        else:
            log.warning("camera offline: %s (retrying)", reason)
        if self._on_state is not None:
            try:
                self._on_state(online, reason)
            except Exception:
                log.exception("camera state callback failed")
