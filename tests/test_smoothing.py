"""The expression smoother: K-of-N, hold time, threshold, clear_after, heartbeat, events."""

from __future__ import annotations

import pytest

from edged.daemon.smoothing import NONE, Smoother, SmoothingConfig, Step
from edged.vision.detector import Box
from edged.vision.pipeline import FaceResult, FrameResult

BOX = Box(10, 10, 100, 100)


def frame(*faces: tuple[str | None, float]) -> FrameResult:
    return FrameResult(
        faces=[FaceResult(BOX, e, c, 40.0 + i) for i, (e, c) in enumerate(faces)],
        model_version="abc",
        detect_ms=1.0,
        classify_ms=1.0,
    )


EMPTY = frame()


def feed(s: Smoother, frames: list[FrameResult | None], t0: float = 0.0, dt: float = 0.1):
    """Feed frames at dt apart; returns the steps and the time after the last one."""
    steps: list[Step] = []
    t = t0
    for f in frames:
        steps.append(s.update(f, t))
        t += dt
    return steps, t


def transitions(steps: list[Step]) -> list[tuple[str, str]]:
    return [(x.transition.from_, x.transition.to) for x in steps if x.transition]


def test_first_tick_publishes_none_so_a_stale_retained_state_is_replaced():
    s = Smoother(SmoothingConfig())
    step = s.update(None, 0.0)
    assert step.state is not None and step.state.expression == NONE
    assert step.transition is None


def test_new_expression_needs_k_of_last_n_frames_to_agree():
    s = Smoother(SmoothingConfig(window=5, agree=3, threshold=0.0))
    s.update(None, 0.0)
    steps, _ = feed(s, [frame(("happy", 0.9)), frame(("sad", 0.9)), frame(("happy", 0.9))], 1.0)
    assert transitions(steps) == []
    assert s.state.expression == NONE
    step = s.update(frame(("happy", 0.8)), 2.0)
    assert step.transition is not None and (step.transition.from_, step.transition.to) == (
        NONE,
        "happy",
    )
    assert step.state is not None and step.state.expression == "happy"
    assert step.state.confidence == pytest.approx(0.8)


def test_a_single_odd_frame_does_not_flap_the_state():
    s = Smoother(SmoothingConfig(window=5, agree=3, threshold=0.0))
    feed(s, [frame(("happy", 0.9))] * 3)
    assert s.state.expression == "happy"
    steps, _ = feed(s, [frame(("sad", 0.9)), frame(("happy", 0.9)), frame(("sad", 0.9))], 1.0)
    assert transitions(steps) == []
    assert s.state.expression == "happy"


def test_frames_below_the_confidence_threshold_do_not_vote():
    s = Smoother(SmoothingConfig(window=5, agree=3, threshold=0.5))
    steps, t = feed(s, [frame(("sad", 0.4))] * 5)
    assert transitions(steps) == []
    steps, _ = feed(s, [frame(("sad", 0.6))] * 3, t)
    assert transitions(steps) == [(NONE, "sad")]


def test_min_hold_accepts_an_expression_held_long_enough_without_k_votes():
    # agree=5 of 5 would need 5 frames; a 0.25 s hold at 10 fps accepts after 3.
    s = Smoother(SmoothingConfig(window=5, agree=5, min_hold=0.25, threshold=0.0))
    steps, _ = feed(s, [frame(("surprise", 0.9))] * 4)
    assert transitions(steps) == [(NONE, "surprise")]
    assert [i for i, x in enumerate(steps) if x.transition] == [3]


def test_min_hold_restarts_when_the_run_is_broken():
    s = Smoother(SmoothingConfig(window=10, agree=10, min_hold=0.25, threshold=0.0))
    seq = [frame(("happy", 0.9)), frame(("happy", 0.9)), frame(("sad", 0.9))]
    steps, _ = feed(s, seq * 3)
    assert transitions(steps) == []


