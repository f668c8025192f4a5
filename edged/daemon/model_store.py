"""Watches the model file and swaps a freshly loaded model in between frames.

The store's thread polls ``os.stat`` (like uvicorn's statreload): a changed
(st_mtime_ns, st_size, st_ino) means load. Loading (file I/O and parsing) happens on
that thread; the frame loop only reads `ModelStore.current`, one attribute per frame,
which is replaced in a single assignment. A file that is missing, truncated or corrupt
never replaces a working model: the old one stays, the reason goes to the log (once per
distinct problem) and to `ModelStore.status`.

Only a regular file up to ``max_bytes`` is read (`load_model` is the one gate). Loading
never stalls the frame loop: nothing on this thread holds the GIL for long. Memory a
load freed (a big model swapped out, a failed load) is given back to the system
(``malloc_trim``) once the old model is gone, else it would stay in glibc's arenas.

A file written in place (not renamed into place) can be seen half written. Its load
fails, and the next change loads the finished file. Where the finished file has the
same signature as the half one (coarse timestamps, a preallocating writer), a failed
signature is tried once more after it has been stable for a poll interval.

Enrolled faces (issue 17): the same thread polls the enrollment store's `version` (its
folders listed, no file read) and, when it or the model file changed, makes the model
in use from the base model file plus the store's crops (`compose`), in memory. The base
file is only ever read. Nothing in the store can cost the model: a crop, a store or a
compose that fails leaves the base model in use, with one warning per problem.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from edged.daemon.enrolled import read_enrollments
from edged.daemon.outputs import ModelState, ModelStatus
from edged.daemon.waker import Waker
from edged.daemon.workers import FatalHandler, Worker
from edged.enrollment.store import EnrollmentStore
from edged.errors import ModelError
from edged.vision.exemplars import compose
from edged.vision.model import ExpressionModel
from edged.vision.model_file import MAX_MODEL_BYTES, load_model

log = logging.getLogger(__name__)

Signature = tuple[int, int, int]  # st_mtime_ns, st_size, st_ino


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library)."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_memory() -> None:
    """Give the free memory in glibc's arenas back to the system.

    A 150 MB text model takes ~500 MB while it is parsed. Freed, that memory stays in
    the arenas of the thread that allocated it (RSS 430 MB after the model is gone);
    ``malloc_trim(0)`` returns it. ctypes releases the GIL for the call.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class ModelStore:
    """Owns the current model. Only the store (its thread, or `load_now`) replaces
    `current`; any thread may read it.

    ``on_change(status)`` runs on the loading thread after every successful load and
    every newly seen problem (the same events that are logged). An unexpected exception
    on the thread is logged and the thread restarted (see `Worker`); ``on_fatal`` hears
    when it keeps failing.

    ``enrolled``: the enrollment store whose crops the model uses as exemplars (None:
    the model file alone).
    """

    def __init__(
        self,
        path: Path | str,
        labels: Sequence[str] | None = None,
        poll_interval: float = 1.0,
        on_change: Callable[[ModelStatus], None] | None = None,
        *,
        on_fatal: FatalHandler | None = None,
        max_bytes: int = MAX_MODEL_BYTES,
        enrolled: EnrollmentStore | None = None,
    ) -> None:
        self.path = Path(path)
        self.enrolled = enrolled
        self.max_bytes = max_bytes  # model.max_size_mb: bigger files are refused unread
        self.labels = list(labels) if labels else None
        self.poll_interval = poll_interval
        self._on_change = on_change
        self._on_fatal = on_fatal
        self.current: ExpressionModel | None = None
        self._base: ExpressionModel | None = None  # the model file's model, as loaded
        self._status = ModelStatus("no model")
        self._load_lock = threading.Lock()  # one check/load at a time (thread vs load_now)
        # Made by `start`: a store used only through `load_now` has no thread, no pipe.
        self._worker: Worker | None = None
        self._waker: Waker | None = None  # its stop flag and wake-ups (request_reload)
        self._runner: threading.Thread | None = None  # the thread running `_run`
        self._seen: Signature | str | None = None  # the last file looked at, or why not
        self._checked = False  # whether any check ran (a file missing from the start)
        self._failed: Signature | None = None  # that signature's load failed...
        self._retried = False  # ...and was tried again once it was stable
        self._logged_error: object = None
        self._force = False
        self._retired: weakref.ref[ExpressionModel] | None = None  # the model swapped out
        self._trim_due = False  # memory to give back once the retired model is gone
        self._store_seen: str | None = None  # the store version `current` was made from
        self._store_warned: frozenset[str] = frozenset()  # the last read's warnings
        self._compose_logged: object = None  # the last failure to use the store

    @property
    def status(self) -> ModelStatus:
        return self._status

    def load_now(self) -> ModelStatus:
        """Check and load synchronously (start-up); never raises for a bad file: see status."""
        self._check(force=True)
        return self._status

    def poll_once(self) -> ModelStatus:
        """One check of the file, as the thread makes every ``poll_interval`` (for tests, tools)."""
        self._check(force=False)
        return self._status

    def start(self) -> None:
        """Start the polling thread (call `load_now` first for a synchronous first load)."""
        if self._worker is not None:
            raise RuntimeError("ModelStore.start() called twice")
        # The pipe is closed when the store is garbage, never in `stop`: a signal
        # handler may still call `request_reload`, and a reused fd must not get its byte.
        self._waker = Waker()
        # A restart waits about a poll (at most 1 s): the next check would come then anyway.
        first = min(self.poll_interval, 1.0)
        self._worker = Worker(
            "edged-model", self._run, on_fatal=self._on_fatal, backoff=(first, 30.0)
        )
        self._worker.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread at once (even mid-wait or mid-backoff) and join it."""
        self.request_stop()
        if not self.join(timeout):
            log.warning("model loader did not stop within %.1f s", timeout)

    def request_stop(self) -> None:
        """Ask the thread to end without waiting (a load under way finishes first: OpenCV's
        parse cannot be interrupted); the daemon then waits against its deadline."""
        worker, waker = self._worker, self._waker
        if worker is None or waker is None:
            return
        worker.stop()
        waker.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the thread; True if it ended (or never ran, or
        this is the store's own thread: from the callback, it ends after it)."""
        worker = self._worker
        if worker is None or threading.current_thread() is self._runner:
            return True
        return worker.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the polling thread is alive (also while it waits to restart)."""
        return self._worker is not None and self._worker.alive

    def request_reload(self) -> None:
        """Reload even if the file looks unchanged (SIGHUP). Safe from any thread or handler:
        a flag and one ``os.write``, no lock."""
        self._force = True
        waker = self._waker
        if waker is not None:  # not started: the next check sees the flag
            waker.poke()

    # -- the polling thread ------------------------------------------------------------

    def _run(self) -> None:
        """Poll until stopped. An exception escaping a check goes to the `Worker`, which
        logs it once with its traceback and runs this again after a backoff."""
        self._runner = threading.current_thread()
        waker = self._waker
        assert waker is not None  # made by start, before the thread
        while not waker.flag:
            self._check(force=False)
            waker.wait(self.poll_interval)

    def _stat(self) -> Signature | str | None:
        """The file's signature, None if it does not exist, or why it cannot be read."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as e:
            return f"cannot read model file {self.path}: {e.strerror}"
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _check(self, force: bool) -> None:
        with self._load_lock:
            if self._trim_due:
                self._release()
            if self._force:
                self._force, force = False, True
            if not self._check_file(force):
                self._check_store(force)

    def _check_file(self, force: bool) -> bool:
        """Look at the model file, load it if changed; True if a load succeeded (which
        read the enrollment store too)."""
        sig = self._stat()
        if isinstance(sig, str):
            if force or sig != self._seen:
                self._problem(sig)
            self._seen, self._checked = sig, True
            return False
        if sig is None:
            if force or self._seen is not None or not self._checked:
                self._missing()
            self._seen, self._checked = None, True
            return False
        self._checked = True
        if force or sig != self._seen:
            self._seen = sig
            return self._load(sig)
        if sig == self._failed and not self._retried:
            self._retried = True  # stable for a poll: maybe a slow writer finished
            log.debug("retrying the model file %s now that it is stable", self.path)
            return self._load(sig, retry=True)
        return False

    def _check_store(self, force: bool) -> None:
        """Remake the model from the base model when the store changed (or on request).
        Unchanged, this costs one listing of the store's folders."""
        base, store = self._base, self.enrolled
        if base is None or store is None:
            return
        try:
            changed = force or store.version() != self._store_seen
        except OSError as e:  # a folder removed mid-listing: look again next poll
            log.debug("enrollment store %s not listed: %s", store.root, e)
            return
        if not changed:
            return
        t0 = time.perf_counter()
        model = self._with_enrollments(base)
        if model is self.current:
            return  # still the base model (the store gave nothing usable, again)
        self._use(model, t0, base_loaded=False)

    def _missing(self) -> None:
        if self.current is None:
            error = f"model file {self.path} does not exist"
            self._status = replace(self._status, state="no model", error=error)
            self._report(
                error,
                f"no model file at {self.path} yet: faces are detected but not classified "
                "until it appears (train one with edged-train)",
            )
        else:
            self._problem(
                f"model file {self.path} was deleted; keeping model {self.current.version}"
            )

    def _load(self, sig: Signature, retry: bool = False) -> bool:
        """Load the file (then the store); on failure keep the current model. A failed
        retry of the same file is the same problem, so it is not counted again."""
        t0 = time.perf_counter()
        base: ExpressionModel | None = None
        try:
            base = load_model(self.path, self.labels, max_bytes=self.max_bytes)
        except ModelError as e:
            self._failed, self._retried = sig, retry
            keeping = f"; keeping model {self.current.version}" if self.current else ""
            self._problem(f"{e}{keeping}", sig, count=not retry)
        except Exception as e:  # OpenCV or the OS failing in a way load_model did not map
            self._failed, self._retried = sig, True
            self._problem(f"cannot load model file {self.path}: {e}", sig, count=not retry)
        if base is None:
            # Out of the except block: its traceback kept the failed load's memory alive.
            self._release()
            return False
        self._base = base
        self._failed, self._retried, self._logged_error = None, False, None
        model = self._with_enrollments(base)
        del base
        self._use(model, t0, base_loaded=True)
        return True

    def _with_enrollments(self, base: ExpressionModel) -> ExpressionModel:
        """``base`` with the store's crops as exemplars, or ``base`` itself when there
        are none or they cannot be used (logged once per problem, never raised)."""
        store = self.enrolled
        if store is None:
            return base
        try:
            # Before reading: a change made while the crops are read is seen next poll.
            self._store_seen = store.version()
            got = read_enrollments(store, base)
            self._warn_store(got.warnings)
            if got.exemplars is None:
                self._compose_logged = None
                return base
            model = compose(base, got.exemplars)
        except ModelError as e:
            self._store_failed(logging.WARNING, f"enrolled faces not used: {e}", e)
        except Exception as e:  # a bug or the machine: the base model is still good
            self._store_failed(logging.ERROR, f"enrolled faces not used: {e!r}", e)
        else:
            self._compose_logged = None
            return model
        return base

    def _warn_store(self, warnings: Sequence[str]) -> None:
        """Each problem of the store once: a warning that stays is not repeated at every
        change; one that went away and came back is."""
        for w in warnings:
            if w in self._store_warned:
                log.debug("%s", w)
            else:
                log.warning("%s", w)
        self._store_warned = frozenset(warnings)

    def _store_failed(self, level: int, message: str, e: Exception) -> None:
        key = (type(e), str(e))
        if key == self._compose_logged:
            log.debug("%s (again)", message)
            return
        self._compose_logged = key
        log.log(
            level,
            "%s; using the model file %s alone",
            message,
            self.path,
            exc_info=level >= logging.ERROR,
        )

    def _use(self, model: ExpressionModel, t0: float, *, base_loaded: bool) -> None:
        """Put ``model`` in use and report it."""
        load_ms = (time.perf_counter() - t0) * 1000.0
        old = self.current
        self.current = model  # the swap: one assignment, read once per frame by the loop
        prev = self._status
        self._status = ModelStatus(
            state="loaded",
            version=model.version,
            error=None if base_loaded else prev.error,
            loaded_at=time.time(),
            load_ms=load_ms,
            reloads=prev.reloads + (old is not None),
            failures=prev.failures,
            samples=model.samples,
            classes=model.class_names(),
            # The exemplars in use: the store's, or those of a model file made with them.
            enrolled_people=len(ex.persons) if (ex := model.meta.exemplars) else 0,
            enrolled_faces=len(ex.crops) if ex else 0,
        )
        if base_loaded:
            self._log_loaded(model, old, load_ms)
        else:
            self._log_enrolled(model, old, load_ms)
        if ex:
            faces = Counter(c.person for c in ex.crops)
            log.debug(
                "enrolled people: %s",
                ", ".join(f"{p} ({n} faces)" for p, n in sorted(faces.items())),
            )
        if old is not None:
            self._retired = weakref.ref(old)
        del old, model  # the frame loop may still hold the old model for one frame
        self._notify()
        self._release()

    def _enrolled_text(self) -> str:
        """``with 3 enrolled people (12 faces)``, or ``without enrolled people``: counts
        only (names are personal data, and logs travel: bug reports, journald
        forwarding); the names go to the debug log."""
        st = self._status
        if not st.enrolled_people:
            return "without enrolled people"
        people = "person" if st.enrolled_people == 1 else "people"
        return f"with {st.enrolled_people} enrolled {people} ({st.enrolled_faces} faces)"

    def _log_enrolled(
        self, model: ExpressionModel, old: ExpressionModel | None, load_ms: float
    ) -> None:
        base = self._base
        assert base is not None
        log.info(
            "enrolled faces changed: model %s (was %s) is %s version %s %s, in %.0f ms",
            model.version,
            old.version if old is not None else "none",
            self.path.name,
            base.version,
            self._enrolled_text(),
            load_ms,
        )

    def _log_loaded(
        self, model: ExpressionModel, old: ExpressionModel | None, load_ms: float
    ) -> None:
        names = ", ".join(model.class_names())
        base = self._base
        # With enrolled faces the model's version is not the file's: say both.
        enrolled = (
            f", file version {base.version} {self._enrolled_text()}"
            if base is not None and model is not base
            else ""
        )
        if old is None:
            log.info(
                "loaded model %s from %s: %d classes (%s), %d samples, %s%s, in %.0f ms",
                model.version,
                self.path,
                len(model.class_names()),
                names,
                model.samples,
                model.source,
                enrolled,
                load_ms,
            )
        else:
            log.info(
                "reloaded model %s from %s (was %s): %d classes (%s), %d samples%s, in %.0f ms",
                model.version,
                self.path,
                old.version,
                len(model.class_names()),
                names,
                model.samples,
                enrolled,
                load_ms,
            )

    def _release(self) -> None:
        """Give freed memory back to the system, once the swapped-out model is gone: the
        frame loop drops it after the frame that used it, so a poll later at the latest."""
        retired = self._retired
        if retired is not None and retired() is not None:
            self._trim_due = True
            return
        self._retired, self._trim_due = None, False
        release_memory()

    def _problem(self, error: str, file: object = None, count: bool = True) -> None:
        state: ModelState = "loaded" if self.current is not None else "error"
        prev = self._status
        self._status = replace(prev, state=state, error=error, failures=prev.failures + count)
        self._report((error, file), error)

    def _report(self, key: object, message: str) -> None:
        """Log and notify once per distinct problem (a new bad file is a new problem);
        repeats only go to the debug log."""
        if key == self._logged_error:
            log.debug("model file still unusable: %s", message)
            return
        self._logged_error = key
        log.warning("%s", message)
        self._notify()

    def _notify(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(self._status)
        except Exception:
            log.exception("model change callback failed")
