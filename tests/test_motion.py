"""The motion gate: real OpenCV on synthetic frames (nothing here is timed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import sample_images, scene

from edged.vision.detector import Box
from edged.vision.motion import Motion, MotionConfig, MotionGate, merge

H, W = 480, 640


def wall(level: int = 120, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.full(shape, level, np.uint8)


def noisy(frame: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    return np.clip(frame + rng.normal(0.0, sigma, frame.shape), 0, 255).astype(np.uint8)


def with_square(frame: np.ndarray, box: Box, level: int = 30) -> np.ndarray:
    out = frame.copy()
    out[box.y : box.y + box.h, box.x : box.x + box.w] = level
    return out


def contains(outer: Box, inner: Box) -> bool:
    return (
        outer.x <= inner.x
        and outer.y <= inner.y
        and inner.x + inner.w <= outer.x + outer.w
        and inner.y + inner.h <= outer.y + outer.h
    )


def overlaps(a: Box, b: Box) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def inside_frame(b: Box, h: int = H, w: int = W) -> bool:
    return b.x >= 0 and b.y >= 0 and b.x + b.w <= w and b.y + b.h <= h and b.w > 0 and b.h > 0


def settle(gate: MotionGate, frames: list[np.ndarray]) -> list[Motion]:
    return [gate.update(f) for f in frames]


def test_the_first_frame_teaches_the_background_and_asks_for_one_full_scan():
    gate = MotionGate()
    first = gate.update(wall())
    assert first.global_change and not first.regions and first.ratio == 1.0
    again = gate.update(wall())
    assert not again.global_change and not again.moved and again.ratio == 0.0


def test_a_moved_object_is_motion_where_it_was_and_where_it_is_and_nowhere_else():
    rng = np.random.default_rng(1)
    old, new = Box(100, 200, 60, 60), Box(180, 210, 60, 60)
    gate = MotionGate()
    settle(gate, [noisy(with_square(wall(), old), rng) for _ in range(10)])
    m = gate.update(noisy(with_square(wall(), new), rng))
    assert not m.global_change and m.regions
    assert any(contains(r, old) for r in m.regions)
    assert any(contains(r, new) for r in m.regions)
    assert all(overlaps(r, old) or overlaps(r, new) for r in m.regions)
    assert all(inside_frame(r) for r in m.regions)
    assert 0.0 < m.ratio < 0.1


def test_two_things_moving_far_apart_are_two_regions_each_around_its_own_thing():
    a0, a1 = Box(40, 40, 50, 50), Box(60, 40, 50, 50)
    b0, b1 = Box(500, 380, 50, 50), Box(520, 380, 50, 50)
    gate = MotionGate()
    settle(gate, [with_square(with_square(wall(), a0), b0)] * 3)
    m = gate.update(with_square(with_square(wall(), a1), b1))
    assert len(m.regions) == 2
    assert any(contains(r, a0) and contains(r, a1) and not overlaps(r, b0) for r in m.regions)
    assert any(contains(r, b0) and contains(r, b1) and not overlaps(r, a0) for r in m.regions)


def test_sensor_noise_on_a_plain_wall_is_no_motion_after_warm_up():
    rng = np.random.default_rng(2)
    gate = MotionGate()
    settle(gate, [noisy(wall(), rng) for _ in range(5)])
    later = settle(gate, [noisy(wall(), rng) for _ in range(100)])
    assert not any(m.moved or m.global_change for m in later)


def test_a_dim_room_with_heavy_sensor_noise_is_no_motion_either():
    rng = np.random.default_rng(3)
    gate = MotionGate()
    settle(gate, [noisy(wall(25), rng, sigma=8.0) for _ in range(10)])
    later = settle(gate, [noisy(wall(25), rng, sigma=8.0) for _ in range(50)])
    assert not any(m.moved or m.global_change for m in later)


def test_a_small_object_moving_on_a_noisy_wall_is_motion():
    rng = np.random.default_rng(4)
    gate = MotionGate()
    start = Box(300, 240, 20, 20)
    settle(gate, [noisy(with_square(wall(), start), rng) for _ in range(10)])
    moved = Box(312, 240, 20, 20)
    m = gate.update(noisy(with_square(wall(), moved), rng))
    assert m.moved and any(contains(r, moved) for r in m.regions)


def test_switching_the_lights_on_is_one_global_change_then_the_background_has_adapted():
    rng = np.random.default_rng(5)
    gate = MotionGate()
    room = scene(None)[:, :, 1]
    settle(gate, [noisy(room, rng) for _ in range(10)])
    lit = np.clip(room.astype(np.int16) + 60, 0, 255).astype(np.uint8)
    switched = gate.update(noisy(lit, rng))
    assert switched.global_change and not switched.regions and switched.ratio > 0.5
    after = settle(gate, [noisy(lit, rng) for _ in range(20)])
    assert not any(m.global_change or m.moved for m in after)


def test_an_exposure_ramp_is_one_global_change_not_one_per_frame():
    gate = MotionGate()
    settle(gate, [wall(60)] * 5)
    ramp = settle(gate, [wall(60 + 30 * k) for k in range(1, 6)])  # 90 ... 210
    assert [m.global_change for m in ramp] == [True, False, False, False, False]
    assert not any(m.moved for m in ramp)
    steady = settle(gate, [wall(210)] * 5)
    assert not any(m.global_change or m.moved for m in steady)


def test_a_face_sized_thing_moving_at_the_frame_edge_gives_a_face_scale_region_inside_the_frame():
    cfg = MotionConfig()
    old, new = Box(24, 384, 80, 80), Box(0, 400, 80, 80)  # into the bottom-left corner
    gate = MotionGate(cfg)
    settle(gate, [with_square(wall(), old)] * 3)
    m = gate.update(with_square(wall(), new))
    (region,) = m.regions
    assert inside_frame(region)
    assert region.x == 0 and region.y + region.h == H  # clipped at the edges it touches
    least = cfg.min_side * H
    assert region.w >= least and region.h >= least  # face scale, though little moved
    assert contains(region, new)


def test_a_new_frame_size_relearns_the_background_without_error():
    gate = MotionGate()
    settle(gate, [wall()] * 3)
    small = gate.update(wall(shape=(240, 320)))
    assert small.global_change and not small.regions
    m = gate.update(with_square(wall(shape=(240, 320)), Box(10, 10, 40, 40)))
    assert m.moved and all(inside_frame(r, 240, 320) for r in m.regions)
    assert gate.update(wall(shape=(100, 90))).global_change  # narrower than the working width


def test_the_working_buffers_are_allocated_once_and_reused_from_frame_to_frame():
    rng = np.random.default_rng(6)
    gate = MotionGate()
    gate.update(noisy(wall(), rng))
    buf = gate._buf
    assert buf is not None
    skip = ("shape", "halves")
    arrays = {name: getattr(buf, name) for name in buf.__slots__ if name not in skip}
    halves = list(buf.halves)
    for k in range(20):
        gate.update(with_square(noisy(wall(), rng), Box(10 * k, 100, 50, 50)))
    assert gate._buf is buf
    assert all(getattr(buf, name) is a for name, a in arrays.items())
    assert all(a is b for a, b in zip(buf.halves, halves, strict=True))
    assert {a.shape for a in arrays.values()} == {(120, 160)}
    assert [h.shape for h in halves] == [(240, 320)]  # 640 -> 320 -> 160, by halves


def test_the_small_copy_by_halves_is_the_area_average_of_one_resize():
    """Exactly (to rounding) where the width is 160 times a power of two; close on a
    picture (not pixel noise, whose averages depend on the footprint) elsewhere."""
    rng = np.random.default_rng(8)
    for h, w in [(480, 640), (720, 1280), (600, 800), (121, 161), (100, 150)]:
        noise = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1), dtype=np.uint8)
        frame = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
        gate = MotionGate()
        gate.update(frame)
        buf = gate._buf
        assert buf is not None
        sh, sw = buf.small.shape
        once = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA)
        exact = w in (640, 1280)
        assert np.abs(buf.small.astype(int) - once).max() <= (1 if exact else 12), (h, w)


def test_a_scene_room_is_still_and_a_face_pasted_in_is_a_region_holding_the_face():
    photo = sample_images("happy", 1)[0]
    room = cv2.cvtColor(scene(None), cv2.COLOR_BGR2GRAY)
    face = cv2.cvtColor(scene(photo), cv2.COLOR_BGR2GRAY)
    face_box = Box((W - 220) // 2, (H - 220) // 2, 220, 220)  # where scene() pastes it
    rng = np.random.default_rng(7)
    gate = MotionGate()
    settle(gate, [noisy(room, rng) for _ in range(5)])
    empty = settle(gate, [noisy(room, rng) for _ in range(30)])
    assert not any(m.moved or m.global_change for m in empty)
    m = gate.update(noisy(face, rng))
    assert not m.global_change
    assert any(contains(r, face_box) for r in m.regions)


def test_more_regions_than_max_regions_are_reported_as_their_one_bounding_box():
    spots = [Box(20 + 150 * i, 20 + 150 * j, 12, 12) for i in range(4) for j in range(3)]
    cfg = MotionConfig(pad=0.0, min_side=0.0, max_regions=3)
    gate = MotionGate(cfg)
    gate.update(wall())
    frame = wall()
    for s in spots:
        frame = with_square(frame, s)
    (whole,) = gate.update(frame).regions
    assert all(contains(whole, s) for s in spots)


def test_touching_boxes_merge_and_apart_ones_do_not():
    a, b, c = Box(0, 0, 10, 10), Box(10, 5, 10, 10), Box(50, 50, 5, 5)
    assert sorted(merge([a, c, b]), key=lambda x: x.x) == [Box(0, 0, 20, 15), c]
    assert merge([]) == []


def test_a_colour_frame_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="one 8-bit channel"):
        MotionGate().update(np.zeros((48, 64, 3), np.uint8))
    for bad in (
        {"blur": 4},
        {"alpha": 0.0},
        {"global_ratio": 1.5},
        {"threshold": 0},
        {"pad": -0.1},
    ):
        with pytest.raises(ValueError, match="motion"):
            MotionConfig(**bad)


def test_reset_makes_the_next_frame_a_global_change():
    gate = MotionGate()
    settle(gate, [wall()] * 3)
    gate.reset()
    assert gate.update(wall()).global_change
