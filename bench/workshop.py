"""The workshop notebook's pipeline, step for step: the baseline edged is measured against.

Training: each listed photo → gray → ``detectMultiScale(gray, 1.3, 5)`` → every face is
cropped → the crop is scanned again with default parameters → every face found in the
crop is one training sample, raw (no resize, no equalisation) → LBPH with default
parameters, ids 0 anger, 1 happy, 2 sad, 3 neutral, 4 surprise →
``recognizer.write('trainer.yml')`` (OpenCV's text YAML).

Prediction: ``detectMultiScale(gray, 1.2, 5, minSize=(10% of width, 10% of height))`` →
``recognizer.predict`` on the raw crop; confidence shown as ``100 - distance``.

Nothing here is tuned: it is the reference, faults included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edged.training.evaluate import Labelled, Trained
from edged.vision.detector import cascade_path
from edged.vision.model import WORKSHOP_CLASSES


@dataclass(frozen=True, slots=True)
class WorkshopFace:
    box: tuple[int, int, int, int]
    label: int
    distance: float


class Workshop:
    """The notebook's detector and recognizer (one instance per thread)."""

    def __init__(self, classes: Sequence[str] = WORKSHOP_CLASSES) -> None:
        self.classes = list(classes)
        self.cascade = cv2.CascadeClassifier(str(cascade_path()))
        self.recognizer: cv2.face.LBPHFaceRecognizer | None = None

    # -- training --------------------------------------------------------------------

    def training_crops(self, image_bgr: np.ndarray) -> list[np.ndarray]:
        """Detect (1.3, 5), crop, re-detect in the crop with defaults, keep those crops."""
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        out = []
        for x, y, w, h in self.cascade.detectMultiScale(gray, 1.3, 5):
            crop = gray[y : y + h, x : x + w]
            for x2, y2, w2, h2 in self.cascade.detectMultiScale(crop):
                out.append(crop[y2 : y2 + h2, x2 : x2 + w2].copy())
        return out

    def train(self, crops: Sequence[np.ndarray], labels: Sequence[int]) -> None:
        r = cv2.face.LBPHFaceRecognizer_create()
        r.train(list(crops), np.asarray(labels, dtype=np.int32))
        self.recognizer = r

    def write(self, path: Path) -> None:
        assert self.recognizer is not None
        self.recognizer.write(str(path))

    @staticmethod
    def read(path: Path) -> cv2.face.LBPHFaceRecognizer:
        r = cv2.face.LBPHFaceRecognizer_create()
        r.read(str(path))
        return r

    # -- prediction ------------------------------------------------------------------

    def detect(self, gray: np.ndarray) -> np.ndarray:
        h, w = gray.shape[:2]
        found = self.cascade.detectMultiScale(gray, 1.2, 5, minSize=(int(0.1 * w), int(0.1 * h)))
        return np.asarray(found).reshape(-1, 4)

    def predict_crop(self, crop: np.ndarray) -> tuple[int, float]:
        assert self.recognizer is not None
        label, distance = self.recognizer.predict(crop)
        return int(label), float(distance)

    def process(self, frame_bgr: np.ndarray) -> list[WorkshopFace]:
        """One frame, as the notebook labelled a photo: every face detected, each predicted."""
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        faces = []
        for x, y, w, h in self.detect(gray):
            label, dist = self.predict_crop(gray[y : y + h, x : x + w])
            faces.append(WorkshopFace((int(x), int(y), int(w), int(h)), label, dist))
        return faces

    def expression(self, label: int) -> str:
        return self.classes[label] if 0 <= label < len(self.classes) else str(label)


def workshop_pipeline(
    classes: Sequence[str] = WORKSHOP_CLASSES,
    crops: dict[Path, list[np.ndarray]] | None = None,
) -> tuple:
    """The (train, predict) pair for `edged.evaluate.cross_validate`.

    Training crops are cached per image (``crops`` seeds the cache), so k folds detect
    each image once; prediction re-reads the photo and runs the notebook's detection.
    """
    ws = Workshop(classes)
    ids = {c: i for i, c in enumerate(classes)}
    cache: dict[Path, list[np.ndarray]] = dict(crops or {})

    def crops_of(path: Path) -> list[np.ndarray]:
        if path not in cache:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            cache[path] = ws.training_crops(img) if img is not None else []
        return cache[path]

    def train(items: Sequence[Labelled]) -> Trained:
        samples, labels = [], []
        for it in items:
            for c in crops_of(Path(it.path)):
                samples.append(c)
                labels.append(ids[it.label])
        state = Workshop(classes)
        state.train(samples, labels)
        return Trained(state, len(samples))

    def predict(state: Workshop, path: Path) -> tuple[str | None, float]:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            return None, 0.0
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        boxes = state.detect(gray)
        if not len(boxes):
            return None, 0.0
        x, y, w, h = max(boxes.tolist(), key=lambda b: b[2] * b[3])
        label, dist = state.predict_crop(gray[y : y + h, x : x + w])
        # The notebook's "100 - distance" %, clipped into 0..1 for the calibration figure.
        return state.expression(label), float(np.clip((100.0 - dist) / 100.0, 0.0, 1.0))

    return train, predict
