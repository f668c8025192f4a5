"""``edged detect`` on 640x480 photos against the workshop's "label a photo", in one run.

Photos are bench/frames.py rooms with a dataset face pasted at 320 px, written as JPEG
files, so both sides pay for decoding. Per photo (CPU ms of this thread, blocks of
photos taking turns): the workshop's ``imread`` + notebook detection + ``predict``;
``edged detect``'s ``read_image`` + `Pipeline` with the photo detector (`PhotoDetector`),
and with the full scan it replaced (``IMAGE_DETECTOR``), for the before/after. Then both
as whole processes over the same folder, as issue 14 measured (start-up and model load
included), and how often the new detector finds the full scan's faces, and where.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench import frames
from bench.workshop import Workshop
from edged.images import read_image
from edged.vision.detector import IMAGE_DETECTOR, Box, FaceDetector, Gray, cascade_path, to_gray
from edged.vision.model import ExpressionModel
from edged.vision.photo import PhotoDetector
from edged.vision.pipeline import Pipeline

WORKSHOP_PROCESS = """
import sys, pathlib, cv2
cv2.setNumThreads(1)
cascade = cv2.CascadeClassifier(sys.argv[1])
r = cv2.face.LBPHFaceRecognizer_create()
r.read(sys.argv[2])
for p in sorted(pathlib.Path(sys.argv[3]).iterdir()):
    gray = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    found = cascade.detectMultiScale(gray, 1.2, 5, minSize=(int(0.1 * w), int(0.1 * h)))
    for x, y, fw, fh in found:
        label, dist = r.predict(gray[y : y + fh, x : x + fw])
        print(p.name, label, 100 - dist)
"""


@dataclass
class PhotoTimes:
    workshop: list[float]
    edged: list[float]
    full_scan: list[float]
    process: tuple[float, float]  # whole-process CPU seconds: workshop, edged
    agreement: str


def write_scenes(photos: Sequence[Path], folder: Path) -> list[Path]:
    """One 640x480 room per dataset photo (the face at 320 px), as JPEG files."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, photo in enumerate(photos):
        frame = next(iter(frames.clip(photo, seed=k, frames=1)))
        path = folder / f"scene{k:03d}.jpg"
        cv2.imwrite(str(path), frame)
        out.append(path)
    return out


def _cpu_ms(fn: Callable[[Path], object], path: Path) -> float:
    t = time.thread_time_ns()
    fn(path)
    return (time.thread_time_ns() - t) / 1e6


def time_per_photo(
    scenes: Sequence[Path], ws: Workshop, model: ExpressionModel, rounds: int
) -> tuple[list[float], list[float], list[float]]:
    """CPU ms per photo: workshop, edged detect (photo detector), edged with the full scan."""
    new = Pipeline(PhotoDetector(IMAGE_DETECTOR), max_faces=20)
    old = Pipeline(FaceDetector(IMAGE_DETECTOR), max_faces=20)
    sides: dict[str, tuple[list[float], Callable[[Path], object]]] = {
        "workshop": ([], lambda p: ws.process(np.asarray(cv2.imread(str(p)), np.uint8))),
        "edged": ([], lambda p: new.process(read_image(p), model)),
        "full": ([], lambda p: old.process(read_image(p), model)),
    }
    order = list(sides)
    for r in range(rounds):
        for i in range(0, len(scenes), 5):  # blocks of 5 photos, turns rotate
            block = scenes[i : i + 5]
            for name in order[r % 3 :] + order[: r % 3]:
                times, fn = sides[name]
                times += [_cpu_ms(fn, p) for p in block]
    return sides["workshop"][0], sides["edged"][0], sides["full"][0]


def process_cpu(cmd: Sequence[str]) -> float:
    """CPU seconds (user + system) of one child process run to the end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def whole_process(folder: Path, workshop_model: Path, edged_model: Path) -> tuple[float, float]:
    """CPU seconds of each side as one process over the folder, start-up and model included
    (the workshop: the notebook's imports, read and loop; edged: the installed command)."""
    py = sys.executable
    w = process_cpu(
        [py, "-c", WORKSHOP_PROCESS, str(cascade_path()), str(workshop_model), str(folder)]
    )
    edged = str(Path(py).parent / "edged")
    e = process_cpu([edged, "detect", str(folder), "--model", str(edged_model), "--json"])
    return w, e


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / (a.area + b.area - inter) if inter else 0.0


def agreement(grays: Sequence[Gray]) -> str:
    """Faces found by the full scan and by the photo detector, and the largest face's IoU."""
    old, new = FaceDetector(IMAGE_DETECTOR), PhotoDetector(IMAGE_DETECTOR)
    found_old = found_new = matched = total = 0
    ious = []
    for g in grays:
        a, b = old.detect(g), new.detect(g)
        found_old += bool(a)
        found_new += bool(b)
        total += len(a)
        matched += sum(any(iou(x, y) > 0.5 for y in b) for x in a)
        if a and b:
            ious.append(iou(a[0], b[0]))
    v = np.array(ious or [0.0])
    return (
        f"{len(grays)} images: a face found in {found_old} (full scan) / {found_new} (photo "
        f"detector); {matched} of the full scan's {total} faces found again (IoU > 0.5); "
        f"largest face IoU median {np.median(v):.3f}, >= 0.9 in {np.mean(v >= 0.9):.0%}, "
        f"min {v.min():.2f}"
    )


def measure(
    photos: Sequence[Path],
    dataset: Sequence[Path],
    ws: Workshop,
    model: ExpressionModel,
    models: tuple[Path, Path],
    tmp: Path,
    rounds: int = 2,
) -> PhotoTimes:
    """``photos``: dataset photos to paste into rooms; ``dataset``: photos compared as they
    are (tight crops); ``models``: the workshop's and edged's trainer.yml, for the process."""
    scenes = write_scenes(photos, tmp / "scenes")
    w, e, f = time_per_photo(scenes, ws, model, rounds)
    proc = whole_process(tmp / "scenes", *models)
    grays = [to_gray(read_image(p)) for p in scenes]
    text = "640x480 scenes, " + agreement(grays)
    crops = [to_gray(read_image(p)) for p in dataset]
    text += "; dataset photos as they are, " + agreement(crops)
    return PhotoTimes(w, e, f, proc, text)
