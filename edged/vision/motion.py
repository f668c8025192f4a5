"""Where the picture changed: a cheap gate in front of the face detector.

An empty room is edged's usual view, and scanning it for faces on every frame is its most
expensive habit. Frigate's answer, in edged's terms: a small, blurred grayscale copy of the
frame is compared with a running average of past frames; the changed cells become regions
(merged, padded to face scale) and only those need a face scan. Pure: numpy and OpenCV,
no I/O, no clock. Every buffer is allocated once per frame size, so one `MotionGate`
per thread (per camera).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edged.vision.detector import Box, Gray


@dataclass(frozen=True)
class MotionConfig:
    """How the gate looks (sizes in *working* pixels are those of the small copy).

    ``width``: the small copy's width (at 160 a working pixel is 4x4 pixels of a 640x480
    frame; narrower frames are used as they are). ``blur``: Gaussian kernel side (odd),
    which with the downscale is what keeps sensor noise below ``threshold`` (grey levels
    of difference from the background that make a pixel "changed"). ``alpha``: how fast the
    background follows the picture (per frame; at 0.05 and 5 fps a thing that arrives and
    stays still is background after ~6 s). ``dilate``: 3x3 dilations that join the parts
    of one moving thing. ``min_area``: changed blobs whose bounding box is smaller (working
    pixels, after the dilation) are ignored (a fly, a flickering pixel). ``pad`` (every edge) and
    ``min_side`` (each side at least), as fractions of the frame's shorter side: a region
    is grown so that a face whose edge moved lies inside it. ``max_regions``: more than
    this and the regions are reported as their one bounding box. ``global_ratio``: when
    this share of the frame changed at once (lights, auto-exposure, a covered lens) the
    background is learned afresh and no regions are reported.
    """

    width: int = 160
    blur: int = 5
    threshold: int = 15
    alpha: float = 0.05
    dilate: int = 1
    min_area: int = 20
    pad: float = 0.1
    min_side: float = 0.25
    max_regions: int = 6
    global_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.width < 8 or self.blur < 1 or self.blur % 2 == 0:
            raise ValueError("motion: width >= 8 and an odd blur kernel >= 1")
        if not (0.0 < self.alpha <= 1.0 and 0.0 < self.global_ratio <= 1.0):
            raise ValueError("motion: alpha and global_ratio must lie in (0, 1]")
        if not 0 < self.threshold < 256 or self.max_regions < 1:
            raise ValueError("motion: threshold in 1..255 and max_regions >= 1")
        if min(self.dilate, self.min_area, self.pad, self.min_side) < 0:
            raise ValueError("motion: dilate, min_area, pad and min_side cannot be negative")


@dataclass(frozen=True, slots=True)
class Motion:
    """What changed in one frame.

    ``regions``: where, in frame pixels, largest first (empty: nothing moved, or a global
    change). ``ratio``: the share of the frame that changed (1.0 on a frame that taught
    the background from scratch). ``global_change``: the background was just learned
    afresh from this frame (the first frame, a new frame size, or most of the picture
    changed at once): nothing is known about what moved, so the caller scans the whole
    frame once. Reported once per change: frames that go on changing wholesale (an
    exposure ramp) keep relearning quietly.
    """

    regions: tuple[Box, ...]
    ratio: float
    global_change: bool

    @property
    def moved(self) -> bool:
        """Whether any region needs a look."""
        return bool(self.regions)


_NONE = Motion((), 0.0, global_change=False)


@dataclass(slots=True)
class _Buffers:
    """The gate's working arrays for one frame size (reused from frame to frame)."""

    shape: tuple[int, int]  # the full frame's (h, w)
    halves: list[Gray]  # the frame halved, and halved again, down to about ``small``
    small: Gray
    blurred: Gray
    background: npt.NDArray[np.float32]
    background8: Gray
    diff: Gray
    mask: Gray
    dilated: Gray

    @classmethod
    def for_frame(cls, shape: tuple[int, int], width: int) -> _Buffers:
        h, w = shape
        sw = min(width, w)
        sh = max(1, round(h * sw / w))

        def u8() -> Gray:
            return np.zeros((sh, sw), np.uint8)

        halves: list[Gray] = []  # every step but the last, which writes ``small``
        cw, ch = w, h
        while cw // 2 > sw and ch >= 4:
            cw, ch = cw // 2, ch // 2
            halves.append(np.zeros((ch, cw), np.uint8))
        zeros = np.zeros((sh, sw), np.float32)
        return cls(shape, halves, u8(), u8(), zeros, u8(), u8(), u8(), u8())

    def shrink(self, gray: Gray) -> None:
        """``gray`` averaged down into ``small``. Halving steps, because OpenCV's area
        resize by exactly 2 is a fast path: 640 -> 320 -> 160 costs a sixth of one
        resize by 4, for the same averages."""
        src = gray
        for half in self.halves:
            cv2.resize(src, half.shape[::-1], dst=half, interpolation=cv2.INTER_AREA)
            src = half
        cv2.resize(src, self.small.shape[::-1], dst=self.small, interpolation=cv2.INTER_AREA)


