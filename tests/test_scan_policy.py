"""The tracker's scan policy with the motion gate (issue 14): where and when it scans.

Real Haar cascade, real frames (dataset faces pasted on a room, moved in memory: no codec,
so the pixels are the same on every machine). Counts of scans, never timings.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import sample_images

from edged.vision.detector import Box, DetectorConfig, FaceDetector
from edged.vision.motion import MotionGate
from edged.vision.tracker import FaceTracker, TrackConfig, _overlap, size_bands

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


# -- with the motion gate ----------------------------------------------------------------------


def gated(every: int = 25, parts: int = 3) -> FaceTracker:
    cfg = TrackConfig(full_scan_every=every, full_scan_parts=parts)
    return FaceTracker(FaceDetector(DAEMON), cfg, gate=MotionGate())


def noisy(frame: np.ndarray, rng: np.random.Generator, sigma: float = 2.0) -> np.ndarray:
    n = rng.normal(0, sigma, frame.shape)
    return np.clip(frame.astype(np.float32) + n, 0, 255).astype(np.uint8)


def counts(t: FaceTracker) -> tuple[int, int]:
    return t.full_scans, t.region_scans


def test_an_empty_still_room_is_scanned_only_by_the_periodic_full_scan():
    rng = np.random.default_rng(1)
    t = gated(every=25, parts=3)
    prepared = []  # frames the detector downscaled: any scan at all starts there
    prepare = t.detector.prepare
    t.detector.prepare = lambda g: prepared.append(t.frames) or prepare(g)  # type: ignore[method-assign]
    bg = room()
    for _ in range(100):
        assert t.detect(noisy(bg, rng)) == []
    assert t.region_scans == 0
    # The first frame (the gate learns the room) and a full scan every 25 frames, each
    # spread over 3 frames: 4 complete ones in 100 frames, 10 frames with any scan.
    assert t.full_scans == 4
    assert len(prepared) == 10 and prepared[0] == 1
    assert t.motion_frames == 1 and t.motion_ratio == pytest.approx(0.01)


def test_a_face_walking_in_is_found_as_soon_as_a_full_scan_would_find_it():
    bg, a = room(), face(0)
    path = [(-180 + 40 * k, 140) for k in range(12)]  # from off the left edge to x=260
    frames = [bg] * 5 + [paste_clipped(bg, a, x, y) for x, y in path] + [paste(bg, a, 260, 140)] * 5
    reference = FaceDetector(DAEMON)
    first_full = next(i for i, f in enumerate(frames) if reference.detect(f))
    t = gated(every=1000)
    first_gated = next(i for i, f in enumerate(frames) if t.detect(f))
    assert first_gated - first_full <= 2
    assert t.full_scans == 1  # the first frame only: the face was found by region scans


def paste_clipped(frame: np.ndarray, img: np.ndarray, x: int, y: int) -> np.ndarray:
    out = frame.copy()
    h, w = img.shape
    x0, x1 = max(0, x), min(W, x + w)
    if x1 > x0:
        out[y : y + h, x0:x1] = img[:, x0 - x : x1 - x]
    return out


def test_a_still_face_that_arrived_unseen_is_found_by_the_interval_scan():
    """A face that fades in slower than the gate follows the picture (it turned round
    slowly, then stayed) is never motion; the periodic full scan finds it all the same."""
    bg, a = room(), face(0)
    t = gated(every=20, parts=3)
    for _ in range(3):
        t.detect(bg)
    x, y, steps = 220, 140, 400
    region = bg[y : y + 200, x : x + 200].astype(np.float32)
    found_during = findable = None
    reference = FaceDetector(DAEMON)
    for k in range(1, steps + 1):  # under a level a frame: the background keeps up
        blend = bg.copy()
        blend[y : y + 200, x : x + 200] = np.round(region + (a - region) * k / steps)
        if findable is None and reference.detect(blend):
            findable = k
        if t.detect(blend) and found_during is None:
            found_during, regions_then = k, t.region_scans
    assert t.motion_frames == 1, "the fade-in was seen as motion: the test shows nothing"
    assert found_during is not None and findable is not None
    assert found_during - findable <= 20 + 3  # within one interval and its parts
    assert regions_then == 0  # found by a full scan, not a region scan
    still = paste(bg, a, x, y)
    assert all(t.detect(still) for _ in range(25))  # and followed from then on


def test_switching_the_lights_on_and_off_costs_one_full_scan_each_not_a_storm():
    rng = np.random.default_rng(5)
    t = gated(every=1000)
    bg = room()
    bright = cv2.convertScaleAbs(bg, alpha=1.6, beta=40)
    for _ in range(5):
        t.detect(noisy(bg, rng))
    assert counts(t) == (1, 0)
    for _ in range(3):  # lights on, on for a while, off, off for a while
        for _ in range(6):
            t.detect(noisy(bright, rng))
        for _ in range(6):
            t.detect(noisy(bg, rng))
    assert counts(t) == (1 + 6, 0)


def test_a_followed_face_and_a_newcomer_elsewhere_need_region_scans_only():
    bg, a, b = room(), face(0), face(1, 150)
    t = gated(every=1000)
    one = paste(bg, a, 60, 100)
    for _ in range(4):
        assert len(t.detect(one)) == 1
    full = t.full_scans
    both = paste(one, b, 420, 200)
    seen = [len(t.detect(both)) for _ in range(3)]
    assert seen[-1] == 2 and seen[0] == 2
    assert t.full_scans == full


def test_a_face_lost_for_a_frame_gets_one_wider_look_not_a_full_scan():
    bg, a = room(), face(0)
    t = gated(every=1000)
    for _ in range(3):
        t.detect(paste(bg, a, 200, 120))
    full, regions = counts(t)
    moved = paste(bg, a, 290, 150)  # beyond the usual search region, inside the wider one
    assert len(t.detect(moved)) == 1
    assert t.full_scans == full and t.region_scans > regions


def test_the_size_bands_of_a_split_full_scan_cover_every_face_size_once():
    det = FaceDetector(DAEMON)
    scan = det.prepare(room())
    for parts in (1, 2, 3, 5):
        bands = size_bands(scan, DAEMON.min_size, DAEMON.scale_factor, parts)
        assert len(bands) == parts
        assert bands[0][0] == 0 and bands[-1][1] == 0
        for (lo, hi), (nlo, _) in itertools.pairwise(bands):
            assert lo <= hi and nlo == hi + 1


def test_a_full_scan_split_in_parts_finds_the_faces_a_whole_one_finds():
    bg = room()
    frames = [paste(paste(bg, face(0, s1), 40, 60), face(1, s2), 380, 160)
              for s1, s2 in [(200, 100), (260, 60), (120, 180), (300, 140)]]  # fmt: skip
    det = FaceDetector(DAEMON)
    for f in frames:
        whole = det.detect(f)
        t = gated(every=1, parts=3)
        t.detect(bg)  # the gate learns the empty room; the faces are never "motion" below
        t.gate = None  # ...and from here on only the split full scan looks
        t._boxes = []
        parts = []
        for _ in range(3):
            parts.extend(t._full_part(det.prepare(f), parts))
        assert len(parts) == len(whole) == 2
        for w in whole:  # the same faces (a box may differ by a pixel or two)
            assert any(_overlap(w, p) > 0.8 for p in parts), (w, parts)


def test_a_known_face_left_of_or_above_a_region_does_not_blank_the_region():
    """Painting out a known face used its end as a slice bound; left of or above the
    region that end was negative, and a negative bound slices from the far side: the
    newcomer inside the region was painted over and never found."""
    bg, a, b = room(), face(0), face(1, 150)
    frame = paste(paste(bg, a, 60, 100), b, 420, 200)
    det = FaceDetector(DAEMON)
    known = det.detect(paste(bg, a, 60, 100))
    assert len(known) == 1
    scan = det.prepare(frame)
    region = Box(364, 144, 264, 264)
    assert len(det.scan(scan, region, exclude=known)) == 1


def test_a_still_face_is_checked_every_few_frames_and_a_move_near_it_at_once():
    rng = np.random.default_rng(2)
    bg, a = room(), face(0)
    t = gated(every=1000)
    still = paste(bg, a, 200, 120)
    for _ in range(3):  # arrives (motion), is found and followed
        t.detect(noisy(still, rng))
    full = t.full_scans
    scanned = []
    for _ in range(20):
        before = t.region_scans
        assert len(t.detect(noisy(still, rng))) == 1
        scanned.append(t.region_scans > before)
    assert t.full_scans == full
    assert 20 // 5 <= sum(scanned) <= 20 // 5 + 1  # every verify_every = 5 frames
    assert t.still == t._boxes  # kept as it was on the other frames
    moved = paste(bg, a, 206, 124)  # a few pixels: motion around the face
    before = t.region_scans
    t.detect(noisy(moved, rng))
    assert t.region_scans > before and t.still == []


def test_motion_that_never_holds_a_face_is_looked_at_only_every_few_frames():
    """A TV: a tenth of the frame changing on every frame, no face in it."""
    rng = np.random.default_rng(3)
    bg = room()
    t = gated(every=1000)
    t.detect(bg)
    for _ in range(40):
        frame = bg.copy()
        frame[40:170, 420:620] = rng.integers(0, 255, (130, 200), dtype=np.uint8)
        assert t.detect(frame) == []
    assert t.motion_ratio > 0.9
    # barren_every = 5: about one look in five (the noise sometimes splits a region in two)
    assert 40 // 5 <= t.region_scans <= 40 // 3


def test_a_face_that_appears_on_the_tv_is_found_within_the_back_off():
    rng = np.random.default_rng(4)
    bg, a = room(), face(1, 150)
    t = gated(every=1000)
    t.detect(bg)
    for _ in range(7):
        frame = bg.copy()
        frame[40:240, 400:620] = rng.integers(0, 255, (200, 220), dtype=np.uint8)
        t.detect(frame)
    found_at = None
    for k in range(8):
        frame = bg.copy()
        frame[40:240, 400:620] = rng.integers(0, 255, (200, 220), dtype=np.uint8)
        frame[60:210, 430:580] = a
        if t.detect(frame) and found_at is None:
            found_at = k
    assert found_at is not None and found_at <= 5


def test_a_face_kept_unscanned_keeps_its_expression_without_a_new_prediction(sample_model):
    from edged.vision.model_file import load_model
    from edged.vision.pipeline import Pipeline

    model = load_model(sample_model)
    rng = np.random.default_rng(6)
    bg, a = room(), face(0)
    pipe = Pipeline(
        FaceDetector(DAEMON), track=TrackConfig(full_scan_every=1000), gate=MotionGate()
    )
    still = paste(bg, a, 200, 120)
    results = [pipe.process(noisy(still, rng), model) for _ in range(12)]
    assert all(len(r.faces) == 1 for r in results)
    reused = [r.faces[0] is p.faces[0] for p, r in itertools.pairwise(results)]
    assert any(reused) and not all(reused)  # kept between checks, predicted at each check
    answers = {(r.faces[0].expression, r.faces[0].distance) for r in results}
    assert len(answers) <= 1 + reused.count(False)  # one per prediction, none in between
