"""Stopping the daemons a bench started: what bench/motion.py and bench/web.py share."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import IO, Any


def stop(running: Sequence[tuple[subprocess.Popen[Any], threading.Thread | None]]) -> None:
    """SIGTERM to all at once (they shut down in parallel), then wait for each (killed
    after 15 s), its reader thread, and close the pipe it read."""
    for proc, _ in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, reader in running:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if reader is not None:
            reader.join(5)
        pipe: IO[Any] | None = proc.stdout or proc.stderr
        if pipe is not None:
            pipe.close()
