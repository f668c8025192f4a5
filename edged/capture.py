"""Frame sources and the newest-frame grabber.

A camera keeps producing frames whether or not we keep up. `FrameGrabber` reads them on
its own thread and keeps only the newest, so the frame loop never works on a stale,
buffered frame (frigate's ``capture_frames`` drops rather than queues, and so do we).
A source that fails is reopened with capped exponential backoff; the grabber reports
online/offline changes to its owner and never raises out of its thread.

Buffer ownership (triple buffering, no per-frame allocation once sizes are stable):
the grabber thread owns the *back* buffer and reads into it; under the lock it swaps
back <-> *ready*. `FrameGrabber.latest` swaps ready <-> *front* under the same lock and
returns the front buffer. So the image in the `Frame` that `latest` returned is never
written by the grabber and stays valid until the *next* `latest` call from the same
consumer. There is one consumer: copy the image if you need it longer.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edged.errors import CameraError
from edged.settings import CameraSettings

log = logging.getLogger(__name__)

StateCallback = Callable[[bool, str], None]


class SourceKind(enum.Enum):
    DEVICE_INDEX = "device index"
    DEVICE_PATH = "device path"
    FILE = "video file"
    URL = "stream URL"
    GSTREAMER = "GStreamer pipeline"
    PICAMERA2 = "picamera2"


class SourceUnsupported(CameraError):
    """This installation can never open the source (no GStreamer, no picamera2).

    Retrying will not help; the daemon may still retry (the user can install what is
    missing), but a CLI tool should give up at once.
    """


def source_kind(source: str) -> SourceKind:
    """What kind of source a ``camera.source`` string names (``auto`` resolved)."""
    raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Frame:
    """One grabbed frame. ``image`` is BGR and valid until the next `latest` call."""

    image: np.ndarray
    seq: int
    timestamp: float  # wall clock (time.time()) when grabbed, for payloads
    monotonic: float  # time.monotonic() when grabbed, for staleness checks


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """A snapshot of the grabber's counters."""

    online: bool
    grabbed: int  # frames read from the source
    taken: int  # frames handed to the consumer
    dropped: int  # frames grabbed but replaced by a newer one before anyone took them
    reconnects: int  # successful opens after a failure
    failures: int  # failed opens and broken reads
    last_error: str | None
    source_fps: float  # the rate the source delivers (a file's own rate; 0 if unknown)


class Source:
    """An open frame source: ``read`` fills (and if possible reuses) a BGR buffer."""

    kind: SourceKind
    name: str
    fps: float  # native rate, 0 if unknown
    is_file: bool

    def read(self, out: np.ndarray | None) -> np.ndarray | None:
        """The next frame (in ``out`` where the size fits), or None at the end / on failure."""
        raise NotImplementedError

    def rewind(self) -> bool:
        """Back to the first frame of a file; False where impossible."""
        return False

    def release(self) -> None:
        raise NotImplementedError


def open_source(settings: CameraSettings) -> Source:
    """Open the configured source once; raises `CameraError` with a message for a person.

    Used by the grabber (which retries) and directly by one-shot CLI tools.
    """
    raise NotImplementedError


class FrameGrabber:
    """Reads a source on its own thread, keeping only the newest frame.

    ``on_state(online, reason)`` is called from the grabber thread on every change of
    state (and when the reason for being offline changes), never once per retry.
    A video file that ends (without ``loop``) sets `ended` and stops the thread; every
    other failure is retried with backoff until `stop`.
    """

    def __init__(self, settings: CameraSettings, on_state: StateCallback | None = None) -> None:
        self.settings = settings
        self._on_state = on_state
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 2.0) -> None:
        """Stop at once (even mid-backoff), join the thread and release the source."""
        raise NotImplementedError

    def latest(self, after_seq: int = -1) -> Frame | None:
        """The newest frame if its seq is above ``after_seq``, else None. One consumer only."""
        raise NotImplementedError

    def wait(self, after_seq: int = -1, timeout: float | None = None) -> Frame | None:
        """Like `latest`, but waits up to ``timeout`` for a frame newer than ``after_seq``."""
        raise NotImplementedError

    @property
    def online(self) -> bool:
        raise NotImplementedError

    @property
    def ended(self) -> bool:
        """True once a video file played to its end (without ``loop``)."""
        raise NotImplementedError

    @property
    def stats(self) -> CaptureStats:
        raise NotImplementedError
