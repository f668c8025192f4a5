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


# -- scenes for the motion gate (issue 14) ----------------------------------------------
# Each yields ``n`` pictures of a 5 fps camera (PICTURE_FPS), deterministic per seed.

PICTURE_FPS = 5.0


def clutter(seed: int, size: tuple[int, int] = SIZE, things: int = 600) -> np.ndarray:
    """A dense room (shelves, posters, plants: hundreds of small shapes) on `background`.

    The wall that makes a Haar scan expensive: textured windows pass many cascade stages,
    so a full scan costs several times what a plain room's does.
    """
    w, h = size
    rng = np.random.default_rng(seed)
    img = background(seed, size)
    for _ in range(things):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        s = int(rng.integers(4, 24))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + s, y + int(rng.integers(4, 3 * s))), colour, -1)
        elif kind == 1:
            axes = (s, int(rng.integers(2, s + 1)))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(img, (x, y), axes, angle, 0, 360, colour, -1, cv2.LINE_AA)
        else:
            end = (x + int(rng.integers(-3 * s, 3 * s)), y + int(rng.integers(-3 * s, 3 * s)))
            cv2.line(img, (x, y), end, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return img


class SensorNoise:
    """Per-picture sensor noise: a camera never delivers the same pixels twice.

    Drawing fresh Gaussian noise for every 640x480 picture would dominate the time to make
    a scene, so a few fields are drawn once and one is picked at random per picture.
    """

    def __init__(self, sigma: float, seed: int, size: tuple[int, int] = SIZE, fields: int = 8):
        if fields < 2:
            raise ValueError("sensor noise: at least two fields, so pictures always differ")
        w, h = size
        rng = np.random.default_rng(seed)
        self._rng = rng
        noise = rng.normal(0.0, sigma, (fields, h, w, 3))
        self._up = np.clip(noise, 0, 255).astype(np.uint8)
        self._down = np.clip(-noise, 0, 255).astype(np.uint8)
        self._last = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` with noise added (in place, saturating); never the last picture's."""
        k = (self._last + 1 + int(self._rng.integers(len(self._up) - 1))) % len(self._up)
        self._last = k
        cv2.add(frame, self._up[k], dst=frame)
        cv2.subtract(frame, self._down[k], dst=frame)
        return frame


def still(room: np.ndarray, n: int, seed: int, sigma: float = 2.0) -> Iterator[np.ndarray]:
    """An empty room that does not change; only sensor noise differs between pictures."""
    noise = SensorNoise(sigma, seed, (room.shape[1], room.shape[0]))
    for _ in range(n):
        yield noise(room.copy())


def dim(n: int, seed: int, light: float = 0.2, sigma: float = 6.0) -> Iterator[np.ndarray]:
    """A dim room (a fifth of the light, gain turned up: strong noise on every picture)."""
    room = cv2.convertScaleAbs(background(seed), alpha=light)
    yield from still(room, n, seed, sigma)


def tv(room: np.ndarray, n: int, seed: int, share: float = 0.1) -> Iterator[np.ndarray]:
    """An empty room with a TV: a patch of ``share`` of the frame, a new picture each time.

    The programme is coarse colour fields with a few hard-edged shapes, all new every
    picture: motion the gate must see every time, in the same place, and never a face.
    """
    h, w = room.shape[:2]
    tw = round(math.sqrt(share * w * h * 4 / 3))
    th = round(share * w * h / tw)
    x0, y0 = w - tw - 40, 50
    rng = np.random.default_rng(seed)
    noise = SensorNoise(2.0, seed, (w, h))
    base = room.copy()
    cv2.rectangle(base, (x0 - 6, y0 - 6), (x0 + tw + 5, y0 + th + 5), (20, 20, 20), -1)
    for _ in range(n):
        field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        screen = cv2.resize(field, (tw, th), interpolation=cv2.INTER_CUBIC)
        for _ in range(3):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            px, py = int(rng.integers(0, tw)), int(rng.integers(0, th))
            cv2.rectangle(screen, (px, py), (px + int(rng.integers(10, 60)),
                          py + int(rng.integers(10, 40))), colour, -1)  # fmt: skip
        frame = base.copy()
        frame[y0 : y0 + th, x0 : x0 + tw] = screen
        yield noise(frame)


def swing(room: np.ndarray, n: int, seed: int, period: float = 2.4) -> Iterator[np.ndarray]:
    """An empty room with something swinging (a lamp on a cord: a pendulum, 35 degrees)."""
    h, w = room.shape[:2]
    pivot = (w // 3, 0)
    length, radius = round(0.55 * h), round(0.09 * h)
    noise = SensorNoise(2.0, seed, (w, h))
    for t in range(n):
        angle = math.radians(35.0) * math.sin(2 * math.pi * t / PICTURE_FPS / period)
        bob = (
            round(pivot[0] + length * math.sin(angle)),
            round(pivot[1] + length * math.cos(angle)),
        )
        frame = room.copy()
        cv2.line(frame, pivot, bob, (40, 40, 40), 4, cv2.LINE_AA)
        cv2.circle(frame, bob, radius, (60, 170, 220), -1, cv2.LINE_AA)
        yield noise(frame)


def _read(photo_path: Path) -> np.ndarray:
    photo = cv2.imread(str(photo_path), cv2.IMREAD_COLOR)
    if photo is None:
        raise OSError(f"cannot read {photo_path}")
    return photo


def walk_in(
    photo_path: Path,
    room: np.ndarray,
    n: int,
    seed: int,
    empty_for: int = 20,
    steps: int = 12,
    side: int = 300,
) -> Iterator[np.ndarray]:
    """Nobody for ``empty_for`` pictures; a face walks in from the left over ``steps``
    pictures, to the middle of the frame, and stays there, still, to the end."""
    photo = _read(photo_path)
    h, w = room.shape[:2]
    noise = SensorNoise(2.0, seed, (w, h))
    x_end, y = (w - side) // 2, (h - side) // 2
    for t in range(n):
        frame = room.copy()
        k = t - empty_for
        if k >= 0:
            x = -side + round((x_end + side) * min(1.0, (k + 1) / steps))
            place(frame, photo, x, y, side)
        yield noise(frame)


def faces_changing(
    photo_paths: list[Path], room: np.ndarray, n: int, seed: int, hold: int = 5, side: int = 300
) -> Iterator[np.ndarray]:
    """A face in view the whole time, a different photo every ``hold`` pictures (a second at
    5 fps: another expression, another person), bobbing a few pixels as a talking head does."""
    photos = [_read(p) for p in photo_paths]
    h, w = room.shape[:2]
    noise = SensorNoise(2.0, seed, (w, h))
    cx, cy = (w - side) // 2, (h - side) // 2
    for t in range(n):
        frame = room.copy()
        dx = round(6 * math.sin(0.9 * t))
        dy = round(4 * math.sin(1.3 * t + 1))
        place(frame, photos[(t // hold) % len(photos)], cx + dx, cy + dy, side)
        yield noise(frame)


def lights(
    room: np.ndarray, n: int, seed: int, every: int = 30, dark: float = 0.45
) -> Iterator[np.ndarray]:
    """An empty room whose light is switched off and on every ``every`` pictures: the whole
    picture jumps in brightness at once (several times per scene)."""
    dimmed = cv2.convertScaleAbs(room, alpha=dark)
    noise = SensorNoise(2.0, seed, (room.shape[1], room.shape[0]))
    for t in range(n):
        yield noise((dimmed if (t // every) % 2 else room).copy())
