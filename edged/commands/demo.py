"""``edged demo`` (``make demo``): the whole product, with no camera and maybe no broker.

Trains ``trainer.yml`` from the committed sample with ``edged-train``, makes a short
video of sample faces (`edged.scenes`, as the tests' clips are made), runs ``edged run``
on it as a subprocess, exactly as systemd would run it, and prints each result as a JSON
line, then a short summary. With a broker on localhost:1883 the daemon publishes there too.
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
from dataclasses import dataclass, field
from pathlib import Path

from edged.errors import ExitStatus
from edged.scenes import Segment, scene, write_video
from edged.settings import DetectorSettings
from edged.training import trainer
from edged.vision.detector import DetectorConfig, FaceDetector
from edged.vision.model import WORKSHOP_CLASSES
from edged.vision.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE = ROOT / "tests" / "data" / "facial_expressions"


def _say(msg: str) -> None:
    print(f"demo: {msg}", file=sys.stderr, flush=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="train on the sample, play a clip of its faces through the daemon (make demo)",
        description="Train on the committed sample, make a clip of sample faces, run the "
        "daemon on it and print every result. Needs no camera and no broker; runs from a "
        "clone of the repository (the sample lives under tests/data).",
    )
    p.add_argument("--workdir", type=Path, default=Path("build/demo"), help="where files go")
    p.add_argument("--dataset", type=Path, default=SAMPLE, help="workshop-layout dataset")
    p.add_argument("--fps", type=float, default=5.0, help="daemon frame rate (default 5)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per face in the clip")
    p.add_argument(
        "--no-mqtt", action="store_true", help="do not publish, even with a broker on localhost"
    )
    p.set_defaults(func=run)


def pick_faces(dataset: Path, classes: Sequence[str]) -> dict[str, Path]:
    """For each class, the first listed photo in which the daemon's detector finds a face."""
    pipeline = Pipeline(FaceDetector(DetectorConfig.from_settings(DetectorSettings())))
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


def make_clip(dataset: Path, clip: Path, seconds: float) -> str:
    """Each class's face for ``seconds``, with an empty room in the middle; returns the plan."""
    faces = pick_faces(dataset, WORKSHOP_CLASSES)
    wanted = ("happy", "surprise", None, "anger", "neutral", "sad")
    order = [c for c in wanted if c is None or c in faces]
    write_video(clip, [Segment(faces[c] if c else None, seconds) for c in order], fps=10.0)
    return ", ".join(f"{c or 'nobody'} {seconds:g}s" for c in order)


@dataclass
class Seen:
    """What the daemon printed, summed up for the closing lines."""

    frames: int = 0
    tops: collections.Counter[str] = field(default_factory=collections.Counter)
    stats: dict[str, object] = field(default_factory=dict)
    model_version: str | None = None

    def add(self, record: dict[str, object]) -> None:
        kind = record.get("type")
        if kind == "frame":
            self.frames += 1
            faces = record["faces"]
            assert isinstance(faces, list)
            top = faces[0]["expression"] if faces else "(no face)"
            self.tops[top or "(face, no model)"] += 1
        elif kind == "stats":
            self.stats = record
        elif kind == "model":
            version = record.get("version")
            self.model_version = version if isinstance(version, str) else None


def run_daemon(cmd: list[str]) -> tuple[int, Seen]:
    """Run ``edged run`` and echo its JSON lines; returns its exit status and a summary."""
    seen = Seen()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            seen.add(json.loads(line))
        return proc.wait(), seen


NEXT_STEPS = """\
  (these faces were in the training set; \
`edged-train --eval` measures accuracy on people the model has not seen)
next:
  edged detect photo.jpg --model {model}
      label your own photos
  edged run --source 0 --model {model} --stdout
      the daemon on your camera (Ctrl-C stops it)
  edged-train --eval /path/to/dataset
      train on your data and measure accuracy on held-out people
  edged config example > edged.toml
      every setting, documented (then: edged run --config edged.toml)"""


def summarise(rc: int, seen: Seen, *, plan: str, seconds: float, fps: float, model: Path) -> None:
    lat = seen.stats.get("latency_ms") or {}
    assert isinstance(lat, dict)
    err = sys.stderr
    print(
        f"\nsummary: {seen.frames} frames in {seconds:.1f} s (daemon exit {rc}); "
        f"model {seen.model_version}; measured {seen.stats.get('fps')} fps of {fps:g}, "
        f"latency p50 {lat.get('p50')} ms p95 {lat.get('p95')} ms, "
        f"{seen.stats.get('skipped_ticks')} skipped ticks",
        file=err,
    )
    print("  clip:  " + plan, file=err)
    print("  seen:  " + ", ".join(f"{k} x{v}" for k, v in seen.tops.most_common()), file=err)
    print(NEXT_STEPS.format(model=model), file=err)


def run(args: argparse.Namespace) -> int:
    if not (args.dataset / "images").is_dir():
        print(
            f"demo: error: no dataset at {args.dataset} (the demo runs from a clone of the "
            "repository, which has the sample under tests/data)",
            file=sys.stderr,
        )
        return ExitStatus.NOINPUT
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model, clip = work / "trainer.yml", work / "clip.avi"
    t_start = time.monotonic()

    _say(f"1/3 training {model} from {args.dataset} (edged-train)")
    rc = trainer.main([str(args.dataset), "-o", str(model), "--quiet"])
    if rc != 0:
        _say(f"training failed (exit {rc})")
        return rc

    plan = make_clip(args.dataset, clip, args.seconds)
    _say(f"2/3 wrote {clip}: {plan} (faces from the training sample)")

    mqtt = not args.no_mqtt and broker_listening()
    cmd = [
        sys.executable, "-m", "edged", "run",
        "--source", str(clip), "--model", str(model), "--fps", f"{args.fps:g}",
        "--stdout", "--stats-interval", "5", "--log-level", "warning",
    ]  # fmt: skip
    if not mqtt:
        cmd.append("--no-mqtt")
    where = (
        "(MQTT: publishing to localhost:1883)"
        if mqtt
        else "(MQTT off: --no-mqtt, or no broker on localhost:1883)"
    )
    _say("3/3 running: edged " + " ".join(cmd[3:]) + "\n      " + where)
    rc, seen = run_daemon(cmd)
    summarise(rc, seen, plan=plan, seconds=time.monotonic() - t_start, fps=args.fps, model=model)
    return rc
