"""Detect + classify one frame: the code `edged detect`, the daemon and the benchmark share.

Pure: a frame in, a `FrameResult` out. No I/O, no threads; the model is passed in,
so a reload swaps it between frames without the pipeline knowing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edged.vision.detector import Box, DetectorConfig, FaceDetector, Gray, Image, to_gray
from edged.vision.model import ExpressionModel
from edged.vision.motion import MotionGate
from edged.vision.preprocess import Preprocessor
from edged.vision.tracker import FaceTracker, TrackConfig


@dataclass(frozen=True, slots=True)
class FaceResult:
    """One face in a frame. ``expression`` is None when no model is loaded."""

    box: Box
    expression: str | None
    confidence: float
    distance: float

    def as_dict(self) -> dict[str, object]:
        """The face in every payload (JSON lines, MQTT, ``edged detect --json``).

        Non-finite numbers (an LBPH distance can be inf) become null: JSON has no inf.
        """
        return {
            "expression": self.expression,
            "confidence": _rounded(self.confidence, 4),
            "distance": _rounded(self.distance, 2),
            "box": self.box.as_list(),
        }


def _rounded(x: float, digits: int) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None


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
    """A detector plus whatever model is current; ``process`` is the per-frame call.

    ``track`` turns on `FaceTracker` (video: the daemon); without it every frame gets
    a full scan (single images: ``edged detect``). ``gate``: the tracker then scans only
    where the picture changed, plus a periodic full scan (see `tracker`).
    """

    def __init__(
        self,
        detector: FaceDetector | None = None,
        max_faces: int = 5,
        clock: Callable[[], float] = time.perf_counter,
        track: TrackConfig | None = None,
        gate: MotionGate | None = None,
    ) -> None:
        self.detector = detector or FaceDetector(DetectorConfig())
        self.max_faces = max_faces
        self._clock = clock
        self.tracker = (
            FaceTracker(self.detector, track, max_faces, gate) if track is not None else None
        )
        self._gray: Gray | None = None
        self._untracked_scans = 0  # full scans made without a tracker
        self._last: tuple[ExpressionModel | None, bool, list[FaceResult]] = (None, False, [])

    def reset(self) -> None:
        """Forget followed faces and the motion background: the next frame is searched
        whole (after a pause in detection, or a camera that came back)."""
        if self.tracker is not None:
            self.tracker.reset()
        self._last = (None, False, [])

    def _still_results(
        self, model: ExpressionModel | None, classify: bool
    ) -> dict[Box, FaceResult]:
        """Last frame's results for the faces the tracker kept unscanned (nothing moved
        near them), when the model and the request are the same as then."""
        t, (last_model, last_classify, last) = self.tracker, self._last
        if t is None or not t.still or model is not last_model or classify != last_classify:
            return {}
        kept = set(t.still)
        return {f.box: f for f in last if f.box in kept}

    def scan_stats(self) -> dict[str, int | float | None]:
        """How the frames were searched so far: ``full_scans`` and ``region_scans``
        (counts), ``motion_ratio`` (the share of frames with motion; None without a gate)."""
        t = self.tracker
        if t is None:
            return {"full_scans": self._untracked_scans, "region_scans": 0, "motion_ratio": None}
        ratio = round(t.motion_ratio, 4) if t.gate is not None else None
        return {"full_scans": t.full_scans, "region_scans": t.region_scans, "motion_ratio": ratio}

    def _to_gray(self, frame: Image) -> Gray:
        """Grayscale into a buffer reused from frame to frame."""
        if frame.ndim == 2:
            return frame
        g = self._gray
        if g is None or g.shape != frame.shape[:2]:
            g = self._gray = np.empty(frame.shape[:2], np.uint8)
        return to_gray(frame, g)

    def process(
        self,
        frame: Image,
        model: ExpressionModel | None,
        classify: bool = True,
        timestamp: float = 0.0,
    ) -> FrameResult:
        """``timestamp`` (the frame's capture time) is carried into the result as is."""
        t0 = self._clock()
        gray = self._to_gray(frame)
        if self.tracker is not None:
            boxes = self.tracker.detect(gray)[: self.max_faces]
        else:
            self._untracked_scans += 1
            boxes = self.detector.detect(gray)[: self.max_faces]
        t1 = self._clock()
        faces: list[FaceResult] = []
        still = self._still_results(model, classify)
        for box in boxes:
            done = still.get(box)
            if done is not None:
                faces.append(done)  # the tracker saw nothing move there: same face, same answer
            elif model is not None and classify:
                p = model.predict(gray, box)
                faces.append(FaceResult(box, p.expression, p.confidence, p.distance))
            else:
                faces.append(FaceResult(box, None, 0.0, 0.0))
        self._last = (model, classify, faces)
        t2 = self._clock()
        return FrameResult(
            faces=faces,
            model_version=model.version if model is not None else None,
            detect_ms=(t1 - t0) * 1000.0,
            classify_ms=(t2 - t1) * 1000.0,
            timestamp=timestamp,
        )


def largest_face(gray: Gray, detector: FaceDetector, pre: Preprocessor) -> Gray | None:
    """The largest face of a still image, prepared for LBPH (a copy); None if none is found.

    How training, evaluation and the demo turn a photo into one face.
    """
    boxes = detector.detect(gray)
    if not boxes:
        return None
    return pre(gray, boxes[0]).copy()
