"""`LogLimiter`: a flood of one kind of log line is one line and a counted summary."""

from __future__ import annotations

import logging

from edged.ratelimit import LogLimiter

log = logging.getLogger("edged.test.ratelimit")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_a_flood_is_its_first_line_then_one_summary_per_window_with_the_count(caplog):
    caplog.set_level(logging.INFO, log.name)
    clock = Clock()
    limiter = LogLimiter(log, window=60.0, clock=clock)
    for i in range(1000):
        limiter.log(logging.WARNING, "bad", "ignored %d more bad things", "bad thing %d", i)
    assert said(caplog) == ["bad thing 0"]
    limiter.flush()  # the window has not passed: nothing yet
    assert said(caplog) == ["bad thing 0"]
    clock.now += 60.0
    limiter.flush()
    assert said(caplog) == ["bad thing 0", "ignored 999 more bad things"]
    assert caplog.records[-1].levelno == logging.WARNING
    assert limiter.total("bad") == 1000


def test_a_flood_that_goes_on_gives_one_summary_per_window_not_a_line_each(caplog):
    caplog.set_level(logging.INFO, log.name)
    clock = Clock()
    limiter = LogLimiter(log, window=60.0, clock=clock)
    for _ in range(3 * 60):  # one a second for three minutes, nobody flushing
        limiter.log(logging.WARNING, "bad", "%d more", "first")
        clock.now += 1.0
    assert said(caplog) == ["first", "60 more", "60 more"]
    limiter.flush(force=True)  # the end: what is left is said too
    assert said(caplog) == ["first", "60 more", "60 more", "59 more"]


def test_after_a_quiet_window_the_next_one_is_said_in_full_and_kinds_are_separate(caplog):
    caplog.set_level(logging.INFO, log.name)
    clock = Clock()
    limiter = LogLimiter(log, window=60.0, clock=clock)
    limiter.log(logging.INFO, "a", "%d more a", "a 1")
    limiter.log(logging.INFO, "b", "%d more b", "b 1")
    clock.now += 61.0
    limiter.log(logging.INFO, "a", "%d more a", "a 2")
    limiter.flush(force=True)  # nothing held back
    assert said(caplog) == ["a 1", "b 1", "a 2"]
