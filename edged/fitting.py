"""Turns prepared face images into the histograms a model file keeps.

The first cut trains LBPH on every face as given. (The accuracy work replaces the
inside of `fit` — mirrored copies, prototypes per class, a fitted temperature —
behind the same signature.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edged.vision import LBPHParams, ModelMeta, PreprocessConfig


@dataclass(frozen=True)
class FitConfig:
    lbph: LBPHParams = field(default_factory=LBPHParams)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


@dataclass(frozen=True)
class FittedModel:
    """Everything `vision.write_model` needs."""

    histograms: list[np.ndarray]
    labels: list[int]
    classes: dict[int, str]
    params: LBPHParams
    meta: ModelMeta


def fit(
    faces: Sequence[np.ndarray],
    labels: Sequence[int],
    classes: Mapping[int, str],
    config: FitConfig | None = None,
) -> FittedModel:
    """Faces already prepared with ``Preprocessor(config.preprocess)``; labels are class ids."""
    cfg = config or FitConfig()
    recognizer = cfg.lbph.create()
    recognizer.train(list(faces), np.asarray(labels, dtype=np.int32))
    return FittedModel(
        histograms=list(recognizer.getHistograms()),
        labels=[int(v) for v in labels],
        classes=dict(classes),
        params=cfg.lbph,
        meta=ModelMeta(preprocess=cfg.preprocess, trained_images=len(faces)),
    )
