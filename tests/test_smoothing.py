"""The expression smoother (K-of-N, hold time, threshold, clear_after, heartbeat, events)
and the daemon's Expression around it (the privacy switch, reports in wall-clock time)."""

from __future__ import annotations

import pytest

from edged.daemon.expression import Expression
from edged.daemon.outputs import NONE, ExpressionEvent, ExpressionReport
from edged.daemon.smoothing import Smoother, SmoothingConfig, Step
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


# -- the daemon's Expression: what every output is told ------------------------------------

WALL0 = 1_763_900_000.0  # the wall clock at monotonic 0 in these tests


def expression(**cfg: object) -> Expression:
    values: dict = {"window": 2, "agree": 2, "threshold": 0.0, **cfg}
    return Expression(Smoother(SmoothingConfig(**values)))


def tick(e: Expression, f: FrameResult | None, mono: float):
    return e.update(f, mono, WALL0 + mono)


def happy_now(e: Expression) -> None:
    """Two agreeing frames at monotonic 1.0 and 1.1: the state is happy since 1.1."""
    tick(e, frame(("happy", 0.9)), 1.0)
    _, ev = tick(e, frame(("happy", 0.8)), 1.1)
    assert ev is not None and ev.to == "happy"


def test_expression_reports_in_wall_clock_with_the_model_of_the_frames():
    e = expression()
    report, event = tick(e, frame(("happy", 0.9)), 1.0)
    assert event is None and report is not None  # the first tick states "none"
    assert (report.expression, report.detect, report.model_version) == (NONE, True, "abc")
    report, event = tick(e, frame(("happy", 0.8)), 1.5)
    assert event == ExpressionEvent(NONE, "happy", 0.8, WALL0 + 1.5)
    assert report == ExpressionReport(
        expression="happy",
        confidence=0.8,
        distance=40.0,
        faces=1,
        since=WALL0 + 1.5,
        timestamp=WALL0 + 1.5,
        model_version="abc",
        detect=True,
    )
    # A re-statement later keeps ``since`` at the change, in wall-clock time.
    later = e.current(7.0, WALL0 + 7.0)
    assert later.since == pytest.approx(WALL0 + 1.5) and later.timestamp == WALL0 + 7.0


def test_switching_detection_off_states_none_with_an_event_to_none():
    e = expression()
    happy_now(e)
    report, event = e.switch(False, 2.0, WALL0 + 2.0)
    assert event is not None and (event.from_, event.to) == ("happy", NONE)
    assert report is not None
    assert (report.expression, report.faces, report.detect) == (NONE, 0, False)
    assert e.detect is False and e.expression == NONE


def test_while_detection_is_off_update_reports_nothing_not_even_a_heartbeat():
    e = expression(heartbeat=1.0, clear_after=0.5)
    happy_now(e)
    e.switch(False, 2.0, WALL0 + 2.0)
    for i in range(50):  # frames a loop that ignored the switch would pass on; 25 s
        assert tick(e, frame(("surprise", 0.99)), 2.5 + i * 0.5) == (None, None)
        assert tick(e, None, 2.6 + i * 0.5) == (None, None)
    assert e.expression == NONE


def test_switching_back_on_restates_the_current_state_and_needs_new_votes():
    e = expression()
    happy_now(e)
    e.switch(False, 2.0, WALL0 + 2.0)
    report, event = e.switch(True, 3.0, WALL0 + 3.0)
    assert event is None
    assert report is not None and (report.expression, report.detect) == (NONE, True)
    assert report.timestamp == WALL0 + 3.0
    # What was seen before the switch went off is forgotten: one frame is not enough.
    assert tick(e, frame(("happy", 0.9)), 3.1)[1] is None
    _, event = tick(e, frame(("happy", 0.9)), 3.2)
    assert event is not None and (event.from_, event.to) == (NONE, "happy")


def test_switching_off_when_nothing_is_seen_restates_none_without_an_event():
    e = expression()
    tick(e, None, 1.0)
    report, event = e.switch(False, 2.0, WALL0 + 2.0)
    assert event is None
    assert report is not None and (report.expression, report.detect) == (NONE, False)


def test_switching_to_the_value_it_already_has_reports_nothing():
    e = expression()
    happy_now(e)
    assert e.switch(True, 2.0, WALL0 + 2.0) == (None, None)
    e.switch(False, 3.0, WALL0 + 3.0)
    assert e.switch(False, 4.0, WALL0 + 4.0) == (None, None)


def test_the_model_version_comes_from_the_store_until_a_frame_says_otherwise():
    e = expression()
    e.set_model("m-store")
    assert e.current(0.5, WALL0 + 0.5).model_version == "m-store"
    tick(e, frame(("happy", 0.9)), 1.0)
    report, _ = tick(e, frame(("happy", 0.9)), 1.1)  # the change to happy is reported
    assert report is not None and report.model_version == "abc"
