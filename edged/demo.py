"""``make demo``: the whole product on a machine with no camera and (maybe) no broker.

Trains ``trainer.yml`` from the committed sample with ``edged-train``, makes a short
video of sample faces (the same kind of clip the tests use), runs ``edged run`` on it as
a subprocess, exactly as systemd would run it, and prints each result as a JSON line,
then a short summary. With a broker on localhost:1883 the daemon publishes there too.

Also home of the clip generator the tests import (`Segment`, `scene`, `write_video`).
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "facial_expressions"
DEMO_CLASSES = ("anger", "happy", "sad", "neutral", "surprise")


# -- clips: a face photo pasted into a plain scene -----------------------------------------


@dataclass(frozen=True)
class Segment:
    """``face`` (a photo path, or None for an empty scene) shown for ``seconds``."""

    face: Path | None
    seconds: float


def scene(face: Path | None, size: tuple[int, int] = (640, 480), face_px: int = 220) -> np.ndarray:
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


def write_video(path: Path, segments: Sequence[Segment], fps: float = 10.0) -> list[np.ndarray]:
    """An MJPG .avi of the segments (read back by the same cv2.VideoCapture a camera uses).

    Returns one distinct frame per segment, so a caller can compute what the pipeline
    should say for it.
    """
    frames = [scene(s.face) for s in segments]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MJPG video here")
    for frame, seg in zip(frames, segments, strict=True):
        for _ in range(max(1, round(seg.seconds * fps))):
            writer.write(frame)
    writer.release()
    return frames


# -- the demo --------------------------------------------------------------------------


def _say(msg: str) -> None:
    print(f"demo: {msg}", file=sys.stderr, flush=True)


def pick_faces(dataset: Path, classes: Sequence[str]) -> dict[str, Path]:
    """For each class, the first listed photo in which the daemon's detector finds a face."""
    from edged.pipeline import Pipeline
    from edged.settings import DetectorSettings
    from edged.vision import DetectorConfig, FaceDetector

    d = DetectorSettings()
    pipeline = Pipeline(
        FaceDetector(DetectorConfig(d.scale_factor, d.min_neighbors, d.min_size, d.max_width))
    )
    picked: dict[str, Path] = {}
    for cls in classes:
        for name in (dataset / f"{cls}.txt").read_text().split():
            photo = dataset / "images" / name
            if photo.is_file() and len(pipeline.process(scene(photo), None).faces) == 1:
                picked[cls] = photo
                break
    return picked


def broker_listening(host: str = "localhost", port: int = 1883) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m edged.demo",
        description="Train on the committed sample, make a clip of sample faces, run the "
        "daemon on it and print every result. Needs no camera and no broker.",
    )
    p.add_argument("--workdir", type=Path, default=Path("build/demo"), help="where files go")
    p.add_argument("--dataset", type=Path, default=SAMPLE, help="workshop-layout dataset")
    p.add_argument("--fps", type=float, default=5.0, help="daemon frame rate (default 5)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per face in the clip")
    p.add_argument(
        "--no-mqtt", action="store_true", help="do not publish, even with a broker on localhost"
    )
    args = p.parse_args(argv)

    if not (args.dataset / "images").is_dir():
        print(
            f"demo: error: no dataset at {args.dataset} (the demo runs from a clone of the "
            "repository, which has the sample under tests/data)",
            file=sys.stderr,
        )
        return 66
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model = work / "trainer.yml"
    clip = work / "clip.avi"
    t_start = time.monotonic()

    # 1. Train, with the same command a user runs.
    _say(f"1/3 training {model} from {args.dataset} (edged-train)")
    from edged.cli import train_main

    rc = train_main([str(args.dataset), "-o", str(model), "--quiet"])
    if rc != 0:
        _say(f"training failed (exit {rc})")
        return rc

    # 2. A clip: each class's face for a few seconds, with an empty room in the middle.
    faces = pick_faces(args.dataset, DEMO_CLASSES)
    wanted = ("happy", "surprise", None, "anger", "neutral", "sad")
    order = [c for c in wanted if c is None or c in faces]
    segments = [Segment(faces[c] if c else None, args.seconds) for c in order]
    write_video(clip, segments, fps=10.0)
    plan = ", ".join(f"{c or 'nobody'} {args.seconds:g}s" for c in order)
    _say(f"2/3 wrote {clip}: {plan} (faces from the training sample)")

    # 3. The daemon, as a subprocess, exactly as systemd runs it.
    mqtt = not args.no_mqtt and broker_listening()
    cmd = [
        sys.executable, "-m", "edged", "run",
        "--source", str(clip), "--model", str(model), "--fps", f"{args.fps:g}",
        "--stdout", "--stats-interval", "5", "--log-level", "warning",
    ]  # fmt: skip
    if not mqtt:
        cmd.append("--no-mqtt")
    _say(
        "3/3 running: "
        + "edged "
        + " ".join(cmd[3:])
        + (
            "\n      (MQTT: publishing to localhost:1883)"
            if mqtt
            else "\n      (MQTT off: --no-mqtt, or no broker on localhost:1883)"
        )
    )
    seen: collections.Counter[str] = collections.Counter()
    frames = 0
    stats: dict[str, object] = {}
    model_version = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            record = json.loads(line)
            kind = record.get("type")
            if kind == "frame":
                frames += 1
                top = record["faces"][0]["expression"] if record["faces"] else "(no face)"
                seen[top or "(face, no model)"] += 1
            elif kind == "stats":
                stats = record
            elif kind == "model":
                model_version = record.get("version")
        rc = proc.wait()

    lat = stats.get("latency_ms") or {}
    assert isinstance(lat, dict)
    print(
        f"\nsummary: {frames} frames in {time.monotonic() - t_start:.1f} s (daemon exit {rc}); "
        f"model {model_version}; measured {stats.get('fps')} fps of {args.fps:g}, "
        f"latency p50 {lat.get('p50')} ms p95 {lat.get('p95')} ms, "
        f"{stats.get('skipped_ticks')} skipped ticks",
        file=sys.stderr,
    )
    print("  clip:  " + plan, file=sys.stderr)
    print(
        "  seen:  " + ", ".join(f"{k} x{v}" for k, v in seen.most_common()),
        file=sys.stderr,
    )
    print(
        "  (these faces were in the training set; `edged-train --eval` measures accuracy on "
        "people the model has not seen)\n"
        "next:\n"
        f"  edged detect photo.jpg --model {model}\n"
        "      label your own photos\n"
        f"  edged run --source 0 --model {model} --stdout\n"
        "      the daemon on your camera (Ctrl-C stops it)\n"
        "  edged-train --eval /path/to/dataset\n"
        "      train on your data and measure accuracy on held-out people\n"
        "  edged config example > edged.toml\n"
        "      every setting, documented (then: edged run --config edged.toml)",
        file=sys.stderr,
    )
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
