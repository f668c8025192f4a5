"""The motion bench's scenes are what its table says they are (real OpenCV, no timing)."""

from __future__ import annotations

import itertools
import sys

import cv2
import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT))

from bench import frames, motion
from edged.vision.detector import FaceDetector

SHARE_OF = 640 * 480


def gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def changed(a: np.ndarray, b: np.ndarray, level: int = 25) -> np.ndarray:
    """Pixels that differ by more than sensor noise between two pictures (blurred, as a
    motion gate looks)."""
    ga, gb = (cv2.GaussianBlur(gray(x), (5, 5), 0) for x in (a, b))
    return cv2.absdiff(ga, gb) > level


def full_scan(frame: np.ndarray) -> int:
    return len(FaceDetector(motion.DAEMON_DETECTOR).detect(gray(frame)))


@pytest.mark.parametrize("key", motion.EMPTY_STILL)
def test_an_empty_still_room_changes_only_by_sensor_noise_and_holds_no_face(key):
    pics = list(motion.pictures(key, 6))
    assert all(p.shape == (480, 640, 3) for p in pics)
    raw = [
        np.abs(gray(a).astype(int) - gray(b).astype(int)).max() for a, b in itertools.pairwise(pics)
    ]
    assert min(raw) > 0, "a camera never delivers the same pixels twice"
    for a, b in itertools.pairwise(pics):
        assert changed(a, b).mean() < 0.001
    assert full_scan(pics[0]) == 0


def test_the_dim_room_is_dim_and_noisier_than_the_plain_one():
    dim, plain = (list(motion.pictures(k, 2)) for k in ("dim", "plain"))
    assert gray(dim[0]).mean() < 0.4 * gray(plain[0]).mean()
    spread = [np.std(gray(p[1]).astype(int) - gray(p[0]).astype(int)) for p in (dim, plain)]
    assert spread[0] > 2 * spread[1]


def test_the_clutter_wall_is_dense_the_plain_one_is_not():
    edges = [
        cv2.Canny(gray(next(motion.pictures(k, 1))), 50, 150).mean() for k in ("clutter", "plain")
    ]
    assert edges[0] > 5 * edges[1]


def test_the_tv_changes_a_tenth_of_the_frame_every_picture_and_nothing_else():
    pics = list(motion.pictures("tv", 5))
    masks = [changed(a, b, 10) for a, b in itertools.pairwise(pics)]
    union = np.logical_or.reduce(masks)
    ys, xs = np.nonzero(union)
    box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    assert 0.09 <= box / SHARE_OF <= 0.11, "all change lies in one patch of 10% of the frame"
    for m in masks:
        assert 0.05 <= m.mean() <= 0.11  # most of the screen, every picture
    assert all(full_scan(p) == 0 for p in pics[:2])


def test_the_lamp_swings_locally():
    pics = list(motion.pictures("swing", 6))
    for a, b in itertools.pairwise(pics):
        assert 0.002 < changed(a, b).mean() < 0.1
    assert full_scan(pics[0]) == 0


def test_the_light_switches_several_times_and_the_whole_picture_jumps():
    pics = list(motion.pictures("lights", 100))
    level = np.array([gray(p).mean() for p in pics])
    jumps = np.nonzero(np.abs(np.diff(level)) > 20)[0]
    assert len(jumps) >= 3
    for k in jumps[:2]:
        assert changed(pics[k], pics[k + 1]).mean() > 0.5  # a global change
    assert all(abs(level[k + 1] - level[k]) < 2 for k in range(len(level) - 1) if k not in jumps)


def test_the_walking_face_is_found_by_a_full_scan_from_some_picture_on_to_the_end():
    pics = list(motion.pictures("walk_in", 40))
    found = [full_scan(p) > 0 for p in pics]
    assert not any(found[:20]), "nobody there for the first 20 pictures"
    first = found.index(True)
    assert first < 33, "in view by the end of the walk"
    assert all(found[first:])
    assert changed(pics[-2], pics[-1]).mean() < 0.001, "then still"


def test_faces_change_every_second_and_each_is_found():
    n = 12 * 5
    pics = list(motion.pictures("faces", n))
    assert all(full_scan(p) for p in pics[::5])
    swaps = [changed(a, b).mean() for a, b in zip(pics[4::5], pics[5::5], strict=False)]
    assert min(swaps) > 0.02, "another photo every 5 pictures (a second at 5 fps)"


def test_a_clip_reads_back_as_the_daemon_sees_it(tmp_path):
    path = tmp_path / "walk_in.avi"
    motion.write_clip(motion.SCENES[6], path, 8)
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(motion.CLIP_FPS)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 16
    cap.release()
    back = list(motion.read_pictures(path))
    assert len(back) == 8
    assert (back[0].shape[1], back[0].shape[0]) == frames.SIZE


def test_the_soak_splits_cpu_between_the_empty_room_and_the_face():
    from bench.soak import split_cpu

    t0 = 1000.0
    # /proc samples every 2 s (t, cpu s, rss): 1% of a core while empty, 5% with a face.
    samples, cpu = [], 0.0
    for k in range(60):
        samples.append((2.0 * k, cpu, 90.0))
        cpu += 0.02 if (k // 10) % 2 == 0 else 0.10
    # Frames at 5 fps: 20 s of empty room, then 20 s with a face, and so on.
    seen = [(t0 + k / 5, (k // 100) % 2 == 1) for k in range(600)]
    halves = split_cpu(samples, seen, t0)
    assert halves[False] == pytest.approx(1.0)
    assert halves[True] == pytest.approx(5.0)
