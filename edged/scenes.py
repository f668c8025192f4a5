"""Synthetic camera scenes: a face photo pasted into a plain room, written as MJPG video.

What stands in for a camera where there is none: ``make demo``, the tests and the
benchmarks make their clips here and read them back through the daemon's own capture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edged.vision.detector import Image


@dataclass(frozen=True)
class Segment:
    """``face`` (a photo path, or None for an empty scene) shown for ``seconds``."""

    face: Path | None
    seconds: float


def scene(face: Path | None, size: tuple[int, int] = (640, 480), face_px: int = 220) -> Image:
    """A 640x480 frame: a plain textured room with the photo pasted in the middle."""
    w, h = size
    rng = np.random.default_rng(7)
    frame = np.full((h, w, 3), 120, np.uint8)
    frame[: h // 3] = (150, 140, 130)
    frame += rng.integers(0, 12, frame.shape, dtype=np.uint8)
    if face is not None:
        img = cv2.imread(str(face))
        if img is None:
            raise FileNotFoundError(f"cannot read image {face}")
        img = cv2.resize(img, (face_px, face_px), interpolation=cv2.INTER_AREA)
        x, y = (w - face_px) // 2, (h - face_px) // 2
        frame[y : y + face_px, x : x + face_px] = img
    return frame


def write_video(path: Path, segments: Sequence[Segment], fps: float = 10.0) -> list[Image]:
    """An MJPG .avi of the segments (read back by the same cv2.VideoCapture a camera uses).

    Returns one distinct frame per segment, so a caller can compute what the pipeline
    should say for it.
    """
    frames = [scene(s.face) for s in segments]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (640, 480))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MJPG video here")
    for frame, seg in zip(frames, segments, strict=True):
        for _ in range(max(1, round(seg.seconds * fps))):
            writer.write(frame)
    writer.release()
    return frames
