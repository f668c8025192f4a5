"""LBPH's spatial histograms and its chi-square distance, computed outside the recognizer.

Training (`training.fitting`) and enrolled faces (`vision.exemplars`) both need the very
histograms and distances LBPH's ``predict`` works with; one copy here keeps them equal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edged.vision.detector import Gray
from edged.vision.model import LBPHParams

Histograms = npt.NDArray[np.float32]  # one LBPH histogram per row
Floats = npt.NDArray[np.float64]

BLOCK = 512  # faces handed to OpenCV at a time (16384 bins: 32 MB as float32)


def lbph_histograms(
    faces: Sequence[Gray], params: LBPHParams, out: Histograms | None = None
) -> Histograms:
    """LBPH's own spatial histograms of ``faces`` (one row each), computed by OpenCV a
    block of faces at a time into one array (``out`` if given): OpenCV's list of
    histograms, a stacked copy and a float copy of 2,000 faces were ~400 MB at once."""
    if out is None:
        out = np.empty((len(faces), params.histogram_size), np.float32)
    for i in range(0, len(faces), BLOCK):
        block = list(faces[i : i + BLOCK])
        recognizer = params.create()
        recognizer.train(block, np.zeros(len(block), np.int32))
        for j, h in enumerate(recognizer.getHistograms()):
            out[i + j] = h.reshape(-1)
    return out


def chi_square(queries: Histograms, refs: Histograms) -> Floats:
    """OpenCV's HISTCMP_CHISQR_ALT (what LBPH predicts with): 2 sum (a-b)^2/(a+b)."""
    out = np.empty((len(queries), len(refs)), np.float64)
    for j, r in enumerate(refs):
        s = queries + r
        d = queries - r
        np.divide(d * d, s, out=d, where=s > 0)
        d[s <= 0] = 0.0
        out[:, j] = 2.0 * d.sum(1, dtype=np.float64)
    return out
