"""Logging set-up: readable in a terminal, one entry per record with its priority in the journal.

`setup_logging` picks one of three ways out, once, at start:

* **stderr is the journal and systemd-python imports** (the ``systemd`` extra): records go
  through `systemd.journal.JournalHandler`, journald's native protocol. One entry per
  record, traceback included in ``MESSAGE``; ``PRIORITY`` from the level (so
  ``journalctl -u edged -p warning`` works), ``SYSLOG_IDENTIFIER=edged``, the logger's
  name as ``LOGGER`` (``journalctl -u edged LOGGER=edged.daemon.capture``), and
  ``CODE_FILE``/``CODE_LINE``/``CODE_FUNC``/``THREAD_NAME``. Only those fields are sent:
  the stock handler would also send every attribute of the record (its arguments, the
  exception's repr), past any filter that rewrote the message. A record journald's socket
  refuses goes to stderr as in the next case.
* **stderr is the journal, no systemd-python**: one line per record on stderr, starting
  with the sd-daemon(3) priority prefix (``<3>`` error, ``<4>`` warning, ``<6>`` info,
  ``<7>`` debug) that journald turns into the entry's ``PRIORITY``. journald makes an
  entry of every line it reads, so the newlines of a multi-line record (a traceback) are
  shown as `FOLD` (`` ⏎ ``) and the record stays one entry; ``sed 's/ ⏎ /\\n/g'`` unfolds it.
  A line longer than journald's ``LineMax=`` (48K) is still split by journald.
* **anything else** (a terminal, a file, a pipe): readable lines with the time, tracebacks
  as Python prints them.

"stderr is the journal" means what sd_journal_stream_fd(3) and systemd.exec(5) say:
systemd sets ``JOURNAL_STREAM=<device>:<inode>`` of the stream it connected, and only when
those match ``fstat(2)`` of fd 2 is stderr still that stream (the variable is inherited by
children and survives a redirect such as ``2>file``). Under journald no time is added
(the journal has its own); the text keeps the level and logger name, for readers of
``journalctl`` without colours.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edged.redact import RedactingFilter

SYSLOG_IDENTIFIER = "edged"
FOLD = " ⏎ "  # a newline inside a record, on the one line the journal stream gets
TEXT = "%(levelname)s %(name)s: %(message)s"
# What the journal gets besides MESSAGE; the stock JournalHandler sends every record attribute.
JOURNAL_FIELDS = frozenset(
    {
        "PRIORITY",
        "SYSLOG_IDENTIFIER",
        "LOGGER",
        "THREAD_NAME",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
        "MESSAGE_ID",
    }
)


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (as systemd-python maps it, levels in between too)."""
    for top, prio in (
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
    ):
        if levelno <= top:
            return prio
    return 1


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """True when ``fd`` is the journal stream systemd connected (``JOURNAL_STREAM`` matches)."""
    env = os.environ if environ is None else environ
    dev, sep, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        want = (int(dev), int(ino))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == want


def fold(text: str) -> str:
    """``text`` on one line: every newline shown as `FOLD`."""
    return text.rstrip("\n").replace("\n", FOLD)


class PrefixFormatter(logging.Formatter):
    """One line per record, ``<N>``-prefixed for journald's stream (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{priority(record.levelno)}>{fold(super().format(record))}"


Sender = Callable[..., object]


def _fields_only(send: Sender) -> Callable[..., None]:
    """A JournalHandler sender that passes on only `JOURNAL_FIELDS` (and MESSAGE).

    Should journald's socket be unusable, the record goes to stderr as a prefixed line:
    stderr is the journal stream, so it still lands there, with its priority.
    """

    # Positional-only: the handler passes every record attribute as a keyword, ``message`` too.
    def sender(text: str, /, **fields: Any) -> None:
        keep = {k: v for k, v in fields.items() if k in JOURNAL_FIELDS and v is not None}
        try:
            send(text, **keep)
        except OSError:
            sys.stderr.write(f"<{keep.get('PRIORITY', 6)}>{fold(text)}\n")
            sys.stderr.flush()

    return sender


def journal_handler() -> logging.Handler | None:
    """systemd-python's JournalHandler, or None when systemd-python does not import."""
    try:
        from systemd import journal  # noqa: PLC0415  optional, and only needed under journald
    except ImportError:
        return None
    handler: logging.Handler = journal.JournalHandler(
        sender_function=_fields_only(journal.send), SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER
    )
    return handler


def setup_logging(level: str = "info", filters: Sequence[logging.Filter] = ()) -> logging.Handler:
    """Route the root logger to the journal or stderr (see the module docstring).

    Replaces any handlers the root logger had. ``filters`` (e.g. one that redacts secrets)
    are attached to the handler installed, so they see every record before it is
    formatted; a filter that rewrites ``record.msg``/``args`` (and ``exc_text``, for a
    traceback) controls all the text that leaves. Returns the handler.
    """
    handler: logging.Handler | None = None
    if stderr_is_journal():
        handler = journal_handler()
        if handler is not None:
            handler.setFormatter(logging.Formatter(TEXT))
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(PrefixFormatter(TEXT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s " + TEXT))
    handler.addFilter(RedactingFilter())  # no secret leaves in any record, traceback included
    for f in filters:
        handler.addFilter(f)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler
