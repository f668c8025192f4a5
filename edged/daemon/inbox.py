"""News for the frame loop from other threads and signal handlers.

The camera grabber, the model store, outputs (commands such as the privacy switch) and
signal handlers only append here; the loop drains it once per tick, so all the daemon's
state has one owner, the loop thread. ``deque.append``/``popleft`` are atomic, so
producers need no lock (a signal handler must not take one); a stop wakes the loop at
once through a self-pipe.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edged.daemon.waker import Waker
from edged.errors import ExitStatus

if TYPE_CHECKING:
    from edged.daemon.outputs import ModelStatus


@dataclass(frozen=True, slots=True)
class CameraNews:
    online: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ModelNews:
    status: ModelStatus


@dataclass(frozen=True, slots=True)
class DetectCommand:
    on: bool
    source: str


@dataclass(frozen=True, slots=True)
class ReloadCommand:
    source: str


News = CameraNews | ModelNews | DetectCommand | ReloadCommand


class Inbox:
    """Implements the outputs' `Commands`, and the callbacks the workers report through."""

    def __init__(self) -> None:
        self._items: deque[News] = deque()
        self._stop = Waker()
        self.stop_reason = ""
        self.exit_status = ExitStatus.OK
        self.stop_at: float | None = None  # monotonic time of the first stop request

    # -- producers: any thread -----------------------------------------------------------

    def camera_changed(self, online: bool, reason: str) -> None:
        self._items.append(CameraNews(online, reason))

    def model_changed(self, status: ModelStatus) -> None:
        self._items.append(ModelNews(status))

    def set_detect(self, on: bool, source: str) -> None:
        self._items.append(DetectCommand(on, source))

    def reload_model(self, source: str = "request") -> None:
        self._items.append(ReloadCommand(source))

    def request_stop(
        self, reason: str, status: ExitStatus = ExitStatus.OK, at: float | None = None
    ) -> None:
        """Finish the tick and shut down. Safe from any thread or signal handler.

        ``at``: when the request was really made (monotonic), if earlier than now (a
        signal held while starting); the shutdown's deadline counts from it.
        """
        if not self.stop_reason:
            self.stop_reason = reason
            self.exit_status = status
            self.stop_at = time.monotonic() if at is None else at
        self._stop.set()

    def worker_failed(self, reason: str) -> None:
        """A supervised worker gave up: stop with a failure status so systemd restarts us."""
        self.request_stop(reason, ExitStatus.SOFTWARE)

    # -- the loop ------------------------------------------------------------------------

    def drain(self) -> Iterator[News]:
        """Everything that arrived since the last drain, oldest first."""
        while self._items:
            yield self._items.popleft()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s or until a stop is requested; True once stopping."""
        return self._stop.wait(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.flag

    def clear(self) -> None:
        """Forget pending news."""
        self._items.clear()

    def drop_model_news(self) -> None:
        """Forget pending model reports, keep the rest (start-up: the first load is
        reported separately, but a SIGHUP held while starting is still a reload)."""
        kept = [n for n in self.drain() if not isinstance(n, ModelNews)]
        self._items.extend(kept)

    def close(self) -> None:
        self._stop.close()
