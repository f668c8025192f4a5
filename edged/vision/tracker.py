"""Following faces from frame to frame, so most video frames need only a cheap scan.

A face rarely jumps between two frames a fifth of a second apart, so most frames only
scan a padded region around each face seen last, at face sizes near the last one. Every
``full_every`` frames the rest of the frame is scanned for newcomers (with the followed
faces painted out, which makes that scan nearly as cheap as one of an empty room), and a
full scan runs at once whenever a followed face is not found where it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from edged.vision.detector import Box, FaceDetector, Gray, Scan


@dataclass(frozen=True)
class TrackConfig:
    """Region-of-interest tracking for video.

    ``full_every``: look for new faces at least every this many frames (so a new
    face is found within that many frames); ``pad``: the region around a face, as a fraction
    of its side on every edge (how far it may move between two frames); ``grow`` and
    ``shrink``: how much larger or smaller than last time it may appear; ``hold``: a
    box that moved or resized by less than this fraction of its side keeps its last
    position (a region scan answers a few pixels apart from frame to frame even for a
    still face, and the expression must not flicker with it).
    """

    full_every: int = 5
    pad: float = 0.5
    grow: float = 1.25
    shrink: float = 0.8
    hold: float = 0.06


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box: 1.0 when one box holds the other."""
    ix = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    iy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if ix <= 0 or iy <= 0:
        return 0.0
    return ix * iy / min(a.area, b.area)


class FaceTracker:
    """A `FaceDetector` that remembers the last faces and looks for them nearby first.

    Only for consecutive frames of one scene (video); single images use the detector.
    """

    def __init__(
        self, detector: FaceDetector, config: TrackConfig | None = None, max_faces: int = 5
    ) -> None:
        self.detector = detector
        self.config = config or TrackConfig()
        self.max_faces = max_faces
        self._boxes: list[Box] = []
        self._since_full = 0
        self._shape: tuple[int, ...] = ()
        self.full_scans = 0
        self.region_scans = 0
        self.new_face_scans = 0

    def reset(self) -> None:
        """Forget the tracked faces: the next frame gets a full scan."""
        self._boxes = []

    def _full(self, scan: Scan) -> list[Box]:
        self.full_scans += 1
        self._since_full = 0
        self._boxes = self.detector.scan(scan)[: self.max_faces]
        return self._boxes

    def detect(self, gray: Gray) -> list[Box]:
        """Faces in ``gray``, largest first (as `FaceDetector.detect`)."""
        cfg = self.config
        self._since_full += 1
        scan = self.detector.prepare(gray)  # once per frame, shared by every scan below
        if not self._boxes or gray.shape != self._shape:
            self._shape = gray.shape
            return self._full(scan)
        h, w = gray.shape[:2]
        found: list[Box] = []
        for b in self._boxes:
            side = max(b.w, b.h)
            p = round(side * cfg.pad)
            x0, y0 = max(0, b.x - p), max(0, b.y - p)
            x1, y1 = min(w, b.x + b.w + p), min(h, b.y + b.h + p)
            region = Box(x0, y0, x1 - x0, y1 - y0)
            hits = self.detector.scan(
                scan, region, (round(side * cfg.shrink), round(side * cfg.grow))
            )
            self.region_scans += 1
            if not hits:
                # Lost (moved far, turned away, or gone): rescan this very frame.
                return self._full(scan)
            cx, cy = b.x + b.w / 2, b.y + b.h / 2
            best = min(hits, key=lambda c: (c.x + c.w / 2 - cx) ** 2 + (c.y + c.h / 2 - cy) ** 2)
            still = cfg.hold * side
            if (
                abs(best.x + best.w / 2 - cx) <= still
                and abs(best.y + best.h / 2 - cy) <= still
                and abs(max(best.w, best.h) - side) <= still
            ):
                best = b
            if not any(_overlap(best, f) > 0.5 for f in found):
                found.append(best)
        if self._since_full >= cfg.full_every:
            # Time to look for newcomers: the rest of the frame, with the faces we
            # follow painted out (they cost most of a full scan and were just found).
            self._since_full = 0
            self.new_face_scans += 1
            found.extend(self.detector.scan(scan, exclude=found))
        found.sort(key=lambda bx: bx.area, reverse=True)
        self._boxes = found[: self.max_faces]
        return self._boxes
