"""The commands, and the one place where errors become exit statuses.

``edged``: ``run`` (the daemon), ``detect``, ``config check``, ``ha-remove``.
``edged-train``: build ``trainer.yml`` from labelled images (and ``--eval``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from enum import IntEnum

from edged import __version__, config_cmd, detect, publisher, run
from edged.errors import (
    BrokerError,
    CameraError,
    ConfigError,
    DatasetError,
    EdgedError,
    ModelError,
)

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


_STATUS: list[tuple[type[EdgedError], ExitStatus]] = [
    (ConfigError, ExitStatus.CONFIG),
    (DatasetError, ExitStatus.DATAERR),
    (ModelError, ExitStatus.NOINPUT),
    (CameraError, ExitStatus.UNAVAILABLE),
    (BrokerError, ExitStatus.UNAVAILABLE),
]


def exit_status_for(err: EdgedError) -> ExitStatus:
    for kind, status in _STATUS:
        if isinstance(err, kind):
            return status
    return ExitStatus.ERROR


def setup_logging(level: str = "info") -> None:
    """Readable in a terminal and in journalctl (which adds its own time and unit name)."""
    under_journal = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journal:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(
        level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True
    )


def _run_guarded(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return int(fn(args))
    except EdgedError as e:
        print(f"{_prog(args)}: error: {e}", file=sys.stderr)
        return exit_status_for(e)
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except Exception:
        if getattr(args, "traceback", False):
            raise
        log.exception("unexpected error (a bug: please report it with this traceback)")
        return ExitStatus.SOFTWARE


def _prog(args: argparse.Namespace) -> str:
    return getattr(args, "prog", "edged")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edged",
        description="On-device facial-expression daemon: finds faces with OpenCV's Haar cascade, "
        "classifies their expression with an LBPH model (trainer.yml) and publishes the "
        "result over MQTT.",
    )
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    p.add_argument("--traceback", action="store_true", help="show tracebacks for unexpected errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return p


# Each command module adds itself here: a function taking the subparsers object and
# calling ``set_defaults(func=...)`` on its parser.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    detect.register,
    run.register,
    config_cmd.register,
    publisher.register,
]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.prog = "edged"
    return _run_guarded(args.func, args)


def train_main(argv: Sequence[str] | None = None) -> int:
    from edged import trainer

    args = trainer.build_parser().parse_args(argv)
    args.prog = "edged-train"
    return _run_guarded(trainer.run, args)