def test_state_becomes_none_only_after_clear_after_seconds_without_a_face():
    s = Smoother(SmoothingConfig(window=3, agree=2, threshold=0.0, clear_after=1.0))
    feed(s, [frame(("happy", 0.9))] * 2)  # t = 0.0, 0.1
    assert s.state.expression == "happy"
    assert s.update(EMPTY, 0.5).transition is None
    assert s.update(None, 1.0).transition is None
    step = s.update(EMPTY, 1.15)
    assert step.transition is not None and step.transition.to == NONE
    assert step.state is not None and step.state.faces == 0


def test_state_becomes_none_when_no_frames_arrive_at_all():
    s = Smoother(SmoothingConfig(window=1, agree=1, threshold=0.0, clear_after=2.0))
    s.update(frame(("sad", 0.9)), 0.0)
    steps, _ = feed(s, [None] * 30, 0.1)
    assert transitions(steps) == [("sad", NONE)]


def test_one_event_per_transition_and_none_while_the_expression_holds():
    s = Smoother(SmoothingConfig(window=3, agree=2, threshold=0.0, clear_after=0.5))
    seq = [frame(("happy", 0.9))] * 10 + [frame(("sad", 0.9))] * 10 + [EMPTY] * 10
    steps, _ = feed(s, seq)
    assert transitions(steps) == [(NONE, "happy"), ("happy", "sad"), ("sad", NONE)]


def test_heartbeat_republishes_an_unchanged_state():
    s = Smoother(SmoothingConfig(window=1, agree=1, threshold=0.0, heartbeat=1.0))
    steps, _ = feed(s, [frame(("neutral", 0.7))] * 10, dt=0.25)  # 2.5 s
    published = [i for i, x in enumerate(steps) if x.state is not None]
    assert published == [0, 4, 8]
    assert all(steps[i].state.expression == "neutral" for i in published)
    assert transitions(steps) == [(NONE, "neutral")]


def test_heartbeat_state_carries_the_latest_confidence_and_face_count():
    s = Smoother(SmoothingConfig(window=1, agree=1, threshold=0.0, heartbeat=1.0))
    s.update(frame(("happy", 0.6)), 0.0)
    step = s.update(frame(("happy", 0.95), ("sad", 0.5)), 1.0)
    assert step.state is not None
    assert step.state.confidence == pytest.approx(0.95) and step.state.faces == 2


def test_smoothing_off_takes_every_frames_top_expression():
    s = Smoother(SmoothingConfig(enabled=False, window=5, agree=5, threshold=0.9))
    steps, _ = feed(s, [frame(("happy", 0.2)), frame(("sad", 0.2)), frame(("happy", 0.3))])
    assert transitions(steps) == [(NONE, "happy"), ("happy", "sad"), ("sad", "happy")]


def test_clear_for_the_privacy_switch_forgets_votes_and_goes_to_none():
    s = Smoother(SmoothingConfig(window=3, agree=2, threshold=0.0))
    feed(s, [frame(("anger", 0.9))] * 2)
    step = s.clear(5.0)
    assert step.transition is not None and (step.transition.from_, step.transition.to) == (
        "anger",
        NONE,
    )
    # One more matching frame after the switch is not enough: the old votes are gone.
    assert s.update(frame(("anger", 0.9)), 6.0).transition is None


def test_faces_without_an_expression_never_make_a_state():
    s = Smoother(SmoothingConfig(window=2, agree=1, threshold=0.0))
    steps, _ = feed(s, [frame((None, 0.0))] * 5)
    assert transitions(steps) == []
    assert s.state.expression == NONE


def test_config_rejects_agree_larger_than_window():
    with pytest.raises(ValueError, match="agree"):
        SmoothingConfig(window=2, agree=3)


def test_settings_reject_agree_larger_than_window_naming_the_section(clean_env):
    from edged.errors import ConfigError
    from edged.settings import load_settings

    with pytest.raises(ConfigError, match=r"smoothing.*agree \(6\) must not exceed window \(5\)"):
        load_settings(None, {"smoothing": {"agree": 6}})
