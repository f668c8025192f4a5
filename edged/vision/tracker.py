"""Following faces from frame to frame, so most video frames need only a cheap scan.

A face rarely jumps between two frames a fifth of a second apart, so most frames only
scan a padded region around each face seen last, at face sizes near the last one.

Without a motion gate (``detector.motion = false``), the rest of the frame is scanned for
newcomers every ``full_every`` frames (with the followed faces painted out), a full scan
runs at once whenever a followed face is not found where it was, and a frame with no
face gets a full scan: an empty room costs a full scan per frame.

With a `MotionGate`, a scan goes only where the picture changed:

- followed faces keep their region scans; one that is lost gets one wider look around
  where it was (a Haar miss on one frame is common), then it is dropped;
- each motion region outside the followed faces gets a region scan for new faces;
- nothing moved and no face followed: no scan at all (the frame is not even downscaled);
- whatever happens, a full scan every ``full_scan_every`` frames, split by face size over
  ``full_scan_parts`` frames so no single frame pays for all of it: a face that arrived
  unseen (turned away, then still) is still found;
- a global change (lights, auto-exposure: most of the frame changed at once) resets the
  gate's background and costs one full scan, not a storm of region scans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edged.vision.detector import Box, FaceDetector, Gray, Scan
from edged.vision.motion import Motion, MotionGate

# OpenCV's frontal cascade looks through a 24x24 window; scale level j is 24 * f**j.
CASCADE_WINDOW = 24
NEVER = -(1 << 30)  # the frame a face never scanned was "last scanned" in
MAX_BARREN = 6  # regions remembered as faceless (as many as the gate reports at most)


@dataclass(frozen=True)
class TrackConfig:
    """Region-of-interest tracking for video.

    ``full_every``: without motion gating, look for new faces at least every this many
    frames (so a new face is found within that many frames); ``pad``: the region around a
    face, as a fraction of its side on every edge (how far it may move between two
    frames); ``grow`` and ``shrink``: how much larger or smaller than last time it may
    appear; ``hold``: a box that moved or resized by less than this fraction of its side
    keeps its last position (a region scan answers a few pixels apart from frame to frame
    even for a still face, and the expression must not flicker with it).

    With a motion gate: ``full_scan_every``: frames between the starts of two full scans
    (``detector.full_scan_interval`` x fps); ``full_scan_parts``: the frames one full
    scan is spread over; ``lost_pad``: the wider look around a face lost this frame;
    ``verify_every``: a followed face nothing moved near keeps its box, unscanned, for up
    to this many frames; ``barren_every``: motion that goes on where no face was found (a
    TV, a swinging lamp) is looked at only every this many frames.
    """

    full_every: int = 5
    pad: float = 0.5
    grow: float = 1.25
    shrink: float = 0.8
    hold: float = 0.06
    full_scan_every: int = 25
    full_scan_parts: int = 3
    lost_pad: float = 1.0
    verify_every: int = 5
    barren_every: int = 5

    def __post_init__(self) -> None:
        counts = (self.full_every, self.full_scan_every, self.full_scan_parts)
        if min(*counts, self.verify_every, self.barren_every) < 1:
            raise ValueError("track: every count of frames or parts must be >= 1")


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box: 1.0 when one box holds the other."""
    ix = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    iy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if ix <= 0 or iy <= 0:
        return 0.0
    return ix * iy / min(a.area, b.area)


def _within(inner: Box, outer: Box) -> bool:
    return (
        inner.x >= outer.x
        and inner.y >= outer.y
        and inner.x + inner.w <= outer.x + outer.w
        and inner.y + inner.h <= outer.y + outer.h
    )


def _touch(a: Box, b: Box) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def _iou(a: Box, b: Box) -> float:
    ix = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    iy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return inter / (a.area + b.area - inter)


def _around(b: Box, pad: float, h: int, w: int) -> Box:
    """``b`` grown by ``pad`` of its longer side on every edge, clipped to the frame."""
    p = round(max(b.w, b.h) * pad)
    x0, y0 = max(0, b.x - p), max(0, b.y - p)
    x1, y1 = min(w, b.x + b.w + p), min(h, b.y + b.h + p)
    return Box(x0, y0, x1 - x0, y1 - y0)


