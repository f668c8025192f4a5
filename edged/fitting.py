"""Turns prepared face images into the histograms a model file keeps.

The first cut trains LBPH on every face as given. (The accuracy work replaces the
inside of `fit` — mirrored copies, prototypes per class, a fitted temperature —
behind the same signature.)
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edged.vision import (
    DetectorConfig,
    ExpressionModel,
    FaceDetector,
    LBPHParams,
    ModelMeta,
    PreprocessConfig,
    Preprocessor,
    load_model,
    to_gray,
    write_model,
)

# Still photos (training images, `edged detect` on a file): the dataset's photos are
# tight face crops, so pad the image before the scan and accept faces that fill it.
IMAGE_DETECTOR = DetectorConfig(scale_factor=1.1, min_neighbors=4, min_size=0.2, pad=0.3)


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
    groups: Sequence[str] | None = None,
) -> FittedModel:
    """Faces already prepared with ``Preprocessor(config.preprocess)``; labels are class ids.

    ``groups`` (the person of each face) keeps inner cross-validation person-disjoint.
    """
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


def extract_face(path: Path | str, detector: FaceDetector, pre: Preprocessor) -> np.ndarray | None:
    """The largest face of an image file, prepared for LBPH (a copy); None if none is found."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    gray = to_gray(image)
    boxes = detector.detect(gray)
    if not boxes:
        return None
    return pre(gray, boxes[0]).copy()


def to_model(fitted: FittedModel) -> ExpressionModel:
    """The fitted model as `load_model` would return it from disk (round trip through a file)."""
    with tempfile.TemporaryDirectory(prefix="edged-fit-") as tmp:
        path = Path(tmp) / "trainer.yml"
        write_model(
            path, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta
        )
        return load_model(path)
