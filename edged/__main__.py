"""``python -m edged``: the daemon by default (``python -m edged --config F`` = ``edged run``)."""

import sys

from edged.daemon import early

early.catch()  # before anything slow: a SIGHUP or SIGTERM while starting is honoured

from edged.cli import main  # noqa: E402 (after the signals are held)

_GLOBAL = {"-h", "--help", "--version", "--traceback"}
argv = sys.argv[1:]
if not argv or (argv[0].startswith("-") and argv[0] not in _GLOBAL):
    argv = ["run", *argv]
raise SystemExit(main(argv))
