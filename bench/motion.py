"""``python -m bench motion`` (also a table of the default run): the motion gate (issue 14).

What edged costs while it looks at an empty room, with ``detector.motion`` on and off,
against the workshop's own loop and against the daemon with detection switched off (the
privacy switch: the floor, nothing but the camera and the loop).

Scenes are made here, from code (`bench.frames`): 640x480 pictures of a 5 fps camera,
written as MJPG at 10 fps (each picture twice, so a daemon ticking at 5 fps sees every
picture whatever its phase) and played looped in real time, as a USB camera delivers them.
Each is at least ten full-scan intervals long (60 s; 20 s with ``--quick``): an empty still
room on a dense cluttered wall and on a plain one, a dim noisy room, an empty room with a
TV (10% of the frame, a new picture every time) and with a lamp swinging, a face walking
in and staying still, faces changing every second, the light switched off and on.

Whole processes, side by side (bench/web.py's rule: the same machine load for all): per
scene, ``edged run --fps 5 --loop`` with ``detector.motion = true``, with ``false`` (today's
full scan every frame while no face is followed), with detection switched off, and the
workshop's per-frame code (`bench.workshop`) in its own 5 fps loop on the same clip. One
OpenCV thread each (OPENCV_FOR_THREADS_NUM=1). CPU is utime + stime from /proc/<pid>/stat
over exactly one pass of the looping clip, after the process has seen its first frames,
so interval scans are in it. Per-frame figures come from this process, on the decoded
pictures, through the same `Pipeline` the daemon builds, timed as CPU of this thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench import frames, processes
from bench.soak import SAMPLE, make_model, proc_cpu_s
from bench.workshop import Workshop
from edged.settings import DetectorSettings
from edged.vision.detector import DetectorConfig, FaceDetector
from edged.vision.model import WORKSHOP_CLASSES, ExpressionModel
from edged.vision.model_file import load_model
from edged.vision.motion import MotionGate
from edged.vision.pipeline import Pipeline
from edged.vision.tracker import TrackConfig

ROOT = Path(__file__).resolve().parent.parent
FPS = frames.PICTURE_FPS  # the daemon's loop.fps and the scenes' picture rate
CLIP_FPS = 2 * FPS  # the file's rate: every picture written twice
SECONDS, QUICK_SECONDS = 60.0, 20.0  # one pass of each scene: >= 10 (4) full-scan intervals
WARMUP = 3.0  # s after the process saw its first frame, before the window opens
PARALLEL = 4  # scenes measured at once, 4 processes each: ~0.8-1 core in all here
# Pictures timed in-process (the first n of the scene): an empty room costs the same on
# every picture but those of the interval scans (three intervals here); the walk-in needs
# its 20 empty pictures, its walk and some stillness; faces change every 5 pictures.
PER_FRAME = {"clutter": 75, "plain": 75, "dim": 75, "walk_in": 100, "faces": 150}
# The daemon's detector: settings.detector's defaults (scale 1.2, 5 neighbours, 10%, 320 wide).
DAEMON_DETECTOR = DetectorConfig.from_settings(DetectorSettings())
WALKER = SAMPLE / "images" / "Aaron_Eckhart_0001.jpg"

# Columns: the workshop's loop, today's daemon, the gated daemon; the floor is per scene.
WORKSHOP, TODAY, GATED, FLOOR = "workshop", "motion=false", "motion=true", "detection off"
VARIANTS = (WORKSHOP, TODAY, GATED, FLOOR)


def note(msg: str) -> None:
    print(f"[motion] {msg}", file=sys.stderr, flush=True)


# -- scenes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    key: str
    title: str
    faces: bool  # a face is in view (some of) the time


SCENES = (
    Scene("clutter", "empty still room, cluttered wall", False),
    Scene("plain", "empty still room, plain wall", False),
    Scene("dim", "dim, noisy room", False),
    Scene("tv", "empty room with a TV (10% of the frame)", False),
    Scene("swing", "empty room, a lamp swinging", False),
    Scene("lights", "empty room, light switched every 6 s", False),
    Scene("walk_in", "a face walks in and stays still", True),
    Scene("faces", "faces changing every second", True),
)
EMPTY_STILL = ("clutter", "plain", "dim")  # the rooms that must cost ~ the floor
FACES = ("walk_in", "faces")


def photos(n: int) -> list[Path]:
    """``n`` sample photos, taking turns across the classes (different people, expressions)."""
    lists = [(SAMPLE / f"{c}.txt").read_text().split() for c in WORKSHOP_CLASSES]
    names = [name for group in zip(*lists, strict=False) for name in group]
    return [SAMPLE / "images" / name for name in names[:n]]


def pictures(key: str, n: int) -> Iterator[np.ndarray]:
    """The ``n`` pictures of scene ``key`` (each scene its own seeds: the same every run)."""
    plain = frames.background(3)
    makers: dict[str, Callable[[], Iterator[np.ndarray]]] = {
        "clutter": lambda: frames.still(frames.clutter(5), n, 11),
        "plain": lambda: frames.still(plain, n, 12),
        "dim": lambda: frames.dim(n, 13),
        "tv": lambda: frames.tv(plain, n, 14),
        "swing": lambda: frames.swing(plain, n, 15),
        "lights": lambda: frames.lights(plain, n, 16),
        "walk_in": lambda: frames.walk_in(WALKER, plain, n, 17),
        "faces": lambda: frames.faces_changing(photos(12), plain, n, 18),
    }
    return makers[key]()


def write_clip(scene: Scene, path: Path, n: int) -> None:
    """The scene as MJPG at CLIP_FPS, every picture written CLIP_FPS / FPS times."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), CLIP_FPS, frames.SIZE)
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MJPG video here")
    for picture in pictures(scene.key, n):
        for _ in range(round(CLIP_FPS / FPS)):
            writer.write(picture)
    writer.release()


