"""``python -m bench web`` (also a table of the default run): the live page's CPU cost.

Runs real ``edged run --source clip.avi --loop --fps 5 --no-mqtt`` processes side by side
on the same looping 640x480 clip of a moving face (an MJPG file played at its own 15 fps,
as a USB camera delivers it), with a model and the page's default settings (loopback, a
free port), three for each scenario: the page off (``EDGED_HTTP__ENABLED=false``: the
baseline), the page on and nobody watching, one viewer, three viewers (the default
``http.max_viewers``). How far daemons doing the same differ is the measurement's noise
(mostly which other daemons' ticks happen to coincide with theirs on the shared cores):
a scenario's CPU is the mean of its three, and each difference from the baseline comes
with twice its standard error (from the spread within every scenario, pooled).

A viewer does what a browser showing the page does, on threads of this process:
``/stream.mjpg`` read to the end, counting the JPEG parts received, and ``/api/overview``
once a second (the page's poll).

Running them at the same time, rather than one after another, means every scenario sees
the same machine load over the same window (the bench's rule: interleave, so load
inflates both sides alike). After a warm-up, each daemon's CPU time (utime + stime of all
its threads, from /proc/<pid>/stat) is read at the start and the end of one window.

Budget (the web page issue): nobody watching costs ~0 (one check per frame: within 0.1
point, or within twice the standard error if that is larger); one viewer at most 2 points of a
core; each further viewer at most 0.3 points (a JPEG is encoded once per frame for all of
them). Rows say PASS or OVER; nothing is asserted. The live view's rate is
``min(http.stream_fps, loop.fps)``, 5 here: what each viewer got is in the table.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from bench import frames, processes
from bench.soak import SAMPLE, make_model, proc_cpu_s

ROOT = Path(__file__).resolve().parent.parent
FPS = 5.0
CLIP_FPS = 15.0  # the file's own rate: a USB camera's
NO_VIEWER_BUDGET = 0.1  # points: "~0", a tenth of a point is below what a window resolves
ONE_VIEWER_BUDGET = 2.0  # points
EXTRA_VIEWER_BUDGET = 0.3  # points, each viewer after the first
WINDOW, WARMUP = 60.0, 5.0  # s: the whole section takes ~80 s
QUICK_WINDOW, QUICK_WARMUP = 15.0, 3.0  # python -m bench --quick
URL = re.compile(r"web page at (https?://\S+)")
PHOTO = SAMPLE / "images" / "Aaron_Eckhart_0001.jpg"


def make_clip(path: Path, seconds: float) -> None:
    """A face drifting across a room, MJPG at 15 fps as a USB camera delivers it, but
    moving only 5 times a second (each picture held for 3 frames): a daemon at 5 fps then
    sees the same pictures whichever of the 3 frames its ticks catch, so daemons started
    at different moments do the same work."""
    hold = round(CLIP_FPS / FPS)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), CLIP_FPS, frames.SIZE)
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MJPG video here")
    for frame in frames.clip(PHOTO, seed=1, frames=round(seconds * FPS), side=260):
        for _ in range(hold):
            writer.write(frame)
    writer.release()


def note(msg: str) -> None:
    print(f"[web] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Scenario:
    name: str
    http: bool
    viewers: int


SCENARIOS = (
    Scenario("page off (http.enabled = false): baseline", False, 0),
    Scenario("page on, nobody watching", True, 0),
    Scenario("page on, 1 viewer", True, 1),
    Scenario("page on, 3 viewers", True, 3),
)
COPIES = 3  # daemons per scenario: how far those differ is the measurement's noise


@dataclass
class Daemon:
    """One ``edged run`` subprocess; its log lines are read on a thread (and kept)."""

    scenario: Scenario
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    url: str | None = None
    running: bool = False
    online: bool = False
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = URL.search(line)
            if m:
                self.url = m[1]
            self.running = self.running or "running at" in line
            self.online = self.online or "camera online" in line
            if self.running and self.online:  # the loop ticks, on frames: a picture
                self.ready.set()
        self.ready.set()  # it ended: whoever waits finds out

    def wait_ready(self, timeout: float) -> None:
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            raise RuntimeError(
                f"the daemon for {self.scenario.name!r} did not start "
                f"(exit {self.proc.poll()}):\n" + "\n".join(self.lines[-10:])
            )
        if self.scenario.http and self.url is None:
            raise RuntimeError(f"the daemon for {self.scenario.name!r} logged no page address")

    @property
    def port(self) -> int:
        assert self.url is not None
        return int(self.url.rstrip("/").rsplit(":", 1)[1])


@dataclass
class Viewer:
    """A browser showing the page: a thread reading the live view to its end (the page's
    <img>), another asking for /api/overview once a second (the page's poll)."""

    port: int
    times: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    error: str | None = None
    polls: int = 0
    first: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        for target, what in ((self.run, "view"), (self.poll, "poll")):
            threading.Thread(target=target, name=f"{what}-{self.port}", daemon=True).start()

    def poll(self) -> None:
        """GET /api/overview every second on one keep-alive connection, as app.js does."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            while not self.done.wait(1.0):
                conn.request("GET", "/api/overview")
                resp = conn.getresponse()
                resp.read()
                self.polls += resp.status == 200
        except (OSError, http.client.HTTPException):
            pass  # the daemon stopped
        finally:
            conn.close()

    def run(self, patience: float = 20.0) -> None:
        """Read the stream; a 503 before the first picture (the daemon's loop has not
        heard from the camera yet) is retried, as the page itself does."""
        deadline = time.monotonic() + patience
        try:
            while not self._watch() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            self.first.set()

    def _watch(self) -> bool:
        """One request; False when it should be tried again (503, no picture yet)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request("GET", "/stream.mjpg")
            resp = conn.getresponse()
            if resp.status != 200:
                self.error = f"{resp.status} {resp.read().decode(errors='replace').strip()}"
                return resp.status != 503 or bool(self.times)
            self.error = None
            self._parts(resp)
        except (OSError, http.client.HTTPException) as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
        return True

    def _parts(self, resp: http.client.HTTPResponse) -> None:
        while True:
            length = None
            while True:  # the part's headers: boundary, type, length, blank line
                line = resp.readline()
                if not line:
                    return  # the daemon ended the stream
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
                elif not line.strip() and length is not None:
                    break
            data = resp.read(length)
            if len(data) < length:
                return
            if data[:2] != b"\xff\xd8":
                self.error = "a part that is not a JPEG"
                return
            self.times.append(time.monotonic())
            self.sizes.append(length)
            self.first.set()

    def fps(self, t0: float, t1: float) -> float:
        return sum(t0 <= t < t1 for t in self.times) / (t1 - t0)


@dataclass
class Measured:
    scenario: Scenario
    copies: list[float]  # CPU % of a core, one per daemon
    viewer_fps: list[float]  # one per viewer, every copy's
    jpeg_kb: float | None

    @property
    def cpu_percent(self) -> float:
        return sum(self.copies) / len(self.copies)


@dataclass
class Result:
    rows: list[Measured]
    window: float
    warmup: float

    @property
    def baseline(self) -> float:
        return self.rows[0].cpu_percent

    @property
    def noise(self) -> float:
        """Twice the standard error of a difference between two scenarios' means (points):
        the daemons' spread around their own scenario's mean, pooled over all scenarios."""
        dev = [(c - m.cpu_percent) ** 2 for m in self.rows for c in m.copies]
        dof = sum(len(m.copies) - 1 for m in self.rows)
        n = len(self.rows[0].copies)
        return 2 * math.sqrt(sum(dev) / dof * 2 / n) if dof > 0 else math.nan


def start(scenario: Scenario, clip: Path, model: Path, cwd: Path) -> Daemon:
    cmd = [sys.executable, "-m", "edged", "run", "--source", str(clip), "--loop"]
    cmd += ["--fps", f"{FPS:g}", "--model", str(model), "--no-mqtt", "--log-level", "info"]
    # The defaults, whatever the shell says, except: this tree's edged, any free port.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env.update(PYTHONPATH=str(ROOT), EDGED_HTTP__PORT="0")
    env["EDGED_HTTP__ENABLED"] = "true" if scenario.http else "false"
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env
    )
    d = Daemon(scenario, proc)
    d.reader = threading.Thread(target=d.read, name=f"log-{proc.pid}", daemon=True)
    d.reader.start()
    return d


