"""The supervised worker: real threads; tests wait on events and on the thread's end.

Backoffs are a few milliseconds here, except where a test shows that `stop` cuts a long
one short.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from edged.daemon.workers import Worker

NAME = "edged-test"
LIVENESS = 10.0  # generous deadline for "it happens", never a speed assertion
FAST = (0.001, 0.004)


class Fatal:
    """Collects on_fatal reasons; `called` is set at the first."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.called = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.called.set()


class Script:
    """A target that raises the given exceptions in turn, then returns (sets ``done``)."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.threads: list[str] = []
        self.done = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        if self.errors:
            raise self.errors.pop(0)
        self.done.set()


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    """Factory for started workers, always stopped and joined after the test."""
    made: list[Worker] = []

    def make(target: Callable[[], None], **kw: object) -> Worker:
        kw.setdefault("backoff", FAST)
        w = Worker(NAME, target, **kw)  # type: ignore[arg-type]
        made.append(w)
        w.start()
        return w

    yield make
    for w in made:
        w.stop()
        assert w.join(LIVENESS)


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Callable[[int], list[logging.LogRecord]]:
    """The worker module's log records at exactly one level."""
    caplog.set_level(logging.DEBUG, logger="edged.daemon.workers")

    def at(level: int) -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.name == "edged.daemon.workers" and r.levelno == level
        ]

    return at


def until(cond: Callable[[], object]) -> None:
    deadline = time.monotonic() + LIVENESS
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {LIVENESS} s")
        time.sleep(0.005)


def test_the_thread_is_a_daemon_thread_named_after_the_worker(workers) -> None:
    seen: list[threading.Thread] = []
    go = threading.Event()

    def target() -> None:
        seen.append(threading.current_thread())
        go.wait(LIVENESS)

    w = workers(target)
    until(lambda: seen)
    assert w.alive
    assert seen[0].name == NAME
    assert seen[0].daemon
    go.set()
    assert w.join(LIVENESS)
    assert not w.alive


def test_starting_twice_is_an_error(workers) -> None:
    w = workers(Script())
    with pytest.raises(RuntimeError, match=NAME):
        w.start()


def test_a_normal_return_ends_the_worker_without_restart(workers, records) -> None:
    target = Script()
    w = workers(target)
    assert w.join(LIVENESS)
    assert target.calls == 1
    assert w.failures == 0
    assert not w.alive
    assert records(logging.ERROR) == records(logging.WARNING) == []


def test_a_failing_target_is_logged_once_at_error_with_its_traceback_and_restarted(
    workers, records
) -> None:
    target = Script(RuntimeError("camera driver bug"))
    fatal = Fatal()
    w = workers(target, on_fatal=fatal)
    assert target.done.wait(LIVENESS)  # the second run returned normally
    assert w.join(LIVENESS)
    assert target.calls == 2
    assert target.threads == [NAME, NAME]  # restarted on the same, named thread
    assert w.failures == 1
    [error] = records(logging.ERROR)
    assert error.exc_info is not None  # the traceback
    assert error.exc_info[0] is RuntimeError
    msg = error.getMessage()
    assert NAME in msg
    assert "RuntimeError: camera driver bug" in msg
    assert "restart 1 in" in msg
    assert fatal.reasons == []


def test_the_same_error_repeated_is_not_logged_with_a_traceback_again(workers, records) -> None:
    target = Script(*(ValueError("same") for _ in range(3)))
    w = workers(target, max_failures=10)
    assert target.done.wait(LIVENESS)
    assert w.join(LIVENESS)
    assert w.failures == 3
    errors = records(logging.ERROR)
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    warnings = records(logging.WARNING)
    assert [r.getMessage().split(";")[0] for r in warnings] == [
        f"worker {NAME} failed again (same error)"
    ] * 2
    assert all(r.exc_info is None for r in warnings)


def test_a_different_error_gets_its_own_traceback(workers, records) -> None:
    target = Script(ValueError("one"), ValueError("two"), KeyError("three"), ValueError("one"))
    w = workers(target, max_failures=10)
    assert target.done.wait(LIVENESS)
    assert w.join(LIVENESS)
    errors = records(logging.ERROR)
    assert [str(r.exc_info[1]) for r in errors if r.exc_info] == ["one", "two", "'three'"]
    assert len(errors) == 3  # the second "one" is a repeat: a warning, no traceback
    assert len(records(logging.WARNING)) == 1