def read_pictures(path: Path) -> Iterator[np.ndarray]:
    """The clip's pictures as the daemon decodes them (every other frame of the file)."""
    cap = cv2.VideoCapture(str(path))
    try:
        k = 0
        while True:
            ok, img = cap.read()
            if not ok:
                return
            if k % round(CLIP_FPS / FPS) == 0:
                yield img
            k += 1
    finally:
        cap.release()


# -- the workshop's loop, as a process of its own ---------------------------------------


def workshop_loop(clip: Path, model: Path, fps: float) -> None:
    """The notebook's per-frame code on a camera: read, detect, predict every face, at
    ``fps`` (the file's extra frames are grabbed and dropped, as a camera's would be)."""
    cv2.setNumThreads(1)
    ws = Workshop()
    ws.recognizer = Workshop.read(model)
    cap = cv2.VideoCapture(str(clip))
    skip = round(cap.get(cv2.CAP_PROP_FPS) / fps) - 1
    period, due = 1.0 / fps, time.monotonic()
    first = True
    while True:
        for _ in range(skip):
            cap.grab()
        ok, frame = cap.read()
        if not ok:  # the end of the clip: loop, as the daemon's --loop does
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        ws.process(frame)
        if first:
            print("ready", flush=True)
            first = False
        due += period
        time.sleep(max(0.0, due - time.monotonic()))


def train_workshop(path: Path) -> None:
    """The workshop's model, trained the notebook's way on the committed sample."""
    ws = Workshop()
    crops, labels = [], []
    for i, c in enumerate(WORKSHOP_CLASSES):
        for name in (SAMPLE / f"{c}.txt").read_text().split():
            img = cv2.imread(str(SAMPLE / "images" / name), cv2.IMREAD_COLOR)
            for crop in ws.training_crops(img) if img is not None else []:
                crops.append(crop)
                labels.append(i)
    ws.train(crops, labels)
    ws.write(path)


# -- the processes ------------------------------------------------------------------------