def stop(daemons: Sequence[Daemon]) -> None:
    processes.stop([(x.proc, x.reader) for x in daemons])


def watch(daemons: Sequence[Daemon]) -> dict[int, list[Viewer]]:
    """Viewers on every daemon that gets some, each until its first JPEG arrived."""
    out: dict[int, list[Viewer]] = {}
    for i, d in enumerate(daemons):
        for _ in range(d.scenario.viewers):
            v = Viewer(d.port)
            v.start()
            out.setdefault(i, []).append(v)
    for i, viewers in out.items():
        for v in viewers:
            if not v.first.wait(30) or v.error or not v.times:
                raise RuntimeError(
                    f"a viewer of {daemons[i].scenario.name!r} got no picture: {v.error}"
                )
    return out


def measure(window: float = WINDOW, warmup: float = WARMUP, copies: int = COPIES) -> Result:
    with tempfile.TemporaryDirectory(prefix="edged-web-") as tmp:
        work = Path(tmp)
        clip, model = work / "face.avi", work / "trainer.yml"
        make_clip(clip, 4.0)
        note("making a model from the committed sample")
        make_model(model, None)
        note(f"starting {len(SCENARIOS)} x {copies} daemons side by side")
        daemons = [start(s, clip, model, work) for _ in range(copies) for s in SCENARIOS]
        viewers: dict[int, list[Viewer]] = {}
        try:
            for d in daemons:
                d.wait_ready(60)
            viewers = watch(daemons)
            note(f"warm-up {warmup:g} s, then {window:g} s measured")
            time.sleep(warmup)
            t0, cpu0 = time.monotonic(), [proc_cpu_s(d.proc.pid) for d in daemons]
            time.sleep(window)
            t1, cpu1 = time.monotonic(), [proc_cpu_s(d.proc.pid) for d in daemons]
            for d in daemons:
                if d.proc.poll() is not None:
                    raise RuntimeError(f"the daemon for {d.scenario.name!r} ended early")
        finally:
            for v in (v for vs in viewers.values() for v in vs):
                v.done.set()
            stop(daemons)
    rows = []
    for s in SCENARIOS:
        mine = [i for i, d in enumerate(daemons) if d.scenario is s]
        vs = [v for i in mine for v in viewers.get(i, [])]
        sizes = [n for v in vs for n in v.sizes]
        rows.append(
            Measured(
                s,
                [100.0 * (cpu1[i] - cpu0[i]) / (t1 - t0) for i in mine],
                [v.fps(t0, t1) for v in vs],
                sum(sizes) / len(sizes) / 1000 if sizes else None,
            )
        )
    return Result(rows, t1 - t0, warmup)


