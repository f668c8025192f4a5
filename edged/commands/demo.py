"""``edged demo`` (``make demo``): the whole product, with no camera and maybe no broker.

Trains ``trainer.yml`` from the committed sample with ``edged-train``, makes a short
video of sample faces (`edged.scenes`, as the tests' clips are made), runs ``edged run``
on it as a subprocess, exactly as systemd would run it, and prints each result as a JSON
line, the web page's address while it runs, then a short summary. With a broker on
localhost:1883 the daemon publishes there too. ``--serve`` (``make demo-serve``) loops the
clip and keeps the daemon, and so the page, up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from edged.arguments import number
from edged.errors import ExitStatus
from edged.scenes import Segment, scene, write_video
from edged.settings import DetectorSettings, HttpSettings
from edged.training import trainer
from edged.vision.detector import DetectorConfig, FaceDetector
from edged.vision.model import WORKSHOP_CLASSES
from edged.vision.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE = ROOT / "tests" / "data" / "facial_expressions"
PAGE_PORT: int = HttpSettings.model_fields["port"].default  # 8426
# The daemon's log lines on a terminal or pipe: "2026-01-31 12:00:00,123 LEVEL logger: ..."
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) ")
PAGE_URL = re.compile(r"web page at (https?://\S+)")


def _say(msg: str) -> None:
    print(f"demo: {msg}", file=sys.stderr, flush=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="train on the sample, play a clip of its faces through the daemon (make demo)",
        description="Train on the committed sample, make a clip of sample faces, run the "
        "daemon on it and print every result, and the address of its web page while it "
        "runs (a free port). Needs no camera and no broker; runs from a clone of the "
        "repository (the sample lives under tests/data). make demo plays the clip once "
        "(a few seconds); make demo-serve (--serve) keeps the page up until Ctrl-C.",
    )
    p.add_argument("--workdir", type=Path, default=Path("build/demo"), help="where files go")
    p.add_argument("--dataset", type=Path, default=SAMPLE, help="workshop-layout dataset")
    p.add_argument("--fps", type=float, default=5.0, help="daemon frame rate (default 5)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per face in the clip")
    p.add_argument(
        "--no-mqtt", action="store_true", help="do not publish, even with a broker on localhost"
    )
    p.add_argument(
        "--serve",
        nargs="?",
        const=0.0,
        type=number(float, above=0.0),
        metavar="SECONDS",
        help="keep the daemon and its web page up, the clip looping, for SECONDS or, "
        f"without a number, until Ctrl-C (make demo-serve); on http://localhost:{PAGE_PORT}/ "
        "if that port is free, else on any free one. Frames are not echoed: watch the page",
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
    url: str | None = None  # the web page's address, from the daemon's log

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


def page_port(serve: bool, environ: dict[str, str]) -> str:
    """http.port for the demo's daemon: one it can always have. Any free port (the daemon
    logs which), or, to stay up for a person, the page's usual one when it is free.
    EDGED_HTTP__PORT, when set, wins."""
    if "EDGED_HTTP__PORT" in environ:
        return environ["EDGED_HTTP__PORT"]
    if serve:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the page's server
            try:
                s.bind(("127.0.0.1", PAGE_PORT))
                return str(PAGE_PORT)
            except OSError:
                pass
    return "0"


def relay_log(stream: IO[str], seen: Seen, until: str) -> None:
    """The daemon's log: warnings and errors passed on (as ``--log-level warning`` would
    show them); the page's address, from its INFO line, said in the demo's words."""
    passing = True
    for line in stream:
        m = LOG_LINE.match(line)
        if m:  # a record's first line; the lines of a traceback follow their record
            passing = m[1] not in ("DEBUG", "INFO")
            url = PAGE_URL.search(line)
            if url and seen.url is None:
                seen.url = url[1]
                _say(f"the web page: {seen.url} (live view, state, stats) {until}")
        if passing:
            sys.stderr.write(line)
            sys.stderr.flush()


@contextmanager
def forwarding_signals(proc: subprocess.Popen[str]) -> Iterator[None]:
    """Ctrl-C, SIGTERM and a closed terminal stop the daemon cleanly (its final stats
    still reach the summary): it runs in a session of its own, so only this process gets
    them, and passes them on once each (a second Ctrl-C forces its exit, as it does for
    ``edged run``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    names = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {n: signal.signal(n, forward) for n in names}
    try:
        yield
    finally:
        for n, handler in previous.items():
            signal.signal(n, handler)


def run_daemon(
    cmd: list[str], env: dict[str, str] | None = None, *, serve: float | None = None
) -> tuple[int, Seen]:
    """Run ``edged run`` and echo its JSON lines (serving: all but frames); returns its
    exit status and a summary. ``serve``: as ``--serve`` (None, 0 for ever, or seconds)."""
    if serve is None:
        until = "while the clip plays; make demo-serve keeps it up"
    else:
        until = f"for {serve:g} s; Ctrl-C stops" if serve else "until Ctrl-C"
    seen = Seen()
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # signals reach it through this process (forwarding_signals)
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        log = threading.Thread(target=relay_log, args=(proc.stderr, seen, until), daemon=True)
        log.start()
        with forwarding_signals(proc):
            for line in proc.stdout:
                record = json.loads(line)
                seen.add(record)
                if serve is None or record.get("type") != "frame":
                    print(line, end="", flush=True)
            rc = proc.wait()
        log.join(5)
        return rc, seen


NEXT_STEPS = """\
  (these faces were in the training set; \
`edged-train --eval` measures accuracy on people the model has not seen)
next:
  make demo-serve      (edged demo --serve)
      the same clip, looping, with the web page up until Ctrl-C
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
    page = f"{seen.url} (gone with the daemon)" if seen.url else "off (http.enabled = false)"
    print("  page:  " + page, file=err)
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
    serve = args.serve is not None
    cmd = [
        sys.executable, "-m", "edged", "run",
        "--source", str(clip), "--model", str(model), "--fps", f"{args.fps:g}",
        "--stdout", "--stats-interval", "30" if serve else "5",
        "--log-level", "info",  # for the page's address; INFO lines are not shown
    ]  # fmt: skip
    if serve:
        cmd.append("--loop")
        if args.serve:
            cmd += ["--duration", f"{args.serve:g}"]
    if not mqtt:
        cmd.append("--no-mqtt")
    where = (
        "(MQTT: publishing to localhost:1883)"
        if mqtt
        else "(MQTT off: --no-mqtt, or no broker on localhost:1883)"
    )
    env = dict(os.environ)
    env["EDGED_HTTP__PORT"] = page_port(serve, env)
    _say("3/3 running: edged " + " ".join(cmd[3:]) + "\n      " + where)
    if serve:
        _say("frames are not echoed while serving: the page shows them")
    rc, seen = run_daemon(cmd, env, serve=args.serve)
    summarise(rc, seen, plan=plan, seconds=time.monotonic() - t_start, fps=args.fps, model=model)
    return rc
