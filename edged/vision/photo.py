"""Finding faces in a still photo for a fraction of a full scan, with the full scan's boxes.

The photo detector (`IMAGE_DETECTOR`: a fine 1.05 scale step, the image padded by half
its side) spends most of its time on windows no face is near. `PhotoDetector` scans in
two passes over the same padded, downscaled pixels the full scan reads:

1. **Find**: a coarse scan (scale step 1.4, one neighbour) on an octave pyramid, each
   octave padded only as much as its largest face needs. Every window size is tried on
   an image at most twice the window, so no scale runs at OpenCV's dense one-pixel step.
2. **Refine**: around each candidate (grown by 0.3 of its side, sizes within 1.3x),
   a scale step of 1.1 and two neighbours on the full scan's pixels: windows on a face
   pass most cascade stages, so the few scales tried there are most of the cost.

When no face is confirmed, the full scan runs: a weak face the coarse pass missed is
still found, so the face-found rate is the full scan's (the price: a photo with no face
costs the full scan plus the coarse one). Boxes match the full scan's to an IoU of
~0.97 (median); `make bench` and tests/test_photo_detect.py compare them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2

from edged.vision.detector import (
    IMAGE_DETECTOR,
    Box,
    DetectorConfig,
    FaceDetector,
    Gray,
    pixels,
)

# The frontal cascade's window (haarcascade_frontalface_default.xml: 24x24).
WINDOW = 24


@dataclass(frozen=True)
class FindConfig:
    """The coarse pass: ``scale_factor`` and ``min_neighbors`` of the octave scans;
    ``margin`` (a fraction of a candidate's side) and ``size_range`` (smallest and
    largest side as a multiple of it) bound the refine scan around each candidate, which
    uses ``refine_*`` (chosen on the dataset and 640x480 scenes: same faces found, box
    IoU ~0.97, --eval unchanged; see notes in the commit)."""

    scale_factor: float = 1.4
    min_neighbors: int = 1
    margin: float = 0.3
    size_range: float = 1.3
    refine_scale_factor: float = 1.1
    refine_min_neighbors: int = 2


@dataclass(frozen=True, slots=True)
class _Padded:
    """The full scan's pixels: the image downscaled by ``scale`` then padded by ``pad``."""

    image: Gray
    scale: float
    pad: int
    min_px: int
    height: int
    width: int


