"""The tracker's scan policy with the motion gate (issue 14): where and when it scans.

Real Haar cascade, real frames (dataset faces pasted on a room, moved in memory: no codec,
so the pixels are the same on every machine). Counts of scans, never timings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import sample_images

from edged.vision.detector import DetectorConfig, FaceDetector
from edged.vision.tracker import FaceTracker, TrackConfig

H, W = 480, 640
GOLDEN = Path(__file__).parent / "data" / "tracker_golden.json"
DAEMON = DetectorConfig(scale_factor=1.2, min_neighbors=5, min_size=0.1, max_width=320)


def room(seed: int = 3) -> np.ndarray:
    """A gray room: a shaded wall and a few pieces of furniture (no noise: exact pixels)."""
    rng = np.random.default_rng(seed)
    shade = np.linspace(100, 150, H, dtype=np.float32)[:, None]
    img = np.ascontiguousarray(np.broadcast_to(shade, (H, W))).astype(np.uint8)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, W - 60)), int(rng.integers(H // 3, H - 40))
        x1, y1 = x0 + int(rng.integers(40, 220)), y0 + int(rng.integers(30, 160))
        cv2.rectangle(img, (x0, y0), (x1, y1), int(rng.integers(30, 220)), -1)
    return img


def face(i: int = 0, side: int = 200) -> np.ndarray:
    photo = cv2.imread(str(sample_images("happy", 3)[i]), cv2.IMREAD_GRAYSCALE)
    assert photo is not None
    return cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)


def paste(frame: np.ndarray, img: np.ndarray, x: int, y: int) -> np.ndarray:
    out = frame.copy()
    h, w = img.shape
    out[y : y + h, x : x + w] = img
    return out


def golden_frames() -> Iterator[np.ndarray]:
    """Empty room, a face drifting, gone, two faces, one leaves: what the daemon sees."""
    bg = room()
    a, b = face(0), face(1, 150)
    yield from (bg for _ in range(6))
    for t in range(30):
        yield paste(bg, a, 200 + round(80 * math.sin(0.3 * t)), 120 + round(20 * math.sin(0.2 * t)))
    yield from (bg for _ in range(4))
    for t in range(20):
        two = paste(bg, a, 60 + 2 * t, 100)
        yield paste(two, b, 420, 200 - t)
    for t in range(10):
        yield paste(bg, b, 420 - 3 * t, 180)


def track_all(tracker: FaceTracker) -> list[list[list[int]]]:
    return [[bx.as_list() for bx in tracker.detect(f)] for f in golden_frames()]


@pytest.mark.skipif(not GOLDEN.is_file(), reason="golden file not recorded")
def test_with_motion_off_the_tracker_finds_exactly_what_it_found_before_the_gate():
    """``detector.motion = false`` is today's behaviour: the boxes recorded with the
    tracker as it was before the motion gate (commit 0c8b0a4), frame for frame."""
    tracker = FaceTracker(FaceDetector(DAEMON), TrackConfig())
    assert track_all(tracker) == json.loads(GOLDEN.read_text())


if __name__ == "__main__":  # record the golden file (only with the pre-gate tracker)
    GOLDEN.write_text(json.dumps(track_all(FaceTracker(FaceDetector(DAEMON), TrackConfig()))))
