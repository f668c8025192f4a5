"""The model store: real model files trained from the committed sample, a real polling thread.

The store polls every 0.05 s here; tests wait on conditions with a deadline, never on
fixed sleeps, except where a test must show that something does *not* happen.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CLASSES, train_sample_model

from edged.daemon.model_store import ModelStore
from edged.daemon.outputs import ModelStatus
from edged.training import fitting
from edged.vision.model import LBPHParams
from edged.vision.model_file import load_model

POLL = 0.05


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real models with different classes and LBPH parameters, so versions differ."""
    d = tmp_path_factory.mktemp("models")
    a, b = d / "a.yml", d / "b.yml"
    train_sample_model(a, CLASSES, per_class=3)
    cfg = fitting.FitConfig(lbph=LBPHParams(grid_x=4, grid_y=4))
    train_sample_model(b, ("happy", "sad", "surprise"), per_class=3, cfg=cfg)
    return a, b


def version(path: Path) -> str:
    return load_model(path).version


def until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


def put_atomically(src: Path | bytes, dst: Path) -> None:
    """What edged-train does: write beside, then rename over."""
    tmp = dst.with_name(dst.name + ".tmp")
    if isinstance(src, bytes):
        tmp.write_bytes(src)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class Changes:
    def __init__(self) -> None:
        self.items: list[ModelStatus] = []
        self._lock = threading.Lock()

    def __call__(self, status: ModelStatus) -> None:
        with self._lock:
            self.items.append(status)


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[Callable[..., ModelStore]]:
    made: list[ModelStore] = []

    def make(path: Path, start: bool = True, **kw: object) -> ModelStore:
        kw.setdefault("poll_interval", POLL)
        s = ModelStore(path, **kw)  # type: ignore[arg-type]
        made.append(s)
        s.load_now()
        if start:
            s.start()
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def live(tmp_path: Path, models: tuple[Path, Path]) -> Path:
    """A trainer.yml holding model A, in a folder of its own."""
    path = tmp_path / "trainer.yml"
    shutil.copyfile(models[0], path)
    return path


def test_first_load_is_synchronous_and_reports_the_model(live, models, store_factory) -> None:
    store = store_factory(live, start=False)
    st = store.status
    assert store.current is not None
    assert st.state == "loaded"
    assert st.version == version(models[0]) == store.current.version
    assert st.classes == list(CLASSES)
    assert st.samples == store.current.samples > 0
    assert st.error is None
    assert st.reloads == 0
    assert st.load_ms is not None
    assert st.loaded_at is not None


def test_atomically_replaced_file_is_swapped_in_with_its_new_version(
    live, models, store_factory
) -> None:
    changes = Changes()
    store = store_factory(live, on_change=changes)
    old = store.current
    put_atomically(models[1], live)
    until(lambda: store.current is not old)
    assert store.current.version == version(models[1])
    assert store.current.class_names() == ["happy", "sad", "surprise"]
    st = store.status
    assert (st.state, st.version, st.reloads, st.error) == ("loaded", version(models[1]), 1, None)
    assert changes.items[-1] == st  # the owner was told


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage \x89PNG\r\n", b"%YAML:1.0\n---\n"])
def test_garbage_never_replaces_the_working_model(live, store_factory, content) -> None:
    store = store_factory(live)
    good = store.current
    put_atomically(content, live)
    until(lambda: store.status.failures >= 1)
    assert store.current is good
    st = store.status
    assert st.state == "loaded"
    assert st.version == good.version
    assert str(live) in st.error
    assert f"keeping model {good.version}" in st.error


def test_truncated_file_never_replaces_the_working_model(live, models, store_factory) -> None:
    """A writer seen mid-write: model B cut at several points. Checked one poll at a time."""
    data = models[1].read_bytes()
    store = store_factory(live, start=False)
    good = store.current
    for n, frac in enumerate((0.05, 0.3, 0.6, 0.9, 0.999), start=1):
        put_atomically(data[: int(len(data) * frac)], live)
        st = store.poll_once()
        assert store.current is good, f"a file cut at {frac:.1%} replaced the model"
        assert st.failures == n
        assert st.state == "loaded"
        assert st.version == good.version
        assert "truncated" in st.error or "corrupt" in st.error
    # The writer finishes: the whole file loads.
    put_atomically(data, live)
    st = store.poll_once()
    assert st.version == version(models[1])
    assert st.error is None


