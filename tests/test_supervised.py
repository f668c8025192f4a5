"""Every worker thread of the daemon is supervised (issue 12, item 2), proven per worker.

The daemon is built in-process by the composition root (`build_outputs`, `build_service`:
the real grabber on a real clip, the real model store, the real MQTT publisher on a real
Mosquitto, the real web page and live view). An exception is injected into one worker's
thread, through the `Worker`'s own target; the daemon must log it once at ERROR (with
its traceback) and recover, shown by a sentinel that only a working thread produces, or,
when the worker keeps failing, stop with exit status 70 for systemd to restart it.

The list of workers is `edged.daemon.workers.WORKERS`, checked against every
``Worker(`` in the code, so a new worker without a case here fails this file.
"""

from __future__ import annotations

import ast
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Segment, sample_images
from fixtures_broker import Broker, wait_until

from edged.commands.run import build_outputs, build_service
from edged.daemon import workers
from edged.daemon.inbox import Inbox
from edged.daemon.model_store import ModelStore
from edged.daemon.service import Service
from edged.settings import load_settings
from edged.web.output import WebOutput

LIVENESS = 30.0  # s for "it happens": never a speed assertion
INJECTED = "injected by test_supervised"


class Injected(RuntimeError):
    pass


def worker_names_in_code() -> set[str]:
    """The name given to every ``Worker(...)`` call in edged's source (parsed, so a
    comment or docstring never counts)."""
    names: set[str] = set()
    for path in (ROOT / "edged").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if (f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)) != "Worker":
                continue
            first = node.args[0] if node.args else None
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                f"{path}:{node.lineno}: a Worker's name must be a literal, so it can be listed"
            )
            names.add(first.value)
    return names


def test_every_worker_in_the_code_is_in_the_registry_and_has_a_case_here() -> None:
    assert worker_names_in_code() == set(workers.WORKERS)
    assert {c.worker for c in CASES} == set(workers.WORKERS)


# -- the daemon, in-process ---------------------------------------------------------------


@dataclass
class Running:
    service: Service
    web: WebOutput
    availability: str
    thread: threading.Thread
    status: list[int]

    @property
    def port(self) -> int:
        return int(self.web.server.server_address[1])

    def stop(self) -> int:
        self.service.inbox.request_stop("test over")
        self.thread.join(LIVENESS)
        assert not self.thread.is_alive()
        return self.status[0]


@pytest.fixture
def daemon(
    broker: Broker, device_id: str, face_video, sample_model: Path, tmp_path: Path, clean_env
) -> Iterator[Callable[..., Running]]:
    """Factory: the whole daemon on a looping clip, MQTT and the web page on, running on
    a thread of its own (its loop); stopped after the test."""
    made: list[Running] = []

    def start(**extra: dict[str, Any]) -> Running:
        clip, _ = face_video([Segment(sample_images("happy", 1)[0], 2.0)], fps=10)
        sections: dict[str, dict[str, Any]] = {
            "camera": {"source": str(clip), "loop": True, "retry_initial": 0.05},
            "model": {"path": str(sample_model), "poll_interval": 0.2},
            "loop": {"fps": 5, "stats_interval": 1},
            "mqtt": {"host": broker.host, "port": broker.port, "device_id": device_id},
            "http": {"port": 0, "stream_fps": 5},
        }
        for key, values in extra.items():
            sections.setdefault(key, {}).update(values)
        settings = load_settings(None, sections)
        inbox = Inbox()
        outputs = build_outputs(settings, inbox)
        [web] = [o for o in outputs if isinstance(o, WebOutput)]
        svc = build_service(settings, outputs, inbox=inbox)
        status: list[int] = []
        t = threading.Thread(target=lambda: status.append(svc.run()), name="test-loop")
        t.start()
        r = Running(svc, web, f"edged/{device_id}/availability", t, status)
        made.append(r)
        return r

    yield start
    for r in made:
        if r.thread.is_alive():
            r.stop()


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Callable[[str], list[logging.LogRecord]]:
    """The supervisor's ERROR records about one worker's failure."""
    caplog.set_level(logging.INFO)

    def about(name: str) -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == "edged.daemon.workers"
            and r.levelno == logging.ERROR
            and r.getMessage().startswith(f"worker {name} failed:")
        ]

    return about


class Faults:
    """Wraps the target of the `Worker` called ``name`` when it is made: the first
    ``times`` runs raise `Injected` in the worker's own thread (-1: every run)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._mp = monkeypatch
        self.raised = 0
        self.fast = False

    def inject(self, name: str, times: int = 1) -> None:
        original = workers.Worker.__init__
        faults = self

        def init(self: workers.Worker, wname: str, target: Callable[[], None], **kw: Any) -> None:
            if wname == name:
                target = faults._failing(target, times)
                if faults.fast:  # keeps failing: the backoff's length proves nothing here
                    kw["backoff"] = (0.01, 0.02)
            original(self, wname, target, **kw)

        self._mp.setattr(workers.Worker, "__init__", init)

    def _failing(self, target: Callable[[], None], times: int) -> Callable[[], None]:
        def run() -> None:
            if times < 0 or self.raised < times:
                self.raised += 1
                raise Injected(INJECTED)  # the same error every time
            target()

        return run


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    return Faults(monkeypatch)


# -- what "working again" looks like, per worker ------------------------------------------


def frames_flow(r: Running, collector: Any) -> None:
    """The grabber delivers: the loop processes frames."""
    assert wait_until(lambda: r.service.stats is not None and r.service.stats.frames > 0, LIVENESS)


def model_reloads(r: Running, collector: Any) -> None:
    """The loader thread does its work: a reload on request happens."""
    assert wait_until(lambda: r.service.store.running, LIVENESS)
    r.service.inbox.reload_model("test")
    assert wait_until(
        lambda: r.service.model is not None and r.service.model.reloads >= 1, LIVENESS
    )


def broker_hears_it(r: Running, collector: Any) -> None:
    watch = collector(r.availability)
    watch.wait_for(r.availability, lambda m: m.text == "online", timeout=LIVENESS)


def page_answers(r: Running, collector: Any) -> None:
    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{r.port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    assert wait_until(healthy, LIVENESS)


def live_view_shows_a_picture(r: Running, collector: Any) -> None:
    """A viewer gets a JPEG part: the encoder thread made it."""
    page_answers(r, collector)
    assert wait_until(lambda: r.web.board.picture() is None, LIVENESS)  # camera online
    deadline = time.monotonic() + LIVENESS
    with socket.create_connection(("127.0.0.1", r.port), timeout=LIVENESS) as s:
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = b""
        while b"Content-Type: image/jpeg" not in got:
            assert time.monotonic() < deadline, got[:300]
            chunk = s.recv(65536)
            assert chunk, f"the stream ended: {got[:300]!r}"
            got += chunk


@dataclass(frozen=True)
class Case:
    worker: str
    works: Callable[[Running, Any], None]

    def __str__(self) -> str:
        return self.worker


CASES = [
    Case("edged-capture", frames_flow),
    Case("edged-model", model_reloads),
    Case("edged-mqtt", broker_hears_it),
    Case("edged-web", page_answers),
    Case("edged-web-encode", live_view_shows_a_picture),
]


@pytest.fixture
def watch(broker: Broker, collector: Callable[..., Any]) -> Callable[[str], Any]:
    return lambda topic: collector(broker, topic)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_failure_in_each_worker_is_logged_once_at_error_and_the_worker_works_again(
    case: Case, daemon, faults: Faults, errors, watch
) -> None:
    faults.inject(case.worker)
    r = daemon()
    case.works(r, watch)  # the sentinel: only a restarted, working thread gives it
    assert faults.raised == 1
    [error] = errors(case.worker)
    assert error.exc_info is not None and error.exc_info[0] is Injected  # its traceback
    assert INJECTED in error.getMessage()
    assert r.thread.is_alive()
    assert r.stop() == 0


@pytest.mark.slow
def test_a_failure_while_the_loader_reads_the_enrolled_faces_is_logged_once_and_recovered(
    daemon, errors, watch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The model loader's other path: the enrollment store, polled on the same thread."""
    store = tmp_path / "enrolled"
    store.mkdir()
    original = ModelStore._check_store
    raised: list[str] = []

    def check_store(self: ModelStore, force: bool) -> None:
        if threading.current_thread().name == "edged-model" and not raised:
            raised.append("once")
            raise Injected(f"{INJECTED}: enrollment store")
        original(self, force)

    monkeypatch.setattr(ModelStore, "_check_store", check_store)
    r = daemon(enroll={"store": str(store)})
    model_reloads(r, watch)
    assert raised == ["once"]
    [error] = errors("edged-model")
    assert error.exc_info is not None and error.exc_info[0] is Injected
    assert r.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_worker_that_keeps_failing_stops_the_daemon_with_status_70_naming_it(
    case: Case, daemon, faults: Faults, errors
) -> None:
    faults.fast = True
    faults.inject(case.worker, times=-1)
    r = daemon()
    r.thread.join(LIVENESS)
    assert not r.thread.is_alive(), "the daemon did not stop by itself"
    assert r.status == [70]
    assert case.worker in r.service.inbox.stop_reason
    assert len(errors(case.worker)) == 1  # the same error again is a warning, not a traceback
