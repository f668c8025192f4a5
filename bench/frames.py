"""Synthetic camera frames: dataset faces placed on a 640x480 room, moving a little.

Deterministic (seeded), so two runs time the same pixels. A frame sequence plays the
role of a camera at 5 fps: the face drifts by a few pixels from one frame to the next.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

SIZE = (640, 480)


def background(seed: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A room: a shaded wall, a few pieces of furniture, sensor noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    base = rng.integers(90, 170, 3).astype(np.float32)
    shade = np.linspace(0.8, 1.15, h, dtype=np.float32)[:, None, None]
    img = np.clip(base[None, None, :] * shade, 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(np.broadcast_to(img, (h, w, 3)))
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(h // 3, h - 40))
        x1, y1 = x0 + int(rng.integers(40, 220)), y0 + int(rng.integers(30, 160))
        colour = tuple(int(c) for c in rng.integers(30, 220, 3))
        cv2.rectangle(img, (x0, y0), (min(w - 1, x1), min(h - 1, y1)), colour, -1)
    noise = rng.normal(0, 3, img.shape).astype(np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def place(frame: np.ndarray, photo: np.ndarray, x: int, y: int, side: int) -> None:
    """Paste ``photo`` resized to ``side`` at (x, y), in place (clipped to the frame)."""
    face = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    h, w = frame.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(w, x + side), min(h, y + side)
    frame[y0:y1, x0:x1] = face[y0 - y : y1 - y, x0 - x : x1 - x]


def clip(photo_path: Path, seed: int, frames: int = 20, side: int = 320) -> Iterator[np.ndarray]:
    """``frames`` frames of one face drifting slowly across one room."""
    photo = cv2.imread(str(photo_path), cv2.IMREAD_COLOR)
    if photo is None:
        raise OSError(f"cannot read {photo_path}")
    room = background(seed)
    w, h = SIZE
    cx, cy = (w - side) // 2, (h - side) // 2
    for t in range(frames):
        frame = room.copy()
        dx = round(min(cx, 120) * math.sin(0.25 * t + seed))
        dy = round(min(cy, 40) * math.sin(0.17 * t + 2 * seed))
        place(frame, photo, cx + dx, cy + dy, side)
        yield frame


def empty(seed: int, frames: int = 20) -> Iterator[np.ndarray]:
    """The room with nobody in it (the camera's usual view)."""
    room = background(seed)
    for _ in range(frames):
        yield room.copy()
