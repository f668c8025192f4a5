"""The errors edged reports to people. The CLI maps each kind to one exit status."""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import NoReturn

from edged.redact import redact, redact_arguments

log = logging.getLogger("edged")


class ExitStatus(IntEnum):
    """sysexits.h values, so scripts and systemd can tell failures apart."""

    OK = 0
    ERROR = 1
    USAGE = 2
    DATAERR = 65  # a dataset or input that cannot be used
    NOINPUT = 66  # a model or input file that is missing or unreadable
    UNAVAILABLE = 69  # camera or broker not reachable
    SOFTWARE = 70  # a bug: traceback shown
    CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus=78 stops restart loops
    INTERRUPTED = 130


class EdgedError(Exception):
    """An expected failure with a message meant for the person running edged."""


class ConfigError(EdgedError):
    """Invalid settings: exits 78 (EX_CONFIG) so systemd does not restart-loop on it."""


class DatasetError(EdgedError):
    """A training dataset that cannot be used as given."""


class ModelError(EdgedError):
    """A model file that is missing, truncated, corrupt or of an unknown kind."""


class CameraError(EdgedError):
    """A frame source that cannot be opened or stopped delivering."""


class BrokerError(EdgedError):
    """The MQTT broker refused us or cannot be reached."""


class ListenError(EdgedError):
    """The web page's address cannot be listened on (port taken, address not here)."""


class InputMissing(EdgedError):
    """An input path that does not exist (exit 66, like a missing model)."""


class RedactingArgumentParser(argparse.ArgumentParser):
    """The parser of every ``edged`` and ``edged-train`` command (subcommands inherit it:
    ``add_subparsers`` makes parsers of the parent's class): argparse's, except that an
    error never shows a secret. ``edged run --password x`` is an unknown option, and
    argparse's "unrecognized arguments: --password x" would reach the journal.
    """

    def parse_known_args(  # type: ignore[override]  # typeshed: overloads per namespace type
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)  # for `error`
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        given = getattr(self, "_given", None)
        super().error(redact_arguments(message, sys.argv[1:] if given is None else given))


# Each kind of error and its exit status; the first match wins (subclasses first).
_STATUS: tuple[tuple[type[EdgedError], ExitStatus], ...] = (
    (ConfigError, ExitStatus.CONFIG),
    (DatasetError, ExitStatus.DATAERR),
    (ModelError, ExitStatus.NOINPUT),
    (InputMissing, ExitStatus.NOINPUT),
    (CameraError, ExitStatus.UNAVAILABLE),
    (BrokerError, ExitStatus.UNAVAILABLE),
    (ListenError, ExitStatus.UNAVAILABLE),
)


def exit_status_for(err: EdgedError) -> ExitStatus:
    """The one place an error becomes an exit status."""
    for kind, status in _STATUS:
        if isinstance(err, kind):
            return status
    return ExitStatus.ERROR


def run_guarded(
    fn: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str
) -> int:
    """Run a command: its own errors become one line and their exit status; anything
    else is a bug, logged with its traceback (raised with ``--traceback``), exit 70.

    A closed stdout (``edged detect --json ... | head -1``) ends the command quietly,
    like any Unix tool: no traceback, no message, and 141 (128 + SIGPIPE), what a shell
    reports for a tool killed by SIGPIPE. stdout is flushed here, inside the guard, so
    the interpreter's own flush at exit never meets the closed pipe.
    """
    try:
        status = int(fn(args))
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        if _stdout_is_closed():
            return _stdout_closed()
        if getattr(args, "traceback", False):  # another pipe or socket: a bug like any
            raise
        return _report_bug()
    except EdgedError as e:
        print(f"{prog}: error: {redact(str(e))}", file=sys.stderr)
        return exit_status_for(e)
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except Exception:
        if getattr(args, "traceback", False):
            raise
        return _report_bug()


def _report_bug() -> int:
    """Log the exception being handled, with its traceback (secrets hidden): exit 70."""
    log.error(
        "unexpected error (a bug: please report it with this traceback)\n%s",
        redact(traceback.format_exc().rstrip()),
    )
    return ExitStatus.SOFTWARE


def _stdout_is_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error on it)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
    except (AttributeError, OSError, ValueError):  # replaced by a StringIO, or no poll()
        return False
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _stdout_closed() -> int:
    """Point stdout at /dev/null, so what is still buffered (and the flush at exit) goes
    nowhere instead of raising again; the status a shell shows for a SIGPIPE death."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    return 128 + signal.SIGPIPE
