"""Person and expression names: they become folder names, so only safe ones pass.

Pure: no I/O. A person is ``[A-Za-z0-9_-]{1,32}`` (ASCII only), so ``/``, ``..``,
spaces, NUL and look-alike letters (fullwidth, Cyrillic) can never reach a path. An
expression is spelled as any dataset spells it (``happiness`` → ``happy``, the same
normalisation as training) and must be one of the model's classes, or of the known ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from edged.labels import KNOWN_CLASSES, normalize_label

MAX_PERSON_CHARS = 32
PERSON_RULE = f"letters, digits, '-' and '_' only (ASCII), 1 to {MAX_PERSON_CHARS} characters"
_SAFE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_PERSON_CHARS}}}")


def is_safe_name(name: str) -> bool:
    """Whether ``name`` may be a folder of the store (a person or an expression)."""
    return name.isascii() and _SAFE.fullmatch(name) is not None


def person_problem(name: str) -> str | None:
    """Why ``name`` cannot be a person's name, or None when it can."""
    if is_safe_name(name):
        return None
    return f"person name {name!r} is not allowed: {PERSON_RULE}"


def check_person(name: str) -> str:
    """``name`` itself when it is a safe person name; else `ValueError` naming the rule."""
    problem = person_problem(name)
    if problem:
        raise ValueError(problem)
    return name


def check_expression(name: str, allowed: Sequence[str] | None = None) -> str:
    """The class ``name`` stands for (``Happiness`` → ``happy``), if it is one of
    ``allowed`` (a model's classes; default: the known classes); else `ValueError`
    listing the allowed ones."""
    allowed = tuple(allowed) if allowed else KNOWN_CLASSES
    label = normalize_label(name)
    if label not in allowed:
        raise ValueError(f"unknown expression {name!r}: use one of {', '.join(allowed)}")
    if not is_safe_name(label):  # a model's own class names may be anything printable
        raise ValueError(f"expression {label!r} cannot be a folder name: {PERSON_RULE}")
    return label
