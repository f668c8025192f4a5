"""``python -m bench reload`` (also two rows of the default run): hot reloads in the daemon.

Runs ``edged run`` on a looping clip with a face in view at 5 fps and replaces its model
file twice while it runs, atomically, as a trainer would: first with a workshop model of
~150 MB (LBPH's defaults, written with plain ``write()`` as the workshop code did: text
floats), then with a 2 MB edged model again. Measured from outside, with the real daemon:
the ticks it skipped while each file loaded (its own stats records, one a second), the
longest gap between its frame records, and its RSS (/proc) once the big model is swapped
out. The 2 MB edged model's reload is the baseline.

Targets (issue "Hardening 1", item 3): no tick skipped because of a load; RSS <= 130 MB
once a 150 MB model has been swapped out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench.soak import make_model, proc_rss_mb
from edged.scenes import Segment, write_video

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests" / "data" / "facial_expressions" / "images" / "Aaron_Eckhart_0001.jpg"
FPS = 5.0
KB_PER_FACE = 102.1  # a workshop model's text histogram (LBPH defaults), per training face


def note(msg: str) -> None:
    print(f"[reload] {msg}", file=sys.stderr, flush=True)


def workshop_model(path: Path, mb: float) -> None:
    """What the workshop's notebook wrote: LBPH defaults (radius 1, 8 neighbours, 8 x 8
    grid), trained on 64 x 64 faces (random ones here), saved with plain ``write()``."""
    n = max(5, round(mb * 1000 / KB_PER_FACE))
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(n)]
    rec = cv2.face.LBPHFaceRecognizer_create()
    rec.train(faces, np.arange(n, dtype=np.int32) % 5)
    rec.write(str(path))


@dataclass
class Daemon:
    """``edged run`` as a subprocess, and what it printed (JSON lines), with arrival times."""

    proc: subprocess.Popen
    records: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> None:
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.records.append(rec)

    def of(self, kind: str) -> list[dict]:
        with self.lock:
            return [r for r in self.records if r.get("type") == kind]

    def wait_for(self, kind: str, count: int, timeout: float = 120.0) -> dict:
        """The ``count``-th record of ``kind`` (a sentinel: never a fixed sleep)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            found = self.of(kind)
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.02)
        status = self.proc.poll()
        raise RuntimeError(f"the daemon printed no {kind} record #{count} (exit {status})")


@dataclass
class Load:
    """One hot reload, as seen from outside."""

    mb: float
    skipped: int
    longest_gap_ms: float
    load_s: float
    peak_rss_mb: float


def _sample_peak(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], proc_rss_mb(pid))
        except (OSError, ValueError, IndexError):
            return
        stop.wait(0.05)


