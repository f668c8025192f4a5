"""Watches the model file and swaps a freshly loaded model in between frames.

The store's thread polls ``os.stat`` (like uvicorn's statreload): a changed
(st_mtime_ns, st_size, st_ino) means load. Loading (file I/O and parsing) happens on
that thread; the frame loop only reads `ModelStore.current`, one attribute per frame,
which is replaced in a single assignment. A file that is missing, truncated or corrupt
never replaces a working model: the old one stays, the reason goes to the log (once per
distinct problem) and to `ModelStore.status`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edged.vision import ExpressionModel

log = logging.getLogger(__name__)

State = Literal["loaded", "no model", "error"]


@dataclass(frozen=True)
class ModelStatus:
    """What the store has and why; ``error`` is the last problem even while ``loaded``."""

    state: State
    version: str | None = None
    error: str | None = None
    loaded_at: float | None = None  # wall clock of the last successful load
    load_ms: float | None = None
    reloads: int = 0  # successful loads after the first
    failures: int = 0  # loads that failed
    samples: int = 0
    classes: list[str] = field(default_factory=list)


class ModelStore:
    """Owns the current model. One thread writes `current`; any thread may read it.

    ``on_change(status)`` runs on the store's thread after every load attempt that
    changes the status (new model, new problem).
    """

    def __init__(
        self,
        path: Path | str,
        labels: Sequence[str] | None = None,
        poll_interval: float = 1.0,
        on_change: Callable[[ModelStatus], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.labels = list(labels) if labels else None
        self.poll_interval = poll_interval
        self._on_change = on_change
        self.current: ExpressionModel | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    @property
    def status(self) -> ModelStatus:
        raise NotImplementedError

    def load_now(self) -> ModelStatus:
        """Load synchronously (start-up); never raises for a bad file, see the status."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the polling thread (call `load_now` first for a synchronous first load)."""
        raise NotImplementedError

    def stop(self, timeout: float = 2.0) -> None:
        raise NotImplementedError

    def request_reload(self) -> None:
        """Reload even if the file looks unchanged (SIGHUP). Safe from any thread or handler."""
        raise NotImplementedError
