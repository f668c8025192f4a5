"""The live view: annotated JPEGs of the newest frame for every viewer (MJPEG).

Frames are copied and encoded only while someone watches, once per frame for all
viewers, on an encoder thread of its own: the frame loop pays one check per frame with
nobody watching and one buffer copy with viewers; it never waits for the encoder (a frame
offered while the previous one is still being encoded is dropped, not queued).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from edged.daemon.workers import FatalHandler, Worker
from edged.vision.draw import draw_faces
from edged.vision.pipeline import FrameResult

log = logging.getLogger(__name__)


class Busy(Exception):
    """Every viewer slot is taken."""


class LiveView:
    """Viewer slots, the newest JPEG, and the encoder thread ``edged-web-encode``."""

    def __init__(
        self,
        max_viewers: int,
        max_fps: float,
        quality: int,
        *,
        on_fatal: FatalHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_viewers = max_viewers
        self.interval = 1.0 / max_fps
        self.quality = quality
        self._clock = clock
        self._on_fatal = on_fatal
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._viewers = 0
        self._busy = False  # the encoder holds the buffer
        self._next_at = 0.0
        self._buf: np.ndarray | None = None
        self._faces: FrameResult | None = None
        self._jpeg: bytes | None = None
        self._seq = 0
        self._worker: Worker | None = None
        self.encoded = 0  # JPEGs made
        self.skipped = 0  # frames offered while the encoder was busy

    # -- the frame loop's side ----------------------------------------------------------

    @property
    def viewers(self) -> int:
        return self._viewers

    def offer(self, image: np.ndarray, result: FrameResult) -> None:
        """A processed frame; kept (copied) only if someone watches and one is due."""
        if not self._viewers:  # nobody watches: the whole cost of the live view
            return
        now = self._clock()
        # Up to half an interval early still counts: with stream_fps = loop.fps, a frame a
        # few ms early must not be refused (a third of them were). Never above stream_fps.
        if now < self._next_at - 0.5 * self.interval:
            return
        if self._busy:
            self.skipped += 1
            return
        buf = self._buf
        if buf is None or buf.shape != image.shape or buf.dtype != image.dtype:
            buf = self._buf = np.empty_like(image)
        np.copyto(buf, image)  # the grabber reuses its buffer: the encoder draws on ours
        self._faces = result
        self._next_at = max(self._next_at, now - 0.5 * self.interval) + self.interval
        self._busy = True
        self._wake.set()

    def blank(self) -> None:
        """No picture from now on (camera offline, detection off): drop the last JPEG."""
        with self._cond:
            self._jpeg = None
            self._seq += 1
            self._cond.notify_all()

    # -- viewers ------------------------------------------------------------------------

    def join(self) -> None:
        """Take a viewer slot; `Busy` when all are taken."""
        with self._cond:
            if self._viewers >= self.max_viewers:
                raise Busy
            self._viewers += 1

    def leave(self) -> None:
        with self._cond:
            self._viewers = max(0, self._viewers - 1)

    def next_jpeg(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """The first JPEG newer than sequence number ``after`` (waits up to ``timeout``);
        ``(seq, None)`` when there is no picture now (or on stop, or timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._stop.is_set(), timeout)
            return self._seq, self._jpeg

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the encoder thread -------------------------------------------------------------

    def start(self) -> None:
        self._worker = Worker("edged-web-encode", self._run, on_fatal=self._on_fatal)
        self._worker.start()

    def stop(self, timeout: float = 0.5) -> None:
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.stop()
            self._worker.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._wake.wait(0.5):
                    continue
                self._wake.clear()
                if self._busy:
                    self._encode()
        finally:
            self._busy = False  # a restarted encoder must find the buffer free

    def _encode(self) -> None:
        buf, result = self._buf, self._faces
        try:
            if buf is None or result is None:
                return
            draw_faces(buf, result.faces)
            ok, jpeg = cv2.imencode(".jpg", buf, (cv2.IMWRITE_JPEG_QUALITY, self.quality))
        finally:
            self._busy = False
        if not ok:
            log.warning("live view: a frame could not be encoded as JPEG")
            return
        data = jpeg.tobytes()
        with self._cond:
            self._jpeg = data
            self._seq += 1
            self.encoded += 1
            self._cond.notify_all()