def size_bands(
    scan: Scan, min_size: float, scale_factor: float, parts: int
) -> list[tuple[int, int]]:
    """A full scan's face sizes (frame pixels) cut into ``parts`` bands of similar cost.

    The cascade's cost at scale level j falls as ``scale_factor ** -2j`` (fewer window
    positions), so the small faces of level 0 cost about a third of the whole scan: the
    cut points sit where the running cost crosses each 1/parts, between two levels. The
    last band has no upper limit (0).
    """
    s = scan.scale
    short = min(scan.height, scan.width) * s  # scan pixels
    smallest = max(float(CASCADE_WINDOW), short * min_size)
    levels = max(1, int(math.log(max(short / smallest, 1.0), scale_factor)) + 1)
    sizes = [smallest * scale_factor**j for j in range(levels)]
    costs = [scale_factor ** (-2 * j) for j in range(levels)]
    total = sum(costs)
    bands: list[tuple[int, int]] = []
    lo, run, part = 0, 0.0, 1
    for j, c in enumerate(costs):
        run += c
        if part < parts and run >= total * part / parts and j + 1 < levels:
            edge = sizes[j] * math.sqrt(scale_factor)  # between level j and j + 1
            bands.append((lo, math.floor(edge / s)))
            lo, part = math.floor(edge / s) + 1, part + 1
    bands.append((lo, 0))
    return bands