def test_backoff_doubles_up_to_its_cap(workers, records) -> None:
    target = Script(*(OSError("flaky") for _ in range(5)))
    w = workers(target, max_failures=10, backoff=(0.001, 0.004))
    assert target.done.wait(LIVENESS)
    assert w.join(LIVENESS)
    lines = [r.getMessage() for r in records(logging.ERROR) + records(logging.WARNING)]
    delays = [line.rsplit(" in ", 1)[1] for line in lines]
    assert delays == ["0.001 s", "0.002 s", "0.004 s", "0.004 s", "0.004 s"]


def test_max_failures_inside_the_window_calls_on_fatal_exactly_once_naming_the_worker(
    workers, records
) -> None:
    target = Script(*(RuntimeError("always") for _ in range(100)))
    fatal = Fatal()
    w = workers(target, on_fatal=fatal, max_failures=3, window=300.0)
    assert fatal.called.wait(LIVENESS)
    assert w.join(LIVENESS)  # the worker ended: no further failure, no further call
    assert target.calls == w.failures == 3
    [reason] = fatal.reasons
    assert NAME in reason
    assert "\n" not in reason
    assert "RuntimeError: always" in reason
    giving_up = [r for r in records(logging.ERROR) if "giving up" in r.getMessage()]
    assert len(giving_up) == 1
    assert "systemd restarts it" in giving_up[0].getMessage()


def test_failures_further_apart_than_the_window_never_add_up_to_fatal(workers) -> None:
    now = [0.0]

    def clock() -> float:  # each failure 10 s after the one before: a 5 s window holds one
        now[0] += 10.0
        return now[0]

    target = Script(*(RuntimeError("rare") for _ in range(4)))
    fatal = Fatal()
    w = workers(target, on_fatal=fatal, max_failures=2, window=5.0, clock=clock)
    assert target.done.wait(LIVENESS)
    assert w.join(LIVENESS)
    assert w.failures == 4
    assert fatal.reasons == []


def test_restart_false_calls_on_fatal_at_the_first_exception(workers, records) -> None:
    target = Script(RuntimeError("once is enough"), RuntimeError("never reached"))
    fatal = Fatal()
    w = workers(target, on_fatal=fatal, restart=False)
    assert fatal.called.wait(LIVENESS)
    assert w.join(LIVENESS)
    assert target.calls == 1
    [reason] = fatal.reasons
    assert NAME in reason
    assert "once is enough" in reason
    first, giving_up = records(logging.ERROR)
    assert first.exc_info is not None
    assert "giving up" in giving_up.getMessage()


def test_without_on_fatal_giving_up_is_only_logged(workers, records) -> None:
    w = workers(Script(RuntimeError("x")), restart=False)
    assert w.join(LIVENESS)
    assert any("giving up" in r.getMessage() for r in records(logging.ERROR))


def test_stop_during_a_backoff_wait_returns_at_once(workers) -> None:
    target = Script(RuntimeError("down"), RuntimeError("down"))
    w = workers(target, backoff=(30.0, 60.0))
    until(lambda: w.failures == 1)  # counted just before the 30 s wait
    t0 = time.monotonic()
    w.stop()
    assert w.stopping
    assert w.join(1.0)
    assert time.monotonic() - t0 < 1.0
    assert target.calls == 1  # not restarted after the stop


def test_an_exception_after_stop_is_neither_restarted_nor_fatal(workers, records) -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def target() -> None:  # like a loop torn down under its feet during shutdown
        calls.append(1)
        started.set()
        release.wait(LIVENESS)
        raise OSError("socket closed")

    fatal = Fatal()
    w = workers(target, on_fatal=fatal, restart=False)
    assert started.wait(LIVENESS)
    w.stop()
    release.set()
    assert w.join(LIVENESS)
    assert calls == [1]
    assert w.failures == 0
    assert fatal.reasons == []
    assert records(logging.ERROR) == records(logging.WARNING) == []
    [debug] = records(logging.DEBUG)
    assert debug.exc_info is not None  # still there for whoever debugs a shutdown


def test_on_fatal_raising_does_not_escape_the_thread(
    workers, records, monkeypatch: pytest.MonkeyPatch
) -> None:
    escaped: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    called = threading.Event()

    def broken_handler(reason: str) -> None:
        called.set()
        raise RuntimeError("the handler itself is broken")

    w = workers(Script(RuntimeError("first")), on_fatal=broken_handler, restart=False)
    assert called.wait(LIVENESS)
    assert w.join(LIVENESS)
    assert escaped == []
    handler_errors = [r for r in records(logging.ERROR) if "handler failed" in r.getMessage()]
    assert len(handler_errors) == 1
    assert handler_errors[0].exc_info is not None