class PhotoDetector(FaceDetector):
    """`FaceDetector` for still photos: ``detect`` finds the faces a full scan with
    ``config`` finds, at a fraction of the cost (see the module). Video keeps
    `FaceDetector`: a tracker already scans only near known faces."""

    def __init__(
        self,
        config: DetectorConfig | None = None,
        cascade: Path | None = None,
        find: FindConfig | None = None,
    ) -> None:
        super().__init__(config or IMAGE_DETECTOR, cascade)
        self.find = find or FindConfig()

    def detect(self, gray: Gray) -> list[Box]:
        """Every face of a still image, largest first, in image pixels."""
        padded = self._padded(gray)
        ph, pw = padded.image.shape[:2]
        regions = merge_regions(self._candidates(padded), self.find, (pw, ph))
        boxes: list[Box] = []
        for region, lo, hi in regions:
            boxes += self._refine(padded, region, lo, hi)
        if not boxes:  # nothing confirmed: the coarse pass may have missed a weak face
            return super().detect(gray)
        return _to_image(boxes, padded)

    def _padded(self, gray: Gray) -> _Padded:
        """What the full scan reads: ``prepare``'s downscale, then the config's padding."""
        scan = self.prepare(gray)
        img = scan.image
        pad = round(self.config.pad * max(img.shape[:2])) if self.config.pad > 0 else 0
        if pad:
            img = pixels(cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
        min_px = max(1, int(min(scan.height, scan.width) * scan.scale * self.config.min_size))
        return _Padded(img, scan.scale, pad, min_px, scan.height, scan.width)

    def _candidates(self, p: _Padded) -> list[Box]:
        """Coarse hits in padded pixels: octave k tries sides WINDOW*2^k up to twice that,
        on the image halved k times and padded by half its largest side (at most ``pad``)."""
        ph, pw = p.image.shape[:2]
        h, w = ph - 2 * p.pad, pw - 2 * p.pad
        smallest = max(WINDOW, p.min_px)
        out: list[Box] = []
        k = 0
        while WINDOW << k <= min(ph, pw):
            f = 1 << k
            top = 2 * WINDOW * f  # largest side of this octave, padded pixels
            if top <= smallest:
                k += 1
                continue
            m = min(p.pad, math.ceil(top / 2))
            view = p.image[p.pad - m : p.pad + h + m, p.pad - m : p.pad + w + m]
            vh, vw = view.shape[:2]
            size = (max(1, vw // f), max(1, vh // f))
            small = view if f == 1 else cv2.resize(view, size, interpolation=cv2.INTER_AREA)
            lo = max(WINDOW, math.ceil(smallest / f))
            last = (WINDOW << (k + 1)) > min(ph, pw)
            hi = 0 if last else 2 * WINDOW
            if lo < min(size) and (hi == 0 or lo < hi):
                hits = self._cascade.detectMultiScale(
                    small,
                    scaleFactor=self.find.scale_factor,
                    minNeighbors=self.find.min_neighbors,
                    minSize=(lo, lo),
                    maxSize=(hi, hi),
                )
                ox = oy = p.pad - m
                sx, sy = vw / size[0], vh / size[1]
                for x, y, bw, bh in hits:
                    out.append(
                        Box(ox + round(x * sx), oy + round(y * sy), round(bw * sx), round(bh * sy))
                    )
            k += 1
        return out

    def _refine(self, p: _Padded, region: Box, lo: int, hi: int) -> list[Box]:
        """One region of the padded image scanned with ``refine_*`` (padded pixels)."""
        view = p.image[region.y : region.y + region.h, region.x : region.x + region.w]
        lo = max(lo, p.min_px)
        if hi >= min(view.shape[:2]):
            hi = 0
        found = self._cascade.detectMultiScale(
            view,
            scaleFactor=self.find.refine_scale_factor,
            minNeighbors=self.find.refine_min_neighbors,
            minSize=(lo, lo),
            maxSize=(hi, hi),
        )
        return [Box(region.x + int(x), region.y + int(y), int(w), int(h)) for x, y, w, h in found]


def merge_regions(
    candidates: list[Box], find: FindConfig, bounds: tuple[int, int] | None = None
) -> list[tuple[Box, int, int]]:
    """Each candidate grown by ``margin`` of its side, overlapping ones merged: (region,
    smallest side, largest side) to refine; ``bounds`` (w, h) clips the regions."""
    regions: list[tuple[Box, int, int]] = []
    for c in sorted(candidates, key=lambda b: b.area, reverse=True):
        m = round(find.margin * max(c.w, c.h))
        box = _clip(Box(c.x - m, c.y - m, c.w + 2 * m, c.h + 2 * m), bounds)
        lo = math.floor(min(c.w, c.h) / find.size_range)
        hi = math.ceil(max(c.w, c.h) * find.size_range)
        merged = True
        while merged:  # a union may reach a region it did not overlap before
            merged = False
            for i, (r, rlo, rhi) in enumerate(regions):
                if _overlap(box, r):
                    box, lo, hi = _union(box, r), min(lo, rlo), max(hi, rhi)
                    regions.pop(i)
                    merged = True
                    break
        if box.w > 0 and box.h > 0:
            regions.append((box, lo, hi))
    return regions


def _clip(b: Box, bounds: tuple[int, int] | None) -> Box:
    if bounds is None:
        return b
    x0, y0 = max(0, b.x), max(0, b.y)
    x1, y1 = min(bounds[0], b.x + b.w), min(bounds[1], b.y + b.h)
    return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def _to_image(found: list[Box], p: _Padded) -> list[Box]:
    """Boxes in padded pixels as image boxes (clipped), largest first: `detect`'s mapping."""
    s = p.scale
    boxes: list[Box] = []
    for b in found:
        x0 = max(0, round((b.x - p.pad) / s))
        y0 = max(0, round((b.y - p.pad) / s))
        x1 = min(p.width, round((b.x + b.w - p.pad) / s))
        y1 = min(p.height, round((b.y + b.h - p.pad) / s))
        if x1 > x0 and y1 > y0:
            boxes.append(Box(x0, y0, x1 - x0, y1 - y0))
    boxes.sort(key=lambda b: b.area, reverse=True)
    return boxes


def _overlap(a: Box, b: Box) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def _union(a: Box, b: Box) -> Box:
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    return Box(x0, y0, max(a.x + a.w, b.x + b.w) - x0, max(a.y + a.h, b.y + b.h) - y0)