def verdict(r: Result, m: Measured) -> tuple[str, str]:
    """(budget, PASS/OVER) for one row; nothing for the page-off rows."""
    delta = m.cpu_percent - r.baseline
    if not m.scenario.http:
        return "", ""
    if m.scenario.viewers == 0:  # ~0: within a tenth of a point, or the run's own noise
        allowed = max(NO_VIEWER_BUDGET, r.noise) if math.isfinite(r.noise) else NO_VIEWER_BUDGET
        return f"~0 (<= {allowed:.2g})", "PASS" if delta <= allowed else "OVER"
    if m.scenario.viewers == 1:
        return f"<= {ONE_VIEWER_BUDGET:g}", "PASS" if delta <= ONE_VIEWER_BUDGET else "OVER"
    one = next((x for x in r.rows if x.scenario.http and x.scenario.viewers == 1), None)
    allowed = ONE_VIEWER_BUDGET + EXTRA_VIEWER_BUDGET * (m.scenario.viewers - 1)
    ok = delta <= allowed
    budget = f"<= {allowed:g}"
    if one is not None:
        each = (m.cpu_percent - one.cpu_percent) / (m.scenario.viewers - 1)
        ok = ok and each <= EXTRA_VIEWER_BUDGET
        budget += f"; {each:+.2f} per viewer after the first (<= {EXTRA_VIEWER_BUDGET:g})"
    return budget, "PASS" if ok else "OVER"


