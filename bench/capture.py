"""Capture cost: CPU the grabber spends per wall second, decoding on demand vs every frame.

A 30 fps 640x480 MJPG clip of sample faces (what a USB camera delivers) is played in
real time and read by a consumer at 5 fps, like the daemon's loop. Also: what one
grab, one retrieve (decode + convert) and one 640x480 JPEG decode cost here, which
is what a V4L2 MJPG camera's retrieve does. Run: ``python -m bench capture``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edged.daemon.capture import FrameGrabber
from edged.settings import CameraSettings

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "facial_expressions"


def make_clip(path: Path, seconds: float = 4.0, fps: float = 30.0) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))  # the tests' helpers are no package
    from conftest import Segment, sample_images, write_video  # noqa: PLC0415 (needs the path above)

    faces = sample_images("happy", 2) + sample_images("sad", 2)
    write_video(path, [Segment(f, seconds / len(faces)) for f in faces], fps=fps)
    return path


def grabber_cpu(clip: Path, decode_all: bool, seconds: float, loop_fps: float) -> dict:
    """CPU seconds per wall second of the whole process while a consumer takes frames."""
    g = FrameGrabber(CameraSettings(source=str(clip), realtime=True, loop=True), None,
                     decode_all=decode_all)  # fmt: skip
    g.start()
    first = g.wait(timeout=5)
    c0, w0 = time.process_time(), time.perf_counter()
    ages = []
    last = first.seq if first is not None else -1
    period = 1.0 / loop_fps
    next_due = time.perf_counter()
    while time.perf_counter() - w0 < seconds:
        next_due += period
        time.sleep(max(0.0, next_due - time.perf_counter()))
        f = g.latest(last)
        if f is not None:
            ages.append((time.monotonic() - f.monotonic) * 1000)
            last = f.seq
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    st = g.stats
    g.stop()
    return {
        "mode": "decode every frame" if decode_all else "decode on demand",
        "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
        "grabbed": st.grabbed,
        "decoded": st.decoded,
        "taken": st.taken,
        "frame_age_ms_median": round(float(np.median(ages)), 1) if ages else None,
        "frame_age_ms_max": round(float(np.max(ages)), 1) if ages else None,
    }


def per_frame_costs(clip: Path) -> dict:
    cap = cv2.VideoCapture(str(clip))
    n, t = 0, time.process_time()
    while cap.grab():
        n += 1
    grab_ms = (time.process_time() - t) / n * 1000
    cap.release()
    cap = cv2.VideoCapture(str(clip))
    frame = None
    n, t = 0, time.process_time()
    while True:
        ok, img = cap.read(frame) if frame is not None else cap.read()
        if not ok:
            break
        frame = img
        n += 1
    read_ms = (time.process_time() - t) / n * 1000
    cap.release()
    jpg = cv2.imencode(".jpg", frame)[1]
    t = time.process_time()
    for _ in range(50):
        cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    jpeg_ms = (time.process_time() - t) / 50 * 1000
    return {
        "file_grab_ms": round(grab_ms, 3),
        "file_grab_and_retrieve_ms": round(read_ms, 3),
        "jpeg_640x480_decode_ms": round(jpeg_ms, 3),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=6.0, help="measuring time per mode")
    p.add_argument("--loop-fps", type=float, default=5.0, help="the consumer's rate")


def register(sub: argparse._SubParsersAction) -> None:
    """``python -m bench capture``."""
    p = sub.add_parser(
        "capture",
        help="capture CPU: decoding every frame vs only the frames the loop takes",
        description=__doc__.splitlines()[0],
    )
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    cv2.setNumThreads(1)  # as on a busy Pi: no hidden parallel decode
    with tempfile.TemporaryDirectory() as d:
        clip = make_clip(Path(d) / "faces30.avi")
        results = {
            "clip": "640x480 MJPG, 30 fps, real time, looped",
            "consumer_fps": args.loop_fps,
            "per_frame": per_frame_costs(clip),
            "runs": [
                grabber_cpu(clip, decode_all, args.seconds, args.loop_fps)
                for decode_all in (True, False)
            ],
        }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
