"""Finding faces: the frontal Haar cascade on a grayscale frame.

`detect` is the pure part (a prepared frame in, boxes out); `FaceDetector` holds the
cascade and the buffer a frame is downscaled into, once per frame: every region scan
of that frame (see `tracker`) reuses the same downscaled pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from edged.errors import ModelError

if TYPE_CHECKING:
    from edged.settings import DetectorSettings

FRONTAL_CASCADE = "haarcascade_frontalface_default.xml"

# A picture as OpenCV decodes it: 8-bit, (h, w) gray or (h, w, 3|4) BGR(A).
Image = npt.NDArray[np.uint8]
# One 8-bit channel: what the cascade scans and LBPH reads.
Gray = npt.NDArray[np.uint8]


def pixels(mat: cv2.typing.MatLike) -> Image:
    """An OpenCV result as the 8-bit array it is (the same array: no copy for 8-bit input)."""
    return np.asarray(mat, np.uint8)


def cascade_path(name: str = FRONTAL_CASCADE) -> Path:
    """The cascade file that the installed OpenCV wheel ships.

    OpenCV 5.0 wheels ship none (``cv2.data.haarcascades`` is empty): fail clearly then.
    """
    base = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
    path = base / name
    if not path.is_file():
        raise ModelError(
            f"OpenCV {cv2.__version__} ships no Haar cascade {name!r} (looked in {base}); "
            "install opencv-contrib-python-headless 4.x"
        )
    return path


def to_gray(image: Image, out: Gray | None = None) -> Gray:
    """A BGR, BGRA or already-gray image as one 8-bit channel (into ``out`` if given)."""
    if image.ndim == 2:
        return image
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    if out is None:
        return pixels(cv2.cvtColor(image, code))
    return pixels(cv2.cvtColor(image, code, dst=out))


@dataclass(frozen=True, slots=True)
class Box:
    """A face rectangle in frame pixels."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class DetectorConfig:
    """Haar cascade parameters.

    ``min_size`` is a fraction of the shorter frame side; ``max_width`` downscales wide
    frames before the scan (0: never); ``pad`` adds a border of that fraction around the
    image first, so a face that fills a tight crop still has room for the cascade window.
    """

    scale_factor: float = 1.2
    min_neighbors: int = 5
    min_size: float = 0.1
    max_width: int = 0
    pad: float = 0.0

    @classmethod
    def from_settings(cls, d: DetectorSettings) -> DetectorConfig:
        """The daemon's detector (``[detector]`` settings; no padding: video frames)."""
        return cls(d.scale_factor, d.min_neighbors, d.min_size, d.max_width)


# Still photos (training images, `edged detect` on a file): the dataset's photos are
# tight face crops, so pad the image before the scan (room for the cascade window),
# scan a downscaled copy (speed) with a fine scale step and few neighbours (recall).
IMAGE_DETECTOR = DetectorConfig(
    scale_factor=1.05, min_neighbors=3, min_size=0.2, max_width=128, pad=0.5
)


@dataclass(frozen=True, slots=True)
class Scan:
    """A frame prepared for the cascade: ``image`` is the frame downscaled by ``scale``.

    ``owned``: ``image`` is the detector's buffer (may be painted on), not the caller's frame.
    """

    image: Gray
    scale: float
    height: int
    width: int
    owned: bool


def _region_view(scan: Scan, region: Box) -> tuple[Gray, int, int]:
    """The scan's pixels under ``region`` (frame coordinates) and their offset."""
    fh, fw = scan.image.shape[:2]
    s = scan.scale
    sx0, sy0 = max(0, math.floor(region.x * s)), max(0, math.floor(region.y * s))
    sx1 = min(fw, math.ceil((region.x + region.w) * s))
    sy1 = min(fh, math.ceil((region.y + region.h) * s))
    return scan.image[sy0:sy1, sx0:sx1], sx0, sy0


def _paint_out(img: Gray, exclude: Sequence[Box], scale: float, sx0: int, sy0: int) -> None:
    """Fill each known face (grown by a tenth of its side) with its mean grey, in place."""
    for b in exclude:
        m = round(0.1 * max(b.w, b.h))
        x0 = max(0, round((b.x - m) * scale) - sx0)
        y0 = max(0, round((b.y - m) * scale) - sy0)
        x1 = round((b.x + b.w + m) * scale) - sx0
        y1 = round((b.y + b.h + m) * scale) - sy0
        if x1 <= 0 or y1 <= 0:
            continue  # left of or above this region: a negative end would slice from the right
        patch = img[y0:y1, x0:x1]
        if patch.size:
            patch.fill(int(patch.mean()))


def _size_limits(
    scan: Scan, img: Gray, min_size: float, sizes: tuple[int, int] | None
) -> tuple[int, int]:
    """(smallest, largest) window side in scan pixels; largest 0 means no limit."""
    s = scan.scale
    min_px = max(1, int(min(scan.height, scan.width) * s * min_size))
    max_px = 0
    if sizes is not None:
        min_px = max(min_px, int(sizes[0] * s))
        max_px = max(min_px + 1, round(sizes[1] * s))
        if max_px > min(img.shape[:2]):
            max_px = 0
    return min_px, max_px


