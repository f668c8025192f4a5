"""The photo detector (`PhotoDetector`): the full scan's faces, for a fraction of its cost."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SAMPLE

from bench import frames
from edged.vision.detector import IMAGE_DETECTOR, Box, FaceDetector, Gray, to_gray
from edged.vision.photo import PhotoDetector

SAMPLE_PHOTOS = sorted((SAMPLE / "images").iterdir())


@pytest.fixture(scope="module")
def full() -> FaceDetector:
    return FaceDetector(IMAGE_DETECTOR)


@pytest.fixture(scope="module")
def photo() -> PhotoDetector:
    return PhotoDetector(IMAGE_DETECTOR)


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / (a.area + b.area - inter)


def gray_of(path: Path) -> Gray:
    img = cv2.imread(str(path))
    assert img is not None, path
    return to_gray(np.asarray(img, np.uint8))


def scene(path: Path, seed: int, x: int | None = None, side: int = 320) -> Gray:
    """A 640x480 room (bench/frames.py) with the photo pasted at ``side`` px."""
    room = frames.background(seed)
    img = cv2.imread(str(path))
    assert img is not None
    frames.place(room, img, (640 - side) // 2 if x is None else x, (480 - side) // 2, side)
    return to_gray(room)


def test_the_sample_photos_give_the_faces_a_full_scan_gives(
    full: FaceDetector, photo: PhotoDetector
) -> None:
    found_full = found_photo = 0
    ious = []
    for p in SAMPLE_PHOTOS:
        a, b = full.detect(gray_of(p)), photo.detect(gray_of(p))
        found_full += bool(a)
        found_photo += bool(b)
        if a and b:
            ious.append(iou(a[0], b[0]))
    assert found_photo == found_full
    assert np.median(ious) >= 0.9
    assert min(ious) >= 0.5  # the same face, never another one


def test_a_640x480_scene_gives_the_full_scans_face(
    full: FaceDetector, photo: PhotoDetector
) -> None:
    """The same face as the full scan (what it costs is the bench's: tests do not time)."""
    grays = [scene(p, seed=k) for k, p in enumerate(SAMPLE_PHOTOS[:12])]
    for g in grays:
        a = full.detect(g)
        b = photo.detect(g)
        assert bool(a) == bool(b)
        if a:
            assert iou(a[0], b[0]) >= 0.7


def test_a_photo_without_a_face_finds_none(full: FaceDetector, photo: PhotoDetector) -> None:
    room = to_gray(frames.background(3))
    assert photo.detect(room) == full.detect(room) == []
    assert photo.detect(np.full((480, 640), 128, np.uint8)) == []


def test_a_face_cut_by_the_border_is_found_as_the_full_scan_finds_it(
    full: FaceDetector, photo: PhotoDetector
) -> None:
    src = SAMPLE_PHOTOS[0]
    for x in (-60, 640 - 260):  # a fifth of the face outside, left and right
        g = scene(src, seed=1, x=x)
        a, b = full.detect(g), photo.detect(g)
        assert bool(a) == bool(b)
        if a:
            assert iou(a[0], b[0]) >= 0.7
            assert b[0].x >= 0 and b[0].x + b[0].w <= 640


def test_tiny_and_huge_images_are_scanned_without_error(photo: PhotoDetector) -> None:
    for shape in ((1, 1), (10, 7), (30, 30)):
        assert photo.detect(np.full(shape, 90, np.uint8)) == []
    big = np.asarray(cv2.resize(gray_of(SAMPLE_PHOTOS[0]), (4000, 3000)), np.uint8)
    boxes = photo.detect(big)
    assert boxes, "a face filling a 12 MP photo"
    assert all(b.x >= 0 and b.x + b.w <= 4000 and b.y + b.h <= 3000 for b in boxes)


def test_gray_bgr_and_bgra_inputs_give_the_same_faces(photo: PhotoDetector) -> None:
    bgr = cv2.imread(str(SAMPLE_PHOTOS[1]))
    assert bgr is not None
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    found = [photo.detect(to_gray(np.asarray(i, np.uint8))) for i in (bgr, bgra, gray)]
    assert found[0] and found[0] == found[1] == found[2]


def test_photo_detector_leaves_the_video_scan_as_it_was(photo: PhotoDetector) -> None:
    """prepare/scan are the FaceDetector's: the daemon's tracker relies on them."""
    g = scene(SAMPLE_PHOTOS[2], seed=5)
    assert photo.scan(photo.prepare(g)) == FaceDetector(IMAGE_DETECTOR).detect(g)
