"""The live view's pacing and its cost with nobody watching (LiveView, no server)."""

from __future__ import annotations

import numpy as np

from edged.vision.pipeline import FrameResult
from edged.web.stream import LiveView

RESULT = FrameResult(faces=[], model_version=None, detect_ms=0.0, classify_ms=0.0)
FRAME = np.zeros((48, 64, 3), np.uint8)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def taken(view: LiveView) -> int:
    """Frames the view kept for encoding (then frees the buffer, as the encoder does)."""
    busy = view._busy
    view._busy = False
    return int(busy)


def test_with_nobody_watching_a_frame_is_neither_copied_nor_encoded():
    clock = Clock()
    view = LiveView(3, 5.0, 75, clock=clock)
    for _ in range(50):
        view.offer(FRAME, RESULT)
        clock.now += 0.2
    assert view._buf is None and not view._busy


def test_frames_a_few_ms_early_at_the_loops_own_rate_are_all_taken():
    clock = Clock()
    view = LiveView(3, 5.0, 75, clock=clock)
    view.join()
    jitter = [0.0, -0.004, 0.003, -0.006, 0.005, -0.002] * 10
    kept = 0
    for j in jitter:  # a 5 fps loop whose frames arrive a few ms early or late
        view.offer(FRAME, RESULT)
        kept += taken(view)
        clock.now += 0.2 + j
    assert kept == len(jitter)


def test_a_faster_loop_never_makes_the_live_view_exceed_stream_fps():
    clock = Clock()
    view = LiveView(3, 5.0, 75, clock=clock)
    view.join()
    kept = 0
    for _ in range(200):  # 20 fps for 10 s
        view.offer(FRAME, RESULT)
        kept += taken(view)
        clock.now += 0.05
    assert 49 <= kept <= 51  # 5 fps, never more
