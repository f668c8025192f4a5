"""Command-line value types the commands share: numbers within bounds, worded one way."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def _shown(bound: float) -> str:
    """A bound as a person writes it: 1073741824, not 1.07374e+09; 0.5, not 0.500000."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


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
            raise argparse.ArgumentTypeError(f"{text!r} must be more than {_shown(above)}")
        if low is not None and high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be in {_shown(low)}..{_shown(high)}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {_shown(low)}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text!r} must be at most {_shown(high)}")
        return value

    return parse
