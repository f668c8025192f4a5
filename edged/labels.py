"""Class names as datasets spell them, normalised once for every reader.

Training (every dataset layout, ``--classes``), ``edged detect --labels`` and
``edged enroll --expression`` all go through `normalize_label`, so ``HAPPINESS`` in a
legend, a ``happiness/`` folder and ``--expression Happiness`` are one class: ``happy``.
"""

from __future__ import annotations

from edged.vision.model import WORKSHOP_CLASSES

# The classes edged knows by name: the workshop's five in its id order, then the three
# only the dataset's legend has. Any other name is a class of the user's own.
KNOWN_CLASSES: tuple[str, ...] = (*WORKSHOP_CLASSES, "disgust", "fear", "contempt")

_ALIASES = {
    "angry": "anger",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "neutrality": "neutral",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "contemptuous": "contempt",
}


def normalize_label(name: str) -> str:
    """The class name for a label as some dataset spells it (``HAPPINESS`` → ``happy``).

    Unknown names are kept (lower-cased): a user may train classes of their own.
    """
    key = name.strip().lower().replace(" ", "_")
    return _ALIASES.get(key, key)