def hot_load(d: Daemon, src: Path, live: Path) -> Load:
    """Replace the model file with ``src``; wait for the daemon to load it and for two
    stats records after that (ticks skipped during the load are counted by then)."""
    models, stats = len(d.of("model")), len(d.of("stats"))
    before = d.wait_for("stats", stats)["skipped_ticks"] if stats else 0
    frames_before = len(d.of("frame"))
    peak, stop = [0.0], threading.Event()
    sampler = threading.Thread(target=_sample_peak, args=(d.proc.pid, stop, peak), daemon=True)
    sampler.start()
    tmp = live.with_name(".trainer.yml.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, live)
    model = d.wait_for("model", models + 1)
    if model.get("error"):
        raise RuntimeError(f"the daemon refused {src.name}: {model['error']}")
    stats = len(d.of("stats"))
    after = d.wait_for("stats", stats + 2)["skipped_ticks"]
    stop.set()
    sampler.join()
    times = [r["time"] for r in d.of("frame")[frames_before:]]
    gap = max(np.diff(times)) * 1000.0 if len(times) > 1 else float("nan")
    return Load(src.stat().st_size / 1e6, after - before, gap, model["load_ms"] / 1000, peak[0])


def steady_rss(pid: int, seconds: float = 1.0) -> float:
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(proc_rss_mb(pid))
        time.sleep(0.1)
    return float(np.median(samples))


@dataclass
class Result:
    workshop: Load
    edged: Load
    rss_before: float  # the 2 MB edged model only
    rss_after: float  # the workshop model swapped out for the edged one again


def measure(mb: float = 150.0) -> Result:
    with tempfile.TemporaryDirectory(prefix="edged-reload-") as tmp:
        work = Path(tmp)
        clip, live = work / "face.avi", work / "trainer.yml"
        write_video(clip, [Segment(PHOTO, 4.0)], fps=10)
        note("making a 2 MB edged model from the committed sample")
        edged = work / "edged.yml"
        make_model(edged, None)
        note(f"making a {mb:g} MB workshop model (LBPH write(), text)")
        workshop = work / "workshop.yml"
        workshop_model(workshop, mb)
        shutil.copyfile(edged, live)
        cmd = [sys.executable, "-m", "edged", "run", "--source", str(clip), "--loop"]
        cmd += ["--fps", f"{FPS:g}", "--model", str(live), "--no-mqtt", "--stdout"]
        cmd += ["--stats-interval", "1", "--log-level", "warning"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the daemon of this tree
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=work, env=env) as proc:
            d = Daemon(proc)
            reader = threading.Thread(target=d.read, daemon=True)
            reader.start()
            try:
                d.wait_for("stats", 3)  # warmed up
                rss_before = steady_rss(proc.pid)
                note(f"daemon running, RSS {rss_before:.0f} MB; hot-loading the workshop model")
                ws = hot_load(d, workshop, live)
                note(f"loaded in {ws.load_s:.1f} s; back to the edged model")
                ed = hot_load(d, edged, live)
                d.wait_for("stats", len(d.of("stats")) + 2)  # a poll: memory given back
                rss_after = steady_rss(proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
                reader.join(5)
    return Result(ws, ed, rss_before, rss_after)


def rows(r: Result) -> list[dict]:
    """The default run's rows (bench/__main__.Row's fields): workshop file vs edged's."""
    ws, ed = r.workshop, r.edged
    return [
        dict(
            what=f"hot reload at {FPS:g} fps: ticks skipped while the model loads",
            workshop=[ws.skipped],
            edged=[ed.skipped],
            target="0",
            unit="ticks",
            extra=f"{ws.mb:.0f} MB workshop / {ed.mb:.1f} MB edged file, loaded in "
            f"{ws.load_s:.1f} / {ed.load_s:.2f} s; longest gap between frames "
            f"{ws.longest_gap_ms:.0f} / {ed.longest_gap_ms:.0f} ms",
        ),
        dict(
            what="daemon RSS once the model is swapped out (MB)",
            workshop=[r.rss_after],
            edged=[r.rss_before],
            target="<= 130",
            unit="MB",
            extra=f"workshop: after the {ws.mb:.0f} MB model made way for the edged one "
            f"(peak {ws.peak_rss_mb:.0f} MB while loading); edged: before it",
        ),
    ]


def run(args: argparse.Namespace) -> int:
    r = measure(args.mb)
    lines = ["| what | workshop file | edged file (baseline) | target | |", "|---|---|---|---|---|"]
    for row in rows(r):
        cells = [row["what"], f"{row['workshop'][0]:.3g}", f"{row['edged'][0]:.3g}"]
        lines.append("| " + " | ".join([*cells, row["target"], row["extra"]]) + " |")
    print("\n".join(lines))
    ok = r.workshop.skipped == 0 and r.edged.skipped == 0 and r.rss_after <= 130
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reload",
        help="hot-load a 150 MB workshop model into the running daemon: skipped ticks, RSS",
        description="Run `edged run` at 5 fps, replace its model file by a big workshop "
        "model and then by a 2 MB edged model, and report the ticks skipped during each "
        "load and the RSS once the big model is gone. Exit status 0 when both targets are met.",
    )
    p.add_argument("--mb", type=float, default=150.0, help="size of the workshop model (MB)")
    p.set_defaults(func=run)
