"""The ``edged`` and ``edged-train`` entry points: parse, then run one command, guarded.

``edged``: ``run`` (the daemon), ``detect``, ``enroll``, ``config``, ``ha-remove`` (one
module each in `edged.commands`).
``edged-train``: build ``trainer.yml`` from labelled images (and ``--eval``).

The commands (and so OpenCV and paho) are imported only after `edged.daemon.early` holds
SIGTERM, SIGINT and SIGHUP: a signal during those slow imports is honoured, not fatal.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import cast

from edged import __version__
from edged.daemon import early
from edged.errors import ExitStatus, RedactingArgumentParser, run_guarded

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def build_parser() -> argparse.ArgumentParser:
    p = RedactingArgumentParser(
        prog="edged",
        description="On-device facial-expression daemon: finds faces with OpenCV's Haar cascade, "
        "classifies their expression with an LBPH model (trainer.yml) and publishes the "
        "result over MQTT.",
    )
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    p.add_argument("--traceback", action="store_true", help="show tracebacks for unexpected errors")
    # Every subcommand's parser is a RedactingArgumentParser too (its errors hide secrets);
    # the commands need only know it is an ArgumentParser.
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        p.add_subparsers(
            dest="command", metavar="COMMAND", required=True, parser_class=RedactingArgumentParser
        ),
    )
    for register in commands():
        register(sub)
    return p


def commands() -> list[Register]:
    """Each command module's ``register``: takes the subparsers object and calls
    ``set_defaults(func=...)`` on its parser. Imported here, not at the top: they pull
    in OpenCV and paho, which must come after `early.catch`."""
    from edged.commands import (  # noqa: PLC0415 (slow imports, after the signals are held)
        config,
        demo,
        detect,
        enroll,
        ha_remove,
        run,
    )

    return [
        detect.register,
        enroll.register,
        run.register,
        config.register,
        ha_remove.register,
        demo.register,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``edged``: signals held from the start; the daemon (``run``) takes them over, any
    other command gets them back before it runs."""
    early.catch()
    try:
        args = build_parser().parse_args(argv)
        if args.command != "run":
            early.release()
        status = run_guarded(args.func, args, "edged")
        if args.command == "run":
            _exit_now_if_left_running(status)
        return status
    except KeyboardInterrupt:  # Ctrl-C while starting, delivered by `release`
        return ExitStatus.INTERRUPTED
    finally:
        early.release(deliver=False)  # ending anyway: a late signal changes nothing


def _exit_now_if_left_running(status: int) -> None:
    """After the daemon's shutdown, a thread still running was left behind on purpose
    (stuck past the deadline: a model parse inside OpenCV, a connect to a frozen broker).
    The interpreter's own exit would then tear down modules and C++ statics under it,
    which takes time (0.45 s measured) and can crash; so flush the logs and leave now."""
    me = threading.current_thread()
    if not any(t is not me and t.is_alive() for t in threading.enumerate()):
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def train_main(argv: Sequence[str] | None = None) -> int:
    from edged.training import trainer  # noqa: PLC0415 (OpenCV: only when training)

    return trainer.main(argv)
