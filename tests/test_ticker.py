"""The frame scheduler's timing logic, on made-up clocks."""

from __future__ import annotations

import pytest

from edged.daemon.ticker import Ticker


def run(ticker: Ticker, work: list[float], wake_late: float = 0.0) -> list[float]:
    """Simulate the loop: wait for each slot (waking ``wake_late`` after it), work, move on."""
    now = ticker.origin
    starts = []
    for w in work:
        now += ticker.delay(now) + wake_late
        starts.append(now)
        now += w
        ticker.done(now)
    return starts


def test_ticks_start_at_fixed_slots_when_work_fits():
    t = Ticker(fps=5, origin=100.0)
    starts = run(t, [0.05] * 10)
    assert starts == pytest.approx([100.0 + 0.2 * k for k in range(10)])
    assert t.skipped == 0
    assert t.ticks == 10


def test_oversleeping_does_not_accumulate_drift():
    # Each wake-up is 30 ms late (a busy Pi); slots stay anchored at origin + k * period.
    t = Ticker(fps=10, origin=0.0)
    starts = run(t, [0.02] * 1000, wake_late=0.03)
    assert starts[-1] == pytest.approx(999 * 0.1 + 0.03)
    assert t.skipped == 0


def test_an_overrunning_tick_skips_the_slots_it_covered_and_counts_them():
    t = Ticker(fps=5, origin=0.0)  # slots at 0, .2, .4, .6, .8, 1.0 ...
    # Second tick (starting at 0.2) takes 0.5 s: it runs into the slots at 0.4 and 0.6.
    starts = run(t, [0.01, 0.5, 0.01, 0.01])
    assert starts == pytest.approx([0.0, 0.2, 0.8, 1.0])
    assert t.skipped == 2
    assert t.ticks == 4


def test_done_reports_the_skips_of_that_tick():
    t = Ticker(fps=10, origin=0.0)
    assert t.done(0.05) == 0
    assert t.deadline == pytest.approx(0.1)
    assert t.done(0.35) == 2  # ran from 0.1 to 0.35: slots 0.2 and 0.3 were missed
    assert t.deadline == pytest.approx(0.4)
    assert t.delay(0.35) == pytest.approx(0.05)


def test_a_late_start_that_still_finishes_in_its_slot_is_not_a_skip():
    t = Ticker(fps=10, origin=0.0)
    # Woke 80 ms late for slot 0, finished at 0.095: slot 1 (0.1) has not started yet.
    assert t.done(0.095) == 0
    assert t.delay(0.095) == pytest.approx(0.005)


def test_delay_is_never_negative():
    t = Ticker(fps=5, origin=0.0)
    assert t.delay(10.0) == 0.0


def test_a_long_stall_skips_many_slots_but_does_not_replay_them():
    t = Ticker(fps=5, origin=0.0)
    assert t.done(60.05) == 300  # e.g. a suspended laptop: one tick, then on with the schedule
    assert t.deadline == pytest.approx(60.2)


@pytest.mark.parametrize("fps", [0, -1, float("inf"), float("nan")])
def test_a_rate_that_is_not_positive_and_finite_is_refused(fps):
    with pytest.raises(ValueError, match="fps"):
        Ticker(fps=fps, origin=0.0)