@dataclass
class Proc:
    """One measured process; its stdout (the daemon's JSON lines) read on a thread."""

    scene: Scene
    variant: str
    proc: subprocess.Popen[str]
    stats: list[tuple[float, dict]] = field(default_factory=list)  # (monotonic, record)
    frames: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None
    cpu: float | None = None  # % of one core over the window
    window: tuple[float, float] = (0.0, 0.0)  # monotonic

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("ready"):  # the workshop's loop
                self.ready.set()
                continue
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                kind = rec.get("type")
                if kind == "stats":
                    self.stats.append((time.monotonic(), rec))
                elif kind == "frame":
                    self.frames += 1
                    self.ready.set()
                elif kind == "camera" and rec.get("online") and self.variant == FLOOR:
                    self.ready.set()  # detection off: no frame records, only the camera
        self.ready.set()

    def window_stats(self) -> tuple[dict, dict]:
        """The stats records around the window: the last before it opened, the first after
        it closed (records come every 2 s: counters' differences are the window's, +-2 s)."""
        t0, t1 = self.window
        before = [rec for when, rec in self.stats if when <= t0]
        after = [rec for when, rec in self.stats if when >= t1]
        return (before[-1] if before else {}), (after[0] if after else {})


def config_file(work: Path, variant: str) -> Path:
    """The daemon's settings for one column: page off, and the switch or the gate."""
    state = work / f"{variant.replace('=', '-').replace(' ', '-')}.state"
    if variant == FLOOR:
        state.write_text("OFF\n")  # the privacy switch, as the daemon remembers it
    lines = ["[http]", "enabled = false", "[privacy]", f'state_file = "{state}"']
    lines += ["[detector]", f"motion = {'true' if variant == GATED else 'false'}"]
    path = state.with_suffix(".toml")
    path.write_text("\n".join(lines) + "\n")
    return path


