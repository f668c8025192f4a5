"""``python -m bench``: the workshop pipeline against edged's, on the same inputs, in one run.

Everything is timed as CPU time of this one thread (``cv2.setNumThreads(1)``), with the
workshop and edged interleaved in short blocks (a clip, a round of faces), so load from
other processes on the machine inflates both sides alike. Medians and 95th percentiles;
ratios of medians. ``python -m bench soak`` is the daemon soak (see bench/soak.py);
the web page's CPU cost (bench/web.py) is a table of its own, also ``python -m bench web``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench import capture, frames, motion, reload, soak, web
from bench import photos as photo_bench
from bench.workshop import Workshop, workshop_pipeline
from edged.training import fitting
from edged.training.datasets import load_dataset, person_of
from edged.training.evaluate import Item, cross_validate, edged_pipeline
from edged.vision.detector import IMAGE_DETECTOR, Box, DetectorConfig, FaceDetector
from edged.vision.model import WORKSHOP_CLASSES, ExpressionModel
from edged.vision.model_file import load_model, write_model
from edged.vision.pipeline import Pipeline
from edged.vision.preprocess import Preprocessor
from edged.vision.tracker import TrackConfig

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT.parent / "shared" / "datasets" / "facial_expressions"
SAMPLE = ROOT / "tests" / "data" / "facial_expressions"
# The daemon's detector: settings.detector defaults (scale 1.2, 5 neighbours, 10% min
# size, frames downscaled to 320 wide), with region-of-interest tracking.
DAEMON_DETECTOR = DetectorConfig(scale_factor=1.2, min_neighbors=5, min_size=0.1, max_width=320)


def note(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def cpu_ms(fn: Callable[..., object], *args: object) -> tuple[float, object]:
    """(CPU milliseconds of this thread, result): immune to time spent descheduled."""
    t = time.thread_time_ns()
    out = fn(*args)
    return (time.thread_time_ns() - t) / 1e6, out


def _scan(
    detector: FaceDetector,
    gray: np.ndarray,
    region: Box | None = None,
    sizes: tuple[int, int] | None = None,
    exclude: Sequence[Box] = (),
) -> list[Box]:
    """One scan of a frame, its downscale included (a fresh one: painting out stays local)."""
    return detector.scan(detector.prepare(gray), region, sizes, exclude)


@dataclass
class Row:
    what: str
    workshop: list[float]
    edged: list[float]
    target: str = ""
    unit: str = "ms"
    extra: str = ""

    def cells(self) -> list[str]:
        def fmt(v: list[float]) -> str:
            if not v:
                return "-"
            if self.unit == "ms":
                return f"{np.median(v):.2f} ({np.percentile(v, 95):.2f})"
            return f"{np.median(v):.3g}"

        ratio = "-"
        if self.workshop and self.edged and np.median(self.edged) > 0:
            ratio = f"{np.median(self.workshop) / np.median(self.edged):.1f}x"
        return [self.what, fmt(self.workshop), fmt(self.edged), ratio, self.target, self.extra]


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    accuracy: list[str] = field(default_factory=list)
    web: list[str] = field(default_factory=list)

    def table(self) -> str:
        head = ["what", "workshop median (p95)", "edged median (p95)", "speed-up", "target", ""]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r.cells()) + " |" for r in self.rows]
        return "\n".join(lines)


# -- inputs ------------------------------------------------------------------------------


def dataset_items(root: Path, limit: int | None) -> list[Item]:
    ds = load_dataset(root, WORKSHOP_CLASSES, "lists")
    items = [Item(s.path, s.label, s.person) for s in ds.samples if s.path.is_file()]
    if limit:
        # Every n-th item keeps every class and many people.
        step = max(1, len(items) // limit)
        items = items[::step][:limit]
    return items


def progress(label: str, i: int, n: int) -> None:
    if n >= 20 and (i + 1) % max(1, n // 10) == 0:
        note(f"{label}: {i + 1}/{n}")


@dataclass
class Faces:
    """Each image's training faces, found once by each pipeline's own training code."""

    items: list[Item]
    workshop: dict[Path, list[np.ndarray]]
    edged: dict[Path, np.ndarray | None]


def extract(items: Sequence[Item]) -> Faces:
    ws = Workshop()
    det = FaceDetector(IMAGE_DETECTOR)
    pre = Preprocessor(fitting.FitConfig().preprocess)
    wcrops: dict[Path, list[np.ndarray]] = {}
    efaces: dict[Path, np.ndarray | None] = {}
    for i, it in enumerate(items):
        img = cv2.imread(str(it.path), cv2.IMREAD_COLOR)
        wcrops[it.path] = ws.training_crops(img) if img is not None else []
        efaces[it.path] = fitting.extract_face(it.path, det, pre)
        progress("finding training faces", i, len(items))
    return Faces(list(items), wcrops, efaces)


def grow_to(
    faces: Sequence[np.ndarray], labels: Sequence[int], n: int, seed: int = 0
) -> tuple[list[np.ndarray], list[int]]:
    """Exactly ``n`` training faces: a subset, or the faces plus mirrored, jittered copies.

    The dataset has ~1,000 labelled photos; the 5,000 row needs more, so it repeats them
    with a flip, a small rotation, scale and shift (the same for both pipelines).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(faces))
    out: list[np.ndarray] = []
    lab: list[int] = []
    i = 0
    while len(out) < n:
        k = int(order[i % len(faces)])
        rnd = i // len(faces)
        f = faces[k]
        if rnd:
            if rnd % 2:
                f = cv2.flip(f, 1)
            h, w = f.shape[:2]
            m = cv2.getRotationMatrix2D(
                (w / 2, h / 2), float(rng.uniform(-6, 6)), float(rng.uniform(0.94, 1.06))
            )
            m[:, 2] += rng.uniform(-0.04, 0.04, 2) * (w, h)
            f = cv2.warpAffine(f, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        out.append(f)
        lab.append(int(labels[k]))
        i += 1
    return out, lab


def training_sets(
    faces: Faces,
) -> tuple[tuple[list[np.ndarray], list[int]], tuple[list[np.ndarray], list[int], list[str]]]:
    ids = {c: i for i, c in enumerate(WORKSHOP_CLASSES)}
    wf, wl = [], []
    ef, el, eg = [], [], []
    for it in faces.items:
        for c in faces.workshop[it.path]:
            wf.append(c)
            wl.append(ids[it.label])
        f = faces.edged[it.path]
        if f is not None:
            ef.append(f)
            el.append(ids[it.label])
            eg.append(it.person)
    return (wf, wl), (ef, el, eg)


def fit_edged(
    faces: Sequence[np.ndarray], labels: Sequence[int], groups: Sequence[str] | None
) -> fitting.FittedModel:
    return fitting.fit(
        faces, labels, dict(enumerate(WORKSHOP_CLASSES)), fitting.FitConfig(), groups=groups
    )


# -- measurements ------------------------------------------------------------------------


@dataclass
class FrameSample:
    """A frame with a face where both pipelines found one: for the classification timing."""

    gray: np.ndarray
    ws_box: tuple[int, int, int, int]
    edged_box: object


def time_frames(
    res: Results,
    photos: Sequence[Path],
    ws: Workshop,
    model: ExpressionModel,
    clip_frames: int,
) -> list[FrameSample]:
    pipe = Pipeline(FaceDetector(DAEMON_DETECTOR), max_faces=5, track=TrackConfig())
    full = FaceDetector(DAEMON_DETECTOR)
    assert pipe.tracker is not None
    w_frame, e_frame, w_det, e_full = [], [], [], []
    e_region: list[float] = []
    e_newcomer: list[float] = []
    w_found = e_found = n = 0
    samples: list[FrameSample] = []
    sides: list[int] = []
    for k, photo in enumerate(photos):
        pipe.tracker.reset()
        clip = list(frames.clip(photo, seed=k, frames=clip_frames))
        # Clip by clip, alternating who goes first: close enough in time that load from
        # other processes hits both, yet one side's memory sweep (the workshop model is
        # tens of MB) does not evict the other's working set before every call.
        for side in ("workshop", "edged") if k % 2 == 0 else ("edged", "workshop"):
            for frame in clip:
                if side == "workshop":
                    tw, wr = cpu_ms(ws.process, frame)
                    w_frame.append(tw)
                    w_found += bool(wr)
                else:
                    te, er = cpu_ms(pipe.process, frame, model)
                    e_frame.append(te)
                    e_found += bool(er.faces)
                    n += 1
        for t, frame in enumerate(clip):
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            if t == 0:
                tw2, wb = cpu_ms(ws.detect, gray)
                tf, fb = cpu_ms(full.detect, gray)
                w_det.append(tw2)
                e_full.append(tf)
                if fb:
                    f = fb[0]
                    p = f.w // 2
                    region = Box(f.x - p, f.y - p, f.w + 2 * p, f.h + 2 * p)
                    sizes = (round(0.8 * f.w), round(1.25 * f.w))
                    e_region.append(cpu_ms(_scan, full, gray, region, sizes)[0])
                    e_newcomer.append(cpu_ms(_scan, full, gray, None, None, [f])[0])
                if len(wb) and fb:
                    x, y, w, h = max(wb.tolist(), key=lambda b: b[2] * b[3])
                    samples.append(FrameSample(gray.copy(), (x, y, w, h), fb[0]))
                    sides.append(w)
    res.rows.append(
        Row(
            "Haar detection, full scan, 640x480 with a face",
            w_det,
            e_full,
            extra="edged: downscaled to 320 wide",
        )
    )
    res.rows.append(
        Row(
            "  edged tracking: region scan around the face",
            [],
            e_region,
            extra="box grown by half its side, sizes 0.8-1.25x (most frames)",
        )
    )
    res.rows.append(
        Row(
            "  edged tracking: newcomer scan, followed face painted out",
            [],
            e_newcomer,
            extra="every 5th frame while a face is followed",
        )
    )
    tr = pipe.tracker
    res.rows.append(
        Row(
            "whole frame, detect + classify, face in view",
            w_frame,
            e_frame,
            target=">= 4x",
            extra=f"{n} frames of {len(photos)} moving faces; edged tracks: "
            f"{tr.full_scans} full, {tr.new_face_scans} newcomer, {tr.region_scans} region "
            "scans; "
            f"face found in {w_found / n:.0%} / {e_found / n:.0%} of frames",
        )
    )
    mean_w, mean_e = float(np.mean(w_frame)), float(np.mean(e_frame))
    res.notes.append(
        f"whole frame with a face, mean: workshop {mean_w:.1f} ms, edged {mean_e:.1f} ms "
        f"({mean_w / mean_e:.1f}x); workshop face crops: median side {np.median(sides):.0f} px"
    )
    return samples


def time_photos(
    res: Results,
    items: Sequence[Item],
    faces: Faces,
    ws: Workshop,
    model: ExpressionModel,
    fitted: fitting.FittedModel,
    tmp: Path,
    n: int,
) -> None:
    """`edged detect` per 640x480 photo against the workshop's labelling (bench/photos.py)."""
    with_face = [it.path for it in items if faces.workshop[it.path]]
    chosen = with_face[:: max(1, len(with_face) // n)][:n]
    dataset = [it.path for it in items][:: max(1, len(items) // (4 * n))][: 4 * n]
    note(f"photos: {len(chosen)} 640x480 scenes, face agreement on {len(dataset)} dataset photos")
    wpath, epath = tmp / "photos-workshop.yml", tmp / "photos-edged.yml"
    ws.write(wpath)
    write_model(epath, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta)
    t = photo_bench.measure(chosen, dataset, ws, model, (wpath, epath), tmp / "photos")
    res.rows.append(
        Row(
            "edged detect, one 640x480 photo (decode, detect, classify)",
            t.workshop,
            t.edged,
            target=">= 3x",
            extra=f"{len(chosen)} photos x 2; photo detector: coarse find, then refine",
        )
    )
    res.rows.append(
        Row(
            "  the same with the full scan it replaced (before issue 14)",
            t.workshop,
            t.full_scan,
            extra="IMAGE_DETECTOR: padded, 128 wide, scale 1.05, 3 neighbours",
        )
    )
    res.rows.append(
        Row(
            f"edged detect as a process, {len(chosen)} photos (CPU s)",
            [t.process[0]],
            [t.process[1]],
            unit="s",
            extra="whole process: start-up, model load, every photo (as issue 14 measured)",
        )
    )
    res.notes.append("photo detector vs full scan: " + t.agreement)


def time_empty(res: Results, ws: Workshop, model: ExpressionModel, rooms: int, n: int) -> None:
    pipe = Pipeline(FaceDetector(DAEMON_DETECTOR), max_faces=5, track=TrackConfig())
    wt, et = [], []
    for k in range(rooms):
        for t, frame in enumerate(frames.empty(seed=100 + k, frames=n)):
            if (t + k) % 2:
                wt.append(cpu_ms(ws.process, frame)[0])
                et.append(cpu_ms(pipe.process, frame, model)[0])
            else:
                et.append(cpu_ms(pipe.process, frame, model)[0])
                wt.append(cpu_ms(ws.process, frame)[0])
    res.rows.append(Row("whole frame, nobody in view", wt, et, extra=f"{len(wt)} frames"))


def time_classify(
    res: Results,
    sizes: Sequence[int],
    wset: tuple[list[np.ndarray], list[int]],
    eset: tuple[list[np.ndarray], list[int], list[str]],
    samples: Sequence[FrameSample],
    reps: int,
) -> None:
    for size in sizes:
        note(f"classification with {size} training images: training both")
        wf, wl = grow_to(*wset, size)
        ef, el = grow_to(eset[0], eset[1], size)
        ws = Workshop()
        ws.train(wf, wl)
        # Jittered copies have no person: no groups for fitting's inner split.
        model = fitting.to_model(fit_edged(ef, el, None))
        wt, et = [], []
        crops = [s.gray[y : y + h, x : x + w] for s in samples for x, y, w, h in [s.ws_box]]
        for r in range(reps):
            # Block by block, alternating who goes first (see time_frames).
            for side in ("workshop", "edged") if r % 2 == 0 else ("edged", "workshop"):
                for s, crop in zip(samples, crops, strict=True):
                    if side == "workshop":
                        wt.append(cpu_ms(ws.predict_crop, crop)[0])
                    else:
                        et.append(cpu_ms(model.predict, s.gray, s.edged_box)[0])
        res.rows.append(
            Row(
                f"classify one face, {size:,} training images",
                wt,
                et,
                target=">= 20x, flat",
                extra=f"model holds {len(wf)} / {model.samples} histograms",
            )
        )
        del ws, model


RSS_PROBE = """
import sys, time, cv2
cv2.setNumThreads(1)
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
before = rss()
t = time.thread_time()
if sys.argv[2] == 'edged':
    from edged.vision.model_file import load_model
    load_model(sys.argv[1])
else:
    r = cv2.face.LBPHFaceRecognizer_create()
    r.read(sys.argv[1])
print(rss(), before, time.thread_time() - t)
"""


def probe_rss(path: Path, how: str) -> tuple[float, float]:
    """RSS (MB) of a fresh Python process after loading the file, and its baseline."""
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(path), how],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout.split()
    return float(out[0]), float(out[1])


def time_model_files(
    res: Results,
    wset: tuple[list[np.ndarray], list[int]],
    eset: tuple[list[np.ndarray], list[int], list[str]],
    tmp: Path,
    images: int,
    reps: int,
) -> None:
    note("model files: training and writing both")
    ws = Workshop()
    ws.train(*wset)
    wpath = tmp / "workshop" / "trainer.yml"
    wpath.parent.mkdir()
    ws.write(wpath)
    fitted = fit_edged(*eset)
    epath = tmp / "edged" / "trainer.yml"
    write_model(epath, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta)
    wsize, esize = wpath.stat().st_size, epath.stat().st_size
    res.rows.append(
        Row(
            f"trainer.yml size (MB), {images} training images",
            [wsize / 1e6],
            [esize / 1e6],
            target=">= 20x smaller",
            unit="MB",
            extra=f"{len(wset[0])} / {len(fitted.histograms)} histograms",
        )
    )
    wl, el, ec = [], [], []
    for i in range(reps):
        pair = [
            (wl, lambda: Workshop.read(wpath)),
            (el, lambda: load_model(epath)),
            (ec, lambda: Workshop.read(epath)),
        ]
        for bucket, fn in pair if i % 2 else pair[::-1]:
            bucket.append(cpu_ms(fn)[0])
    res.rows.append(Row("load trainer.yml (edged: load_model)", wl, el, target=">= 20x faster"))
    res.rows.append(
        Row(
            "load with cv2 LBPHFaceRecognizer.read()",
            wl,
            ec,
            extra="edged's file read by OpenCV's own reader, as users' tools do",
        )
    )
    wr, wb = probe_rss(wpath, "workshop")
    er, eb = probe_rss(epath, "edged")
    res.rows.append(
        Row(
            "process RSS after loading the model (MB)",
            [wr],
            [er],
            unit="MB",
            extra=f"fresh python + cv2 before loading: {wb:.0f} / {eb:.0f} MB",
        )
    )


def accuracy(res: Results, faces: Faces, folds: int) -> None:
    items = faces.items
    for name, (train, predict) in (
        ("workshop", workshop_pipeline(WORKSHOP_CLASSES, faces.workshop)),
        ("edged", _edged_pair(faces)),
    ):
        note(f"accuracy: {name}, {folds}-fold, people never on both sides")
        rep = cross_validate(
            items, train, predict, folds=folds, classes=list(WORKSHOP_CLASSES), name=name
        )
        res.accuracy.append(
            f"| {name} | {rep.balanced_accuracy:.1%} | {rep.accuracy:.1%} | "
            f"{rep.face_rate_test:.0%} | {rep.ece:.3f} |"
        )


def _edged_pair(faces: Faces) -> tuple:
    return edged_pipeline(faces=dict(faces.edged))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, OpenCV {cv2.__version__}"
    )


def run(args: argparse.Namespace) -> int:
    cv2.setNumThreads(1)
    root = args.dataset or (FULL if (FULL / "images").is_dir() else SAMPLE)
    limit = 120 if args.quick else args.limit
    items = dataset_items(root, limit)
    load0 = os.getloadavg()
    note(f"dataset {root}: {len(items)} labelled images; machine: {machine()}")
    started = time.monotonic()
    faces = extract(items)
    wset, eset = training_sets(faces)
    res = Results()
    with tempfile.TemporaryDirectory(prefix="edged-bench-") as tmp:
        time_model_files(res, wset, eset, Path(tmp), len(items), 3 if args.quick else 5)
        ws = Workshop()
        ws.train(*wset)
        fitted = fit_edged(*eset)
        model = fitting.to_model(fitted)
        time_photos(res, items, faces, ws, model, fitted, Path(tmp), args.photos)
    # Faces from people across the dataset, one photo each.
    seen: set[str] = set()
    photos = []
    for it in items:
        if person_of(it.path) not in seen and faces.workshop[it.path]:
            seen.add(person_of(it.path))
            photos.append(it.path)
    step = max(1, len(photos) // args.faces)
    photos = photos[::step][: args.faces]
    note(f"per-frame timing: {len(photos)} clips of {args.clip} frames")
    samples = time_frames(res, photos, ws, model, args.clip)
    time_empty(res, ws, model, 4, args.clip)
    sizes = [s for s in args.sizes if not args.quick or s <= 1000]
    time_classify(res, sizes, wset, eset, samples, 2 if args.quick else 6)
    res.rows += [Row(**r) for r in reload.rows(reload.measure(20.0 if args.quick else 150.0))]
    quick = (web.QUICK_WINDOW, web.QUICK_WARMUP)
    res.web = web.table(web.measure(*(quick if args.quick else (web.WINDOW, web.WARMUP))))
    gated = motion.measure(args.quick, only=args.motion_scenes or ())  # issue 14: the gate
    res.web += ["", *motion.table(gated)]
    if args.folds:
        accuracy(res, faces, args.folds)
    load1 = os.getloadavg()
    out = [
        f"Machine: {machine()}.",
        f"Dataset: {root} ({len(items)} labelled images, 5 classes). "
        f"Load average {load0[0]:.1f} at start, {load1[0]:.1f} at the end; "
        f"run took {time.monotonic() - started:.0f} s.",
        "",
        "Times are CPU ms of one thread (cv2.setNumThreads(1)), workshop and edged "
        "interleaved clip by clip (blocks of calls); speed-up is the ratio of medians.",
        "",
        res.table(),
    ]
    if res.accuracy:
        out += [
            "",
            f"Accuracy, {args.folds}-fold cross-validation on {len(items)} images, "
            "people never on both sides (no face found counts as wrong):",
            "",
            "| pipeline | balanced accuracy | accuracy | face found | calibration error (ECE) |",
            "|---|---|---|---|---|",
            *res.accuracy,
        ]
    out += ["", *[f"- {n}" for n in res.notes]]
    if res.web:
        out += ["", *res.web]
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        note(f"written to {args.out}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {r.what: {"workshop": r.workshop, "edged": r.edged} for r in res.rows}, indent=1
            )
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the workshop pipeline against edged on the same frames, "
        "models and training images; prints a Markdown table of medians, p95 and ratios.",
    )
    sub = p.add_subparsers(dest="cmd")
    p.add_argument(
        "--dataset",
        type=Path,
        help=f"workshop-layout dataset (default: {FULL} if present, else the committed sample)",
    )
    p.add_argument("--quick", action="store_true", help="120 images, sizes up to 1,000 only")
    p.add_argument("--limit", type=int, default=0, help="use at most this many images")
    p.add_argument("--faces", type=int, default=12, help="moving-face clips to time")
    p.add_argument("--clip", type=int, default=20, help="frames per clip (5 fps camera)")
    p.add_argument("--photos", type=int, default=40, help="640x480 photos for edged detect")
    p.add_argument(
        "--motion-scenes",
        nargs="+",
        metavar="SCENE",
        choices=[s.key for s in motion.SCENES],
        help="only these scenes in the motion-gate table (default: all)",
    )
    p.add_argument(
        "--sizes",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[100, 1000, 5000],
        help="training-set sizes for the classification rows (comma-separated)",
    )
    p.add_argument(
        "--folds", type=int, default=5, help="cross-validation folds for accuracy (0: skip)"
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "build" / "bench" / "results.md", help="also write here"
    )
    p.add_argument("--json", type=Path, help="raw timings as JSON")
    soak.register(sub)
    reload.register(sub)
    capture.register(sub)
    web.register(sub)
    motion.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd in ("soak", "capture", "reload", "web", "motion"):
        return args.func(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
