"""The ``edged`` and ``edged-train`` entry points: parse, then run one command, guarded.

``edged``: ``run`` (the daemon), ``detect``, ``enroll``, ``config``, ``ha-remove`` (one
module each in `edged.commands`).
``edged-train``: build ``trainer.yml`` from labelled images (and ``--eval``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import cast

from edged import __version__
from edged.commands import config, demo, detect, enroll, ha_remove, run
from edged.errors import RedactingArgumentParser, run_guarded
from edged.training import trainer


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
    for register in COMMANDS:
        register(sub)
    return p


# Each command module adds itself here: a function taking the subparsers object and
# calling ``set_defaults(func=...)`` on its parser.
COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    detect.register,
    enroll.register,
    run.register,
    config.register,
    ha_remove.register,
    demo.register,
]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(args.func, args, "edged")


def train_main(argv: Sequence[str] | None = None) -> int:
    return trainer.main(argv)