def environment() -> dict[str, str]:
    """This tree's edged, one OpenCV thread, no EDGED_ settings from the shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env.update(PYTHONPATH=str(ROOT), OPENCV_FOR_THREADS_NUM="1")
    return env


def start(scene: Scene, variant: str, clip: Path, models: dict[str, Path], work: Path) -> Proc:
    if variant == WORKSHOP:
        cmd = [sys.executable, "-m", "bench.motion", "workshop-loop", str(clip),
               str(models[WORKSHOP]), f"{FPS:g}"]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "edged", "run", "--source", str(clip), "--loop",
               "--fps", f"{FPS:g}", "--model", str(models["edged"]), "--no-mqtt", "--stdout",
               "--stats-interval", "2", "--log-level", "warning",
               "--config", str(config_file(work, variant))]  # fmt: skip
    log = (work / f"{scene.key}-{variant.replace(' ', '-')}.log").open("w")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=work, env=environment()
    )
    log.close()
    p = Proc(scene, variant, proc)
    p.reader = threading.Thread(target=p.read, name=f"read-{proc.pid}", daemon=True)
    p.reader.start()
    return p


def stop(procs: Sequence[Proc]) -> None:
    processes.stop([(x.proc, x.reader) for x in procs])


def measure_batch(
    batch: Sequence[Scene], clips: dict[str, Path], models: dict[str, Path], work: Path,
    seconds: float,
) -> list[Proc]:  # fmt: skip
    """Every variant of every scene in ``batch`` at once; CPU over one pass of the clips."""
    procs = [start(s, v, clips[s.key], models, work) for s in batch for v in VARIANTS]
    try:
        for p in procs:
            if not p.ready.wait(90) or p.proc.poll() is not None:
                log = (work / f"{p.scene.key}-{p.variant.replace(' ', '-')}.log").read_text()
                raise RuntimeError(f"{p.variant} on {p.scene.key} did not start:\n{log[-2000:]}")
        time.sleep(WARMUP)
        t0, cpu0 = time.monotonic(), [proc_cpu_s(p.proc.pid) for p in procs]
        time.sleep(seconds)
        t1, cpu1 = time.monotonic(), [proc_cpu_s(p.proc.pid) for p in procs]
        time.sleep(2.5)  # one more stats record, covering the window's end
        for p, a, b in zip(procs, cpu0, cpu1, strict=True):
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.variant} on {p.scene.key} ended early")
            p.cpu = 100.0 * (b - a) / (t1 - t0)
            p.window = (t0, t1)
    finally:
        stop(procs)
    return procs


# -- per-frame figures, in this process ---------------------------------------------------


def make_pipeline(gated: bool) -> Pipeline:
    """The pipeline `edged run` builds from the default settings (tracking on, a full scan
    every ``detector.full_scan_interval``), with the motion gate or without (today's)."""
    d = DetectorSettings()
    return Pipeline(
        FaceDetector(DetectorConfig.from_settings(d)),
        max_faces=5,
        clock=time.thread_time,  # detect_ms and classify_ms in CPU ms of this thread
        track=TrackConfig(full_scan_every=d.full_scan_frames(FPS)),
        gate=MotionGate() if gated else None,
    )


@dataclass
class Frames:
    """One variant's per-picture results on one scene: CPU ms and whether a face was found."""

    detect: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    found: list[bool] = field(default_factory=list)


def thread_ms(fn: Callable[..., object], *args: object) -> tuple[float, object]:
    t = time.thread_time_ns()
    out = fn(*args)
    return (time.thread_time_ns() - t) / 1e6, out


def per_frame(
    clip: Path, limit: int | None, ws: Workshop, model: ExpressionModel
) -> dict[str, Frames]:
    """Each picture through a full scan (the reference), the workshop's code, today's
    pipeline and the gated one, in turn (so load from elsewhere hits all alike)."""
    full = FaceDetector(DAEMON_DETECTOR)
    pipes = {TODAY: make_pipeline(False), GATED: make_pipeline(True)}
    out = {k: Frames() for k in ("full scan", WORKSHOP, *pipes)}
    for k, frame in enumerate(read_pictures(clip)):
        if limit is not None and k >= limit:
            break
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        ms, boxes = thread_ms(full.detect, gray)
        _add(out["full scan"], ms, ms, bool(boxes))
        ms, faces = thread_ms(ws.process, frame)
        _add(out[WORKSHOP], ms, ms, bool(faces))
        for name, pipe in pipes.items():
            ms, res = thread_ms(pipe.process, frame, model)
            _add(out[name], res.detect_ms, ms, bool(res.faces))
    return out


def _add(f: Frames, detect: float, total: float, found: bool) -> None:
    f.detect.append(detect)
    f.total.append(total)
    f.found.append(found)


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one process came to: its CPU over the window, the daemon's stats around it."""

    scene: str
    variant: str
    cpu: float
    before: dict
    after: dict


@dataclass
class Measured:
    seconds: float
    cpu: dict[tuple[str, str], float]  # (scene key, variant) -> % of one core
    runs: list[Run]
    frames: dict[str, dict[str, Frames]]  # scene key -> variant -> per-picture results
    scenes: list[Scene]
    load: tuple[float, float]
    wall: float


def walk_in_delay(fr: dict[str, Frames], variant: str) -> int | None:
    """Pictures from the first one a full scan finds the face in to the first the variant
    reports a face in (None: never, or the full scan never found it)."""
    if variant not in fr or True not in fr["full scan"].found:
        return None
    ref = fr["full scan"].found
    first = ref.index(True)
    got = fr[variant].found
    return next((k - first for k in range(len(got)) if got[k] and k >= first - 5), None)


def face_share(m: Measured, variant: str) -> float | None:
    """Of the pictures where a full scan finds a face (face scenes), the share this variant
    reports a face in."""
    hit = ref = 0
    for s in m.scenes:
        fr = m.frames.get(s.key, {})
        if not s.faces or variant not in fr:
            continue
        for r, v in zip(fr["full scan"].found, fr[variant].found, strict=True):
            ref += r
            hit += r and v
    return hit / ref if ref else None


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}%"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**missed**")


