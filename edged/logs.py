"""Logging set-up: readable in a terminal and in journalctl."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str = "info") -> None:
    """Readable in a terminal and in journalctl (which adds its own time and unit name)."""
    under_journal = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journal:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(
        level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True
    )
