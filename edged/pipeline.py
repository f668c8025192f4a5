"""Detect + classify one frame: the code `edged detect`, the daemon and the benchmark share.

Pure: a frame in, a `FrameResult` out. No I/O, no threads; the model is passed in,
so a reload swaps it between frames without the pipeline knowing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edged.vision import Box, DetectorConfig, ExpressionModel, FaceDetector, to_gray


@dataclass(frozen=True, slots=True)
class FaceResult:
    """One face in a frame. ``expression`` is None when no model is loaded."""

    box: Box
    expression: str | None
    confidence: float
    distance: float


@dataclass(frozen=True, slots=True)
class FrameResult:
    faces: list[FaceResult]
    model_version: str | None
    detect_ms: float
    classify_ms: float
    timestamp: float = field(default=0.0)

    @property
    def top(self) -> FaceResult | None:
        """The largest face: the one a single-person dashboard shows."""
        return self.faces[0] if self.faces else None


class Pipeline:
    """A detector plus whatever model is current; ``process`` is the per-frame call."""

    def __init__(
        self,
        detector: FaceDetector | None = None,
        max_faces: int = 5,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.detector = detector or FaceDetector(DetectorConfig())
        self.max_faces = max_faces
        self._clock = clock

    def process(
        self, frame: np.ndarray, model: ExpressionModel | None, classify: bool = True
    ) -> FrameResult:
        t0 = self._clock()
        gray = to_gray(frame)
        boxes = self.detector.detect(gray)[: self.max_faces]
        t1 = self._clock()
        faces: list[FaceResult] = []
        for box in boxes:
            if model is not None and classify:
                p = model.predict(gray, box)
                faces.append(FaceResult(box, p.expression, p.confidence, p.distance))
            else:
                faces.append(FaceResult(box, None, 0.0, 0.0))
        t2 = self._clock()
        return FrameResult(
            faces=faces,
            model_version=model.version if model is not None else None,
            detect_ms=(t1 - t0) * 1000.0,
            classify_ms=(t2 - t1) * 1000.0,
        )