def detect(
    cascade: cv2.CascadeClassifier,
    scan: Scan,
    config: DetectorConfig,
    *,
    region: Box | None = None,
    sizes: tuple[int, int] | None = None,
    exclude: Sequence[Box] = (),
) -> list[Box]:
    """Faces in a prepared frame, largest first, in frame pixels.

    ``region`` limits the scan to that part of the frame and ``sizes`` (smallest,
    largest face side in frame pixels) to those scales: a tracker looking for a face
    near where it was costs a fraction of a full scan. The downscale factor and the
    ``min_size`` floor stay those of the whole frame, so a face found in a region is
    the face a full scan would find. ``exclude``: faces already known (a tracker's),
    painted flat before the scan and left out of the result; a known face is where
    most of a scan's time goes, so a search for new faces is then nearly as cheap as
    a scan of an empty room.
    """
    sx0 = sy0 = 0
    img = scan.image
    if region is not None:
        img, sx0, sy0 = _region_view(scan, region)
        if img.size == 0:
            return []
    if exclude:
        if not scan.owned:  # never paint the caller's frame
            img = img.copy()
        _paint_out(img, exclude, scan.scale, sx0, sy0)
    pad = 0
    if config.pad > 0:
        pad = round(config.pad * max(img.shape[:2]))
        img = pixels(cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
    min_px, max_px = _size_limits(scan, img, config.min_size, sizes)
    found = cascade.detectMultiScale(
        img,
        scaleFactor=config.scale_factor,
        minNeighbors=config.min_neighbors,
        minSize=(min_px, min_px),
        maxSize=(max_px, max_px),
    )
    return _to_frame(found, scan, sx0 - pad, sy0 - pad, exclude)


def _to_frame(
    found: Sequence[Sequence[int]], scan: Scan, ox: int, oy: int, exclude: Sequence[Box]
) -> list[Box]:
    """Cascade hits (in scan pixels, offset by ``ox``, ``oy``) as frame boxes, largest first."""
    s, w, h = scan.scale, scan.width, scan.height
    boxes: list[Box] = []
    for x, y, bw, bh in found:
        x0 = max(0, round((ox + x) / s))
        y0 = max(0, round((oy + y) / s))
        x1 = min(w, round((ox + x + bw) / s))
        y1 = min(h, round((oy + y + bh) / s))
        if x1 > x0 and y1 > y0:
            box = Box(x0, y0, x1 - x0, y1 - y0)
            if not any(_inside(box, e) for e in exclude):
                boxes.append(box)
    boxes.sort(key=lambda b: b.area, reverse=True)
    return boxes


def _inside(a: Box, b: Box) -> bool:
    """Whether most of ``a`` lies within ``b`` (grown by a tenth of its side)."""
    m = 0.1 * max(b.w, b.h)
    ix = min(a.x + a.w, b.x + b.w + m) - max(a.x, b.x - m)
    iy = min(a.y + a.h, b.y + b.h + m) - max(a.y, b.y - m)
    return ix > 0 and iy > 0 and ix * iy > 0.5 * a.area


class FaceDetector:
    """The cascade plus a scratch buffer for the downscaled frame (no allocation per frame
    once the frame size is stable), so use one instance per thread."""

    def __init__(self, config: DetectorConfig | None = None, cascade: Path | None = None) -> None:
        self.config = config or DetectorConfig()
        path = cascade or cascade_path()
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ModelError(f"cannot load Haar cascade {path}")
        self._small: Gray | None = None

    def scale_for(self, width: int) -> float:
        """The downscale factor a frame this wide is scanned at (``max_width``)."""
        mw = self.config.max_width
        return mw / width if mw and width > mw else 1.0

    def prepare(self, gray: Gray) -> Scan:
        """Downscale the frame once; every scan of this frame then shares these pixels."""
        h, w = gray.shape[:2]
        scale = self.scale_for(w)
        if scale == 1.0:
            return Scan(gray, 1.0, h, w, owned=False)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = self._small
        if small is None or small.shape[::-1] != size:
            small = self._small = np.empty(size[::-1], np.uint8)
        cv2.resize(gray, size, dst=small, interpolation=cv2.INTER_AREA)
        return Scan(small, scale, h, w, owned=True)

    def scan(
        self,
        scan: Scan,
        region: Box | None = None,
        sizes: tuple[int, int] | None = None,
        exclude: Sequence[Box] = (),
    ) -> list[Box]:
        """`detect` on a frame already prepared by `prepare`."""
        return detect(self._cascade, scan, self.config, region=region, sizes=sizes, exclude=exclude)

    def detect(self, gray: Gray) -> list[Box]:
        """Every face of a whole frame, largest first."""
        return self.scan(self.prepare(gray))