def test_slow_writer_with_an_unchanged_signature_still_loads(live, models, store_factory) -> None:
    """Coarse timestamps can make the finished file look like the half-written one."""
    data = models[1].read_bytes()
    half = len(data) // 2
    store = store_factory(live, start=False)
    good = store.current
    put_atomically(data[:half] + b"\0" * (len(data) - half), live)
    st = os.stat(live)
    assert store.poll_once().failures == 1
    assert store.current is good
    with open(live, "r+b") as f:  # the writer finishes: same inode, same size...
        f.write(data)
    os.utime(live, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and the same mtime
    assert store.poll_once().version == version(models[1])  # the stable-file retry
    assert store.status.failures == 1


def test_each_distinct_problem_is_logged_once(live, store_factory, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.daemon.model_store")
    changes = Changes()
    store = store_factory(live, start=False, on_change=changes)
    caplog.clear()
    changes.items.clear()  # forget the first load
    put_atomically(b"not a model", live)
    for _ in range(5):  # the load, the stable-file retry, then nothing more to do
        store.poll_once()
    put_atomically(b"not a model either", live)  # a new bad file: a new problem
    store.poll_once()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert all(str(live) in w for w in warnings)
    assert store.status.failures == 2
    assert [c.failures for c in changes.items] == [1, 2]  # the owner heard of each once


def test_bad_file_is_not_reread_every_poll(live, store_factory, monkeypatch) -> None:
    import edged.daemon.model_store as ms

    calls = []
    real = ms.load_model
    monkeypatch.setattr(ms, "load_model", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    store = store_factory(live, start=False)
    put_atomically(b"garbage", live)
    for _ in range(6):
        store.poll_once()
    assert len(calls) == 1 + 2  # load_now, the changed file, one retry once it was stable


def test_deleted_file_keeps_the_model_then_a_new_file_loads(live, models, store_factory) -> None:
    store = store_factory(live)
    good = store.current
    live.unlink()
    until(lambda: store.status.failures >= 1)
    st = store.status
    assert store.current is good
    assert st.state == "loaded"
    assert "deleted" in st.error
    assert f"keeping model {good.version}" in st.error
    put_atomically(models[1], live)
    until(lambda: store.status.version == version(models[1]))
    assert store.status.error is None


def test_no_file_at_start_means_no_model_until_one_appears(tmp_path, models, store_factory):
    path = tmp_path / "trainer.yml"
    changes = Changes()
    store = store_factory(path, on_change=changes)
    assert store.current is None
    st = store.status
    assert st.state == "no model"
    assert st.version is None
    assert "does not exist" in st.error
    assert st.failures == 0  # waiting for a first model is not a failure
    put_atomically(models[0], path)
    until(lambda: store.current is not None)
    assert store.status.state == "loaded"
    assert store.status.version == version(models[0])
    assert store.status.reloads == 0  # the first model, not a reload
    assert [c.state for c in changes.items] == ["no model", "loaded"]


def test_bad_file_and_no_older_model_is_an_error_state(tmp_path, models, store_factory) -> None:
    path = tmp_path / "trainer.yml"
    path.write_bytes(models[0].read_bytes()[:1000])
    store = store_factory(path)
    assert store.current is None
    assert store.status.state == "error"
    assert "truncated" in store.status.error or "corrupt" in store.status.error
    put_atomically(models[0], path)
    until(lambda: store.current is not None)
    assert store.status.state == "loaded"


def test_workshop_labels_name_the_classes_of_a_file_without_names(tmp_path, store_factory) -> None:
    """A workshop trainer.yml (LBPH's own write(), no names inside) with custom labels."""
    import cv2
    import numpy as np

    rec = cv2.face.LBPHFaceRecognizer_create()
    rng = np.random.default_rng(1)
    faces = [rng.integers(0, 255, (40, 40), dtype=np.uint8) for _ in range(4)]
    rec.train(faces, np.array([0, 0, 1, 1], np.int32))
    path = tmp_path / "trainer.yml"
    rec.write(str(path))
    store = store_factory(path, start=False, labels=["calm", "excited"])
    assert store.status.classes == ["calm", "excited"]


def test_request_reload_reloads_an_unchanged_file(live, store_factory) -> None:
    store = store_factory(live, poll_interval=60.0)  # polling alone would not notice
    first = store.current
    store.request_reload()
    until(lambda: store.status.reloads == 1)
    assert store.current is not first
    assert store.current.version == first.version  # same file, freshly read


def test_request_reload_is_safe_from_many_threads(live, store_factory) -> None:
    store = store_factory(live, poll_interval=60.0)
    threads = [threading.Thread(target=store.request_reload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    until(lambda: store.status.reloads >= 1)
    assert store.status.state == "loaded"


def test_stop_is_immediate_even_with_a_long_poll_interval(live) -> None:
    store = ModelStore(live, poll_interval=30.0)
    store.load_now()
    store.start()
    time.sleep(0.05)  # let the thread reach its wait
    t0 = time.monotonic()
    store.stop()
    assert time.monotonic() - t0 < 1.0  # not the 30 s poll
    assert not store.running


def test_a_failing_callback_does_not_stop_reloading(live, models, store_factory) -> None:
    def boom(status: ModelStatus) -> None:
        raise RuntimeError("owner bug")

    store = store_factory(live, on_change=boom)
    put_atomically(models[1], live)
    until(lambda: store.status.version == version(models[1]))
    put_atomically(models[0], live)
    until(lambda: store.status.version == version(models[0]))


def test_an_unexpected_error_in_a_check_is_logged_once_and_loading_goes_on(
    live, models, store_factory, monkeypatch, caplog
) -> None:
    """An error type the store does not expect escapes its check: the store's Worker logs
    it once with its traceback and restarts the thread; a later model still loads."""
    caplog.set_level(logging.DEBUG, logger="edged.daemon")
    real_stat = os.stat
    raised = threading.Event()

    def flaky_stat(path, *args, **kwargs):
        if Path(path) == live and not raised.is_set():
            raised.set()
            raise ValueError("stat result out of range")  # not an OSError: not foreseen
        return real_stat(path, *args, **kwargs)

    fatal: list[str] = []
    store = store_factory(live, on_fatal=fatal.append)  # loaded A before the fault
    monkeypatch.setattr(os, "stat", flaky_stat)
    assert raised.wait(10)
    put_atomically(models[1], live)
    until(lambda: store.status.version == version(models[1]))
    assert store.status.error is None
    assert store.running
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is ValueError
    assert "edged-model" in errors[0].getMessage()
    assert fatal == []


def test_stopped_stores_leave_no_open_pipes(live) -> None:
    """Each started store has a wake-up pipe; it is closed once the store is gone."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd")
    before = len(list(fds.iterdir()))
    for _ in range(20):
        store = ModelStore(live, poll_interval=POLL)
        store.start()
        store.request_reload()
        store.stop()
        del store
    assert len(list(fds.iterdir())) <= before


def test_a_fifo_at_the_model_path_is_refused_and_later_models_still_load(
    live, models, store_factory
) -> None:
    """A FIFO used to block the loading thread for good: no later model, no SIGHUP."""
    store = store_factory(live)
    good = store.current
    fifo = live.with_name("fifo")
    os.mkfifo(fifo)
    os.replace(fifo, live)
    until(lambda: store.status.failures >= 1)
    assert store.current is good
    assert f"{live} is a named pipe, not a model file" in store.status.error
    store.request_reload()  # SIGHUP: the thread is free to carry it out
    until(lambda: store.status.failures >= 2)
    put_atomically(models[1], live)
    until(lambda: store.status.version == version(models[1]))
    assert store.status.error is None
    store.request_reload()
    until(lambda: store.status.reloads >= 2)
    assert store.status.version == version(models[1])


def test_a_model_over_the_configured_size_is_refused_and_the_old_one_kept(
    live, models, store_factory
) -> None:
    store = store_factory(live, start=False, max_bytes=models[0].stat().st_size)
    good = store.current
    assert good is not None
    bigger = models[0].read_bytes() + b"\n" * 10
    put_atomically(bigger, live)
    status = store.poll_once()
    assert store.current is good
    assert "above model.max_size_mb" in status.error


def test_the_memory_of_a_swapped_out_model_is_given_back_once_the_loop_lets_go(
    live, models, store_factory, monkeypatch
) -> None:
    """malloc_trim runs after the old model is gone, not while a frame still uses it."""
    import edged.daemon.model_store as ms

    store = store_factory(live, start=False)
    old = store.current  # the frame loop, mid-frame, holds the old model
    gone = weakref.ref(old)
    trims: list[bool] = []  # for each trim: was the old model still alive?
    monkeypatch.setattr(ms, "release_memory", lambda: trims.append(gone() is not None))
    put_atomically(models[1], live)
    store.poll_once()
    assert store.current is not old
    assert trims == []  # not yet: the old model is still in use
    del old  # the frame ends
    store.poll_once()
    assert trims == [False]  # given back, with the old model gone