def viewer_rates(fps: Sequence[float]) -> str:
    """Frames per second each viewer got: ``3.2 (3 viewers)``, or ``3.1-3.2 (...)``."""
    if not fps:
        return "-"
    lo, hi = f"{min(fps):.1f}", f"{max(fps):.1f}"
    return f"{lo if lo == hi else f'{lo}-{hi}'} ({len(fps)} viewer{'s' * (len(fps) > 1)})"


def table(r: Result) -> list[str]:
    """The section's Markdown: a heading line, the table, a note."""
    n = len(r.rows[0].copies)
    head = "| scenario | daemon CPU (% of a core): mean (each) | Δ vs baseline (points) | "
    head += f"frames/s to each viewer (of {FPS:g}) | budget (points) | |"
    lines = [
        f"Web page: daemon CPU while the live view is watched; {n * len(r.rows)} `edged run "
        f"--loop --fps {FPS:g} --no-mqtt`, {n} per scenario, side by side on one 640x480 clip "
        f"with a moving face, {r.window:.0f} s after a {r.warmup:g} s warm-up, utime+stime "
        "from /proc/<pid>/stat:",
        "",
        head,
        "|---|---|---|---|---|---|",
    ]
    for m in r.rows:
        delta = "-" if m is r.rows[0] else f"{m.cpu_percent - r.baseline:+.2f} ± {r.noise:.2f}"
        cpu = f"{m.cpu_percent:.2f} ({', '.join(f'{c:.2f}' for c in m.copies)})"
        budget, ok = verdict(r, m)
        cells = [m.scenario.name, cpu, delta, viewer_rates(m.viewer_fps), budget, ok]
        lines.append("| " + " | ".join(cells) + " |")
    spread = max(max(m.copies) - min(m.copies) for m in r.rows)
    lines += [
        "",
        f"- ±: twice the standard error of a difference of means; daemons doing the same "
        f"differed by up to {spread:.2f} points",
    ]
    kb = [m.jpeg_kb for m in r.rows if m.jpeg_kb is not None]
    if kb:
        lines.append(f"- live view JPEGs: {kb[0]:.0f} KB each (640x480, http.jpeg_quality 75)")
    return lines


def passed(r: Result) -> bool:
    return all(verdict(r, m)[1] != "OVER" for m in r.rows)


def run(args: argparse.Namespace) -> int:
    r = measure(args.window, args.warmup)
    print("\n".join(table(r)))
    return 0 if passed(r) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web",
        help="the web page's CPU cost: daemons with the page off, on, watched by 1 and 3",
        description="Run `edged run` on a looping face clip at 5 fps, several side by side, "
        "two of each: the page off (the baseline), on with nobody watching, with 1 and "
        "with 3 live viewers; print the daemons' CPU over one window and the difference "
        "from the baseline against the budget (~0, <= 2 points, <= 0.3 per further "
        "viewer). Exit status 0 when every row is within budget.",
    )
    p.add_argument(
        "--window", type=float, default=WINDOW, help=f"seconds measured (default {WINDOW:g})"
    )
    p.add_argument(
        "--warmup", type=float, default=WARMUP, help=f"seconds before it (default {WARMUP:g})"
    )
    p.set_defaults(func=run)