def cpu_rows(m: Measured) -> list[list[str]]:
    rows = []
    for key, target in (("clutter", None), ("plain", None), ("dim", None),
                        ("walk_in", 3.5), ("faces", 6.0), ("tv", 0.4),
                        ("swing", None), ("lights", None)):  # fmt: skip
        s = next((x for x in m.scenes if x.key == key), None)
        if s is None:
            continue
        c = {v: m.cpu.get((key, v)) for v in VARIANTS}
        floor, gated, today = c[FLOOR], c[GATED], c[TODAY]
        ok: bool | None = None
        if not s.faces and key in EMPTY_STILL:
            goal = f"<= floor + 1 ({pct(floor)} + 1)"
            ok = None if gated is None or floor is None else gated <= floor + 1.0
        elif key == "tv":
            goal = f"<= 40% of motion=false ({pct(0.4 * today) if today else '-'})"
            ok = None if gated is None or today is None else gated <= 0.4 * today
        elif target is not None:
            goal = f"<= {target:g}%"
            ok = None if gated is None else gated <= target
        else:
            goal = f"(floor {pct(floor)})"
        rows.append([f"daemon CPU, {s.title}", pct(c[WORKSHOP]), pct(today), pct(gated),
                     goal, verdict(ok)])  # fmt: skip
    return rows


def median_ms(fr: Frames | None, which: str = "detect", q: float = 50) -> float | None:
    if fr is None or not getattr(fr, which):
        return None
    return float(np.percentile(getattr(fr, which), q))


def frame_rows(m: Measured) -> list[list[str]]:
    rows = []
    empty = [k for k in EMPTY_STILL if k in m.frames]

    def cell(v: str, which: str, q: float, keys: Sequence[str]) -> str:
        vals = [median_ms(m.frames[k].get(v), which, q) for k in keys]
        return " / ".join("-" if x is None else f"{x:.2f}" for x in vals)

    worst = [median_ms(m.frames[k].get(GATED)) for k in empty]
    ok = None if None in worst or not worst else max(w for w in worst if w is not None) <= 0.5
    rows.append([f"detect ms per frame, median, empty still room ({' / '.join(empty)})",
                 cell(WORKSHOP, "detect", 50, empty), cell(TODAY, "detect", 50, empty),
                 cell(GATED, "detect", 50, empty), "<= 0.5 ms", verdict(ok)])  # fmt: skip
    faces = [k for k in FACES if k in m.frames]
    if not faces:
        return rows
    p95 = [median_ms(m.frames[k].get(GATED), "total", 95) for k in faces]
    ok = None if None in p95 or not p95 else max(x for x in p95 if x is not None) <= 15
    rows.append([f"ms per frame (detect + classify), p95, face in view ({' / '.join(faces)})",
                 cell(WORKSHOP, "total", 95, faces), cell(TODAY, "total", 95, faces),
                 cell(GATED, "total", 95, faces), "<= 15 ms", verdict(ok)])  # fmt: skip
    fr = m.frames.get("walk_in", {})
    delays = {v: walk_in_delay(fr, v) for v in (WORKSHOP, TODAY, GATED)}
    d = delays[GATED]
    rows.append(["frames until the walking-in face is reported, from the first a full scan "
                 "finds it in", *["-" if delays[v] is None else str(delays[v])
                                  for v in (WORKSHOP, TODAY, GATED)],
                 "<= 2", verdict(None if d is None else d <= 2)])  # fmt: skip
    shares = {v: face_share(m, v) for v in (WORKSHOP, TODAY, GATED)}
    sh = shares[GATED]
    rows.append(["face frames reported, vs a full scan every frame (walk_in + faces)",
                 *["-" if shares[v] is None else f"{shares[v]:.1%}"
                   for v in (WORKSHOP, TODAY, GATED)],
                 ">= 99%", verdict(None if sh is None else sh >= 0.99)])  # fmt: skip
    return rows