class FaceTracker:
    """A `FaceDetector` that remembers the last faces and looks for them nearby first,
    and, given a `MotionGate`, looks for new ones only where something moved.

    Only for consecutive frames of one scene (video); single images use the detector.
    """

    def __init__(
        self,
        detector: FaceDetector,
        config: TrackConfig | None = None,
        max_faces: int = 5,
        gate: MotionGate | None = None,
    ) -> None:
        self.detector = detector
        self.config = config or TrackConfig()
        self.max_faces = max_faces
        self.gate = gate
        self._boxes: list[Box] = []
        self._since_full = 0
        self._shape: tuple[int, ...] = ()
        self._part = 0  # the next part of a split full scan; 0: none under way
        self._bands: list[tuple[int, int]] = []
        self._checked: dict[Box, int] = {}  # followed face -> frame it was last scanned
        self._barren: list[tuple[Box, int]] = []  # (motion region, frame) that held no face
        self.still: list[Box] = []  # faces kept this frame without a scan (nothing moved)
        self.frames = 0
        self.motion_frames = 0  # frames the gate saw something move in (or a global change)
        self.full_scans = 0  # complete full scans (a split one counts once, when it ends)
        self.region_scans = 0
        self.new_face_scans = 0

    def reset(self) -> None:
        """Forget the tracked faces: the next frame gets a full scan."""
        self._boxes = []
        self._part = 0
        self._checked = {}
        self._barren = []
        self.still = []
        if self.gate is not None:
            self.gate.reset()

    @property
    def motion_ratio(self) -> float:
        """The share of frames with motion so far (0.0 before the first frame)."""
        return self.motion_frames / self.frames if self.frames else 0.0

    def _full(self, scan: Scan) -> list[Box]:
        self.full_scans += 1
        self._since_full = 0
        self._part = 0
        self._boxes = self.detector.scan(scan)[: self.max_faces]
        self._checked = dict.fromkeys(self._boxes, self.frames)
        return self._boxes

    def _follow(self, scan: Scan, b: Box, shape: tuple[int, ...]) -> Box | None:
        """Where the face ``b`` is now, near where it was; None if not found there."""
        cfg = self.config
        side = max(b.w, b.h)
        region = _around(b, cfg.pad, shape[0], shape[1])
        hits = self.detector.scan(scan, region, (round(side * cfg.shrink), round(side * cfg.grow)))
        self.region_scans += 1
        if not hits:
            return None
        cx, cy = b.x + b.w / 2, b.y + b.h / 2
        best = min(hits, key=lambda c: (c.x + c.w / 2 - cx) ** 2 + (c.y + c.h / 2 - cy) ** 2)
        still = cfg.hold * side
        if (
            abs(best.x + best.w / 2 - cx) <= still
            and abs(best.y + best.h / 2 - cy) <= still
            and abs(max(best.w, best.h) - side) <= still
        ):
            return b
        return best

    def detect(self, gray: Gray) -> list[Box]:
        """Faces in ``gray``, largest first (as `FaceDetector.detect`)."""
        self.frames += 1
        if self.gate is not None:
            return self._detect_gated(gray, self.gate.update(gray))
        cfg = self.config
        self._since_full += 1
        scan = self.detector.prepare(gray)  # once per frame, shared by every scan below
        if not self._boxes or gray.shape != self._shape:
            self._shape = gray.shape
            return self._full(scan)
        found: list[Box] = []
        for b in self._boxes:
            best = self._follow(scan, b, gray.shape)
            if best is None:
                # Lost (moved far, turned away, or gone): rescan this very frame.
                return self._full(scan)
            if not any(_overlap(best, f) > 0.5 for f in found):
                found.append(best)
        if self._since_full >= cfg.full_every:
            # Time to look for newcomers: the rest of the frame, with the faces we
            # follow painted out (they cost most of a full scan and were just found).
            self._since_full = 0
            self.new_face_scans += 1
            found.extend(self.detector.scan(scan, exclude=found))
        return self._keep(found)

    def _keep(self, found: list[Box]) -> list[Box]:
        found.sort(key=lambda bx: bx.area, reverse=True)
        self._boxes = found[: self.max_faces]
        return self._boxes

    # -- with the motion gate ----------------------------------------------------------------

    def _detect_gated(self, gray: Gray, motion: Motion) -> list[Box]:
        cfg = self.config
        if motion.moved or motion.global_change:
            self.motion_frames += 1
        self._since_full += 1
        self.still = []
        if motion.global_change or gray.shape != self._shape:
            # The first frame, a new size, or the lights: nothing is known; look everywhere.
            self._shape = gray.shape
            self._barren = []
            return self._full(self.detector.prepare(gray))
        due = self._part > 0 or self._since_full >= cfg.full_scan_every
        h, w = gray.shape[:2]
        followed = [_around(b, cfg.pad, h, w) for b in self._boxes]
        stay = [
            not due and self._may_stay(b, f, motion)
            for b, f in zip(self._boxes, followed, strict=True)
        ]
        looks = [
            r
            for r in motion.regions
            if not any(_within(r, f) for f in followed) and not self._skip_barren(r)
        ]
        if all(stay) and not looks and not due:
            self.still = list(self._boxes)
            return self._boxes  # a still room, with or without still faces: no scan
        scan = self.detector.prepare(gray)
        found, searched = self._follow_all(scan, stay, gray.shape)
        for r in looks:
            if not any(_within(r, s) for s in searched):
                self.new_face_scans += 1
                self._add(found, self.detector.scan(scan, r, exclude=found), r)
        if due:
            self._add(found, self._full_part(scan, found))
        return self._keep(found)

    def _may_stay(self, b: Box, followed: Box, motion: Motion) -> bool:
        """A followed face that nothing moved near is where it was: no scan, except a
        check every `verify_every` frames."""
        return self.frames - self._checked.get(b, NEVER) < self.config.verify_every and not any(
            _touch(r, followed) for r in motion.regions
        )

    def _follow_all(
        self, scan: Scan, stay: list[bool], shape: tuple[int, ...]
    ) -> tuple[list[Box], list[Box]]:
        """The followed faces now (kept, found nearby, or found by a wider look), and the
        regions that were searched at every face size on the way."""
        found: list[Box] = []
        searched: list[Box] = []
        checked: dict[Box, int] = {}
        for b, kept in zip(self._boxes, stay, strict=True):
            best: Box | None = b if kept else self._follow(scan, b, shape)
            if best is None:
                # A miss: one look around where it was, at every size; else let it go.
                region = _around(b, self.config.lost_pad, shape[0], shape[1])
                self.region_scans += 1
                searched.append(region)
                hits = self.detector.scan(scan, region, exclude=found)
                best = hits[0] if hits else None
            if best is not None and not any(_overlap(best, f) > 0.5 for f in found):
                found.append(best)
                checked[best] = self._checked.get(b, NEVER) if kept else self.frames
                if kept:
                    self.still.append(b)
        self._checked = checked
        return found, searched

    def _add(self, found: list[Box], hits: list[Box], region: Box | None = None) -> None:
        """New faces from a scan (of ``region``, or a full-scan part) join ``found``."""
        if region is not None:
            self.region_scans += 1
            self._note_barren(region, bool(hits))
        for c in hits:
            if not any(_overlap(c, f) > 0.5 for f in found):
                found.append(c)
                self._checked[c] = self.frames

    def _skip_barren(self, r: Box) -> bool:
        """Whether ``r`` is much like a region that held no face a few frames ago (a TV,
        a swinging lamp: motion that goes on in one place): scanned every
        ``barren_every`` frames only."""
        return any(
            _iou(r, b) >= 0.5 and self.frames - at < self.config.barren_every
            for b, at in self._barren
        )

    def _note_barren(self, r: Box, faces: bool) -> None:
        self._barren = [(b, at) for b, at in self._barren if _iou(r, b) < 0.5]
        if not faces:
            self._barren.append((r, self.frames))
            del self._barren[:-MAX_BARREN]

    def _full_part(self, scan: Scan, found: list[Box]) -> list[Box]:
        """The next part of the periodic full scan (known faces painted out)."""
        if self._part == 0:
            d = self.detector.config
            self._bands = size_bands(scan, d.min_size, d.scale_factor, self.config.full_scan_parts)
        band = self._bands[self._part]
        hits = self.detector.scan(
            scan, sizes=band if band[1] else (band[0], 1 << 30), exclude=found
        )
        self._part += 1
        if self._part >= len(self._bands):
            self._part = 0
            self._since_full = 0
            self.full_scans += 1
        return hits
