"""Command-line value types the commands share: numbers within bounds, worded one way."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def number(
    kind: type[N],
    *,
    above: N | None = None,
    low: N | None = None,
    high: N | None = None,
) -> Callable[[str], N]:
    """An argparse ``type=`` for an int or a finite float, strictly ``above`` a value
    and/or within ``low``..``high`` (inclusive)."""
    what = "a whole number" if kind is int else "a number"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"{text!r} must be more than {above:g}")
        if low is not None and high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be in {low:g}..{high:g}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {low:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text!r} must be at most {high:g}")
        return value

    return parse