def daemon_detail(m: Measured) -> list[str]:
    """What each daemon said about itself over the window (its stats records)."""
    lines = ["| scene | daemon | CPU % | frames | skipped ticks | detect_ms p50 / p95 (wall) | "
             "full scans | region scans | motion_ratio |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in m.runs:
        if r.variant == WORKSHOP:
            continue
        a, b = r.before, r.after
        det = b.get("detect_ms") or {}

        def diff(key: str, a: dict = a, b: dict = b) -> str:
            if key not in b:
                return "-"
            return str(int(b[key]) - int(a.get(key, 0)))

        lines.append(f"| {r.scene} | {r.variant} | {pct(r.cpu)} | {diff('frames')} | "
                     f"{diff('skipped_ticks')} | "
                     f"{det.get('p50', '-')} / {det.get('p95', '-')} | {diff('full_scans')} | "
                     f"{diff('region_scans')} | {b.get('motion_ratio', '-')} |")  # fmt: skip
    return lines


def table(m: Measured) -> list[str]:
    head = ["figure", "workshop", "motion=false (today)", "motion=true", "target", "met?"]
    rows = cpu_rows(m) + frame_rows(m)
    lines = [
        f"Motion gate (issue 14): {len(m.scenes)} generated 640x480 scenes of {m.seconds:g} s "
        f"at {FPS:g} fps; `edged run --fps {FPS:g} --loop` per column, side by side, one "
        f"OpenCV thread; CPU = utime+stime from /proc over one pass of the scene, % of one "
        f"core; per-frame figures: CPU ms of one thread, same pictures, in-process.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        f"- load average {m.load[0]:.1f} at the start, {m.load[1]:.1f} at the end; {m.wall:.0f} s",
        "",
        "Each daemon's own stats over the window:",
        "",
        *daemon_detail(m),
    ]
    return lines


# -- running it ---------------------------------------------------------------------------


def measure(quick: bool = False, parallel: int = PARALLEL, only: Sequence[str] = ()) -> Measured:
    cv2.setNumThreads(1)
    started, load0 = time.monotonic(), os.getloadavg()[0]
    seconds = QUICK_SECONDS if quick else SECONDS
    todo = [s for s in SCENES if not only or s.key in only]
    with tempfile.TemporaryDirectory(prefix="edged-motion-") as tmp:
        work = Path(tmp)
        note(f"making {len(todo)} scenes of {seconds:g} s and the two models")
        clips = {s.key: work / f"{s.key}.avi" for s in todo}
        for s in todo:
            write_clip(s, clips[s.key], round(seconds * FPS))
        models = {"edged": work / "trainer.yml", WORKSHOP: work / "workshop.yml"}
        make_model(models["edged"], None)
        train_workshop(models[WORKSHOP])
        procs: list[Proc] = []
        for i in range(0, len(todo), parallel):
            batch = todo[i : i + parallel]
            note(f"daemons on {', '.join(s.key for s in batch)}: {seconds:g} s")
            procs += measure_batch(batch, clips, models, work, seconds)
        note("per-frame figures in this process")
        ws = Workshop()
        ws.recognizer = Workshop.read(models[WORKSHOP])
        model = load_model(models["edged"])
        per = {
            s.key: per_frame(clips[s.key], PER_FRAME[s.key], ws, model)
            for s in todo
            if s.key in PER_FRAME
        }
    runs = [
        Run(p.scene.key, p.variant, p.cpu, *p.window_stats()) for p in procs if p.cpu is not None
    ]
    cpu = {(r.scene, r.variant): r.cpu for r in runs}
    return Measured(seconds, cpu, runs, per, todo, (load0, os.getloadavg()[0]),
                    time.monotonic() - started)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.table:
        print("\n".join(table(pickle.loads(args.table.read_bytes()))))
        return 0
    m = measure(args.quick, args.parallel, args.scenes or ())
    if args.save:
        args.save.write_bytes(pickle.dumps(m))
    print("\n".join(table(m)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "motion",
        help="the motion gate: daemon CPU per scene, gate on/off, workshop, detection off",
        description="Generate the issue-14 scenes, run `edged run` on each with "
        "detector.motion on and off and with detection switched off, and the workshop's "
        "loop, side by side; print one Markdown table against the issue's targets.",
    )
    p.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS:g} s scenes")
    p.add_argument("--parallel", type=int, default=PARALLEL, help="scenes measured at once")
    p.add_argument("--scenes", nargs="*", help="only these scenes (keys: clutter, plain, ...)")
    p.add_argument("--save", type=Path, help="keep the measurements (pickle) for --table")
    p.add_argument("--table", type=Path, help="print the table of saved measurements, only")
    p.set_defaults(func=run)


if __name__ == "__main__" and sys.argv[1:2] == ["workshop-loop"]:
    workshop_loop(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