def _span(lo: float, hi: float, pad: float, least: float, limit: int) -> tuple[int, int]:
    """One side of a region: padded, at least ``least`` long, inside ``0..limit``."""
    lo, hi = max(0.0, lo - pad), min(float(limit), hi + pad)
    short = least - (hi - lo)
    if short > 0:  # grow around the centre, then slide back inside the frame
        lo, hi = lo - short / 2, hi + short / 2
        if lo < 0:
            lo, hi = 0.0, hi - lo
        if hi > limit:
            lo, hi = lo - (hi - limit), float(limit)
        lo = max(0.0, lo)
    return int(lo), min(limit, int(np.ceil(hi)))


def _touch(a: Box, b: Box) -> bool:
    return a.x <= b.x + b.w and b.x <= a.x + a.w and a.y <= b.y + b.h and b.y <= a.y + a.h


def _union(a: Box, b: Box) -> Box:
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    return Box(x0, y0, max(a.x + a.w, b.x + b.w) - x0, max(a.y + a.h, b.y + b.h) - y0)


def merge(boxes: list[Box]) -> list[Box]:
    """Boxes that touch or overlap joined into their bounding box, until none touch.

    One region per moving thing: a face split over two blobs (eyes, mouth) is scanned once.
    """
    out = list(boxes)
    joined = True
    while joined:
        joined = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                if _touch(out[i], out[j]):
                    out[i] = _union(out[i], out.pop(j))
                    joined = True
                    break
            if joined:
                break
    return out


class MotionGate:
    """A running background for one camera; `update` once per frame, in order."""

    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig()
        self._buf: _Buffers | None = None
        self._learning = False  # the last frame was a global change: relearn quietly
        self._kernel = np.ones((3, 3), np.uint8)

    def reset(self) -> None:
        """Forget the background: the next frame is learned afresh (a global change)."""
        self._buf = None

    def update(self, gray: Gray) -> Motion:
        """What changed in ``gray`` (one 8-bit channel) since the background."""
        if gray.ndim != 2:
            raise ValueError(f"motion: one 8-bit channel expected, got shape {gray.shape}")
        cfg, buf = self.config, self._buf
        shape = (gray.shape[0], gray.shape[1])
        fresh = buf is None or buf.shape != shape
        if fresh or buf is None:  # (``or``: for the type checker)
            buf = self._buf = _Buffers.for_frame(shape, cfg.width)
        buf.shrink(gray)
        cv2.GaussianBlur(buf.small, (cfg.blur, cfg.blur), 0, dst=buf.blurred)
        if fresh:
            return self._relearn(buf, report=True)
        cv2.convertScaleAbs(buf.background, dst=buf.background8)
        cv2.absdiff(buf.blurred, buf.background8, dst=buf.diff)
        cv2.threshold(buf.diff, cfg.threshold, 255, cv2.THRESH_BINARY, dst=buf.mask)
        ratio = cv2.countNonZero(buf.mask) / buf.mask.size
        if ratio >= cfg.global_ratio:
            return self._relearn(buf, report=not self._learning, ratio=ratio)
        self._learning = False
        regions = self._regions(buf) if ratio else []
        cv2.accumulateWeighted(buf.blurred, buf.background, cfg.alpha)
        return Motion(tuple(regions), ratio, global_change=False) if regions or ratio else _NONE

    def _relearn(self, buf: _Buffers, *, report: bool, ratio: float = 1.0) -> Motion:
        """The background becomes this frame (no regions: everything changed)."""
        np.copyto(buf.background, buf.blurred)
        self._learning = True
        return Motion((), ratio, global_change=report)

    def _regions(self, buf: _Buffers) -> list[Box]:
        """The changed blobs big enough to matter, as padded, merged frame boxes."""
        cfg = self.config
        cv2.dilate(buf.mask, self._kernel, dst=buf.dilated, iterations=cfg.dilate)
        # Outer contours, not connected components: a tenth of the cost on a small mask.
        contours, _ = cv2.findContours(buf.dilated, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        h, w = buf.shape
        sh, sw = buf.small.shape
        fx, fy = w / sw, h / sh
        side = min(h, w)
        pad, least = cfg.pad * side, cfg.min_side * side
        boxes: list[Box] = []
        for contour in contours:
            x, y, bw, bh = cv2.boundingRect(contour)
            if bw * bh < cfg.min_area:
                continue
            x0, x1 = _span(x * fx, (x + bw) * fx, pad, least, w)
            y0, y1 = _span(y * fy, (y + bh) * fy, pad, least, h)
            boxes.append(Box(x0, y0, x1 - x0, y1 - y0))
        boxes = merge(boxes)
        if len(boxes) > cfg.max_regions:
            whole = boxes[0]
            for b in boxes[1:]:
                whole = _union(whole, b)
            boxes = [whole]
        boxes.sort(key=lambda b: b.area, reverse=True)
        return boxes
