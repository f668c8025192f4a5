"""Issue 7's and 15's accuracy experiments: ``python -m bench.accuracy_experiments``.

Every figure goes through `edged.evaluate.cross_validate` (person-grouped folds, every
listed image counted, no face = wrong). Detected faces and LBPH histograms are cached
per configuration (``--cache``, default /tmp/edged-accuracy-cache) so the model side
iterates in seconds; predictions go through the real `ExpressionModel` (OpenCV's
``predict_collect``) of a model written to and read back from a file.

Sections (``--only``, comma-separated; all by default):

- ``detector``: share of images with a face, and ms per image, per detector setting;
- ``workshop``: the workshop pipeline (bench/workshop.py) through the protocol;
- ``ablation``: one idea at a time, from "every face, nearest histogram" to the default;
- ``nested``: the honest figure: in each outer fold the configuration is chosen among
  `CANDIDATES` by an inner 3-fold CV on that fold's training people only, then scored
  on the outer fold; the report shows which candidate each fold chose;
- ``cost``: model file size and predict time per face for the default model;
- ``faces`` (issue 15, "better faces, same file"): each idea alone against the format-1
  model it started from, and the chosen combination: balanced accuracy, recall per
  class, the lowest class, ECE, accuracy by confidence third, predict ms per face and
  model file size (a model trained on every image); ``faces-nested``: the nested-CV
  estimate of the chosen procedure (`FACE_CANDIDATES` compared on training people only).

The issue-7 sections (``ablation``, ``nested``) keep their own models (no readouts), so
their tables still reproduce the README's history.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from edged.training import fitting
from edged.training.datasets import Sample, load_dataset, person_folds
from edged.training.evaluate import (
    EvalReport,
    Outcome,
    Trained,
    cross_validate,
    format_report,
)
from edged.vision import histograms
from edged.vision.detector import (
    IMAGE_DETECTOR,
    Box,
    DetectorConfig,
    FaceDetector,
    cascade_path,
    to_gray,
)
from edged.vision.model import LBPHParams, ModelMeta
from edged.vision.model_file import write_model
from edged.vision.preprocess import PreprocessConfig, Preprocessor

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT.parent / "shared" / "datasets" / "facial_expressions"
CLASSES = ("anger", "happy", "sad", "neutral", "surprise")
WORKSHOP_DETECTOR = DetectorConfig(scale_factor=1.3, min_neighbors=5, min_size=0.0)
DETECTORS = {
    "workshop (1.3, 5)": WORKSHOP_DETECTOR,
    "1.1, 4, min 20%, pad 0.3": DetectorConfig(1.1, 4, 0.2, pad=0.3),
    "1.1, 2, min 25%, pad 0.3, 160 px": DetectorConfig(1.1, 2, 0.25, max_width=160, pad=0.3),
    "default: 1.05, 3, min 20%, pad 0.5, 128 px": IMAGE_DETECTOR,
}


@dataclass(frozen=True)
class Config:
    """One way to build a model: detector + preprocessing + `FitConfig`, or "nearest"
    (every training face kept, label of the nearest histogram: the first cut)."""

    name: str
    fit: fitting.FitConfig
    detector: DetectorConfig = IMAGE_DETECTOR
    nearest: bool = False
    # Bench-only variants (ideas tried and not kept): region masks (`MASKS`), and faces
    # aligned by the eyes (`EyeAligner`).
    masks: str = ""
    align: bool = False


DEFAULT = fitting.FitConfig()
# The model before issue 15 (format 1): region prototypes and the scorer, no readouts,
# scorer features from 3 inner folds.
FORMAT1 = replace(DEFAULT, readout=False, inner_folds=3)
# Candidates for the nested choice: only models within the size budget (a model file
# at least 20x smaller than the workshop's 72 MB, so at most ~4 region prototypes per
# class at 8x8 cells: one-row bands (8 per class) are out, see the ablation).
CANDIDATES = [
    Config(
        f"band {b}, margin {m}, radius {r}",
        replace(
            FORMAT1,
            band=b,
            preprocess=replace(DEFAULT.preprocess, margin=m),
            lbph=replace(DEFAULT.lbph, radius=r),
        ),
    )
    for b in (0, 2, 4)
    for m in (0.0, 0.1)
    for r in (1, 2)
]


# Where the Haar box puts the eyes (medians over the dataset's faces: 0.31 / 0.67 of the
# width, 0.39 down), made symmetric so a mirrored face has its eyes there too.
EYE_TARGETS = ((0.3125, 0.39), (0.6875, 0.39))


class EyeAligner:
    """Issue 15's eye alignment, tried and not kept (README, Accuracy): OpenCV's eye
    cascade in the upper face (scaled to ``width`` px), the left-half and right-half eyes
    nearest their usual places; the face rotated and scaled so they sit level at
    `EYE_TARGETS`; the plain crop when no such pair is found. Then CLAHE, as edged."""

    def __init__(self, pre: PreprocessConfig, width: int = 96) -> None:
        self.cascade = cv2.CascadeClassifier(str(cascade_path("haarcascade_eye.xml")))
        self.plain = Preprocessor(pre)
        self.size = pre.size
        self.width = width
        self.clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
        self.found = self.tried = 0

    def eyes(self, gray: np.ndarray, box: Box) -> np.ndarray | None:
        """The two eye centres (left, right) in frame pixels, or None."""
        w = self.width
        s = w / box.w
        crop = gray[box.y : box.y + box.h, box.x : box.x + box.w]
        small = cv2.resize(crop, (w, max(1, round(box.h * s))), interpolation=cv2.INTER_AREA)
        top = int(0.15 * w)
        hits = self.cascade.detectMultiScale(
            small[top : int(0.6 * w)],
            1.1,
            3,
            minSize=(w * 15 // 100,) * 2,
            maxSize=(w * 2 // 5,) * 2,
        )
        centres = [np.array([x + bw / 2, top + y + bh / 2]) / w for x, y, bw, bh in hits]
        want = np.array(EYE_TARGETS)
        pairs = [
            (float(np.hypot(*(a - want[0])) + np.hypot(*(b - want[1]))), a, b)
            for a in centres
            if a[0] < 0.5
            for b in centres
            if b[0] >= 0.5 and abs(b[1] - a[1]) < 0.15 and 0.2 < b[0] - a[0] < 0.6
        ]
        if not pairs:
            return None
        _, a, b = min(pairs, key=lambda p: p[0])
        return np.array([a, b]) * box.w + [box.x, box.y]

    def __call__(self, gray: np.ndarray, box: Box) -> np.ndarray:
        self.tried += 1
        eyes = self.eyes(gray, box)
        if eyes is None:
            return self.plain(gray, box).copy()
        self.found += 1
        n = self.size
        (lx, ly), (rx, ry) = eyes
        target = np.array(EYE_TARGETS) * n
        scale = float(np.hypot(*(target[1] - target[0])) / np.hypot(rx - lx, ry - ly))
        # Shrink by a whole factor first (area average), as the Preprocessor does.
        k = max(1, int(1 / scale))
        src = cv2.resize(
            gray, (gray.shape[1] // k, gray.shape[0] // k), interpolation=cv2.INTER_AREA
        )
        eyes = eyes / k
        scale *= k
        angle = np.arctan2(ry - ly, rx - lx)
        c, s = scale * np.cos(-angle), scale * np.sin(-angle)
        rot = np.array([[c, -s], [s, c]])
        shift = target.mean(0) - rot @ eyes.mean(0)
        m = np.hstack([rot, shift[:, None]])
        face = cv2.warpAffine(
            src, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return self.clahe.apply(face)


class Cache:
    """Detected boxes, prepared faces and LBPH histograms per configuration, on disk."""

    def __init__(self, items: Sequence[Sample], folder: Path) -> None:
        self.items = list(items)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.index = {s.path: i for i, s in enumerate(self.items)}
        self._mem: dict[str, np.ndarray] = {}
        self.detect_ms: dict[DetectorConfig, float] = {}

    def _key(self, kind: str, *parts: object) -> str:
        names = "\n".join(str(s.path) for s in self.items)
        # The code that makes them is part of the key: a change to it invalidates the cache.
        code = inspect.getsource(FaceDetector)
        if kind != "boxes":
            code += inspect.getsource(Preprocessor) + inspect.getsource(EyeAligner)
        return hashlib.sha1(repr((names, code, cv2.__version__, *parts)).encode()).hexdigest()[:16]

    def _load(self, kind: str, parts: tuple, make) -> np.ndarray:
        key = f"{kind}-{self._key(kind, *parts)}"
        if key in self._mem:
            return self._mem[key]
        path = self.folder / f"{key}.npy"
        if path.exists():
            arr = np.load(path)
        else:
            arr = make()
            np.save(path, arr)
        self._mem[key] = arr
        return arr

    def boxes(self, det: DetectorConfig) -> np.ndarray:
        def make() -> np.ndarray:
            d = FaceDetector(det)
            out = np.full((len(self.items), 4), -1, np.int32)
            t0 = time.process_time()
            for i, s in enumerate(self.items):
                image = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
                found = d.detect(to_gray(image)) if image is not None else []
                if found:
                    out[i] = found[0].as_list()
                progress("detecting", i + 1, len(self.items))
            self.detect_ms[det] = (time.process_time() - t0) * 1000 / len(self.items)
            return out

        return self._load("boxes", (det,), make)

    def faces(self, det: DetectorConfig, pre: PreprocessConfig, align: bool = False) -> np.ndarray:
        def make() -> np.ndarray:
            boxes = self.boxes(det)
            p = EyeAligner(pre) if align else Preprocessor(pre)
            out = np.zeros((len(self.items), pre.size, pre.size), np.uint8)
            for i, s in enumerate(self.items):
                if boxes[i, 0] >= 0:
                    gray = to_gray(cv2.imread(str(s.path), cv2.IMREAD_COLOR))
                    out[i] = p(gray, Box(*(int(v) for v in boxes[i])))
            if isinstance(p, EyeAligner):
                print(f"  eyes found in {p.found} of {p.tried} faces", file=sys.stderr)
            return out

        # No key change for plain faces: caches made before alignment stay valid.
        return self._load("faces", (det, pre, *(("aligned",) if align else ())), make)

    def hists(
        self,
        det: DetectorConfig,
        pre: PreprocessConfig,
        lbph: LBPHParams,
        mirror: bool,
        align: bool = False,
    ) -> np.ndarray:
        def make() -> np.ndarray:
            faces = self.faces(det, pre, align)
            if mirror:
                faces = np.ascontiguousarray(faces[:, :, ::-1])
            return histograms.lbph_histograms(list(faces), lbph)

        extra = ("aligned",) if align else ()
        return self._load("hists", (det, pre, lbph, mirror, *extra), make)


def _columns(masks: np.ndarray, params: LBPHParams, columns: int = 2) -> np.ndarray:
    """Each band's mask cut into ``columns`` side-by-side regions (2 x 4 cells each)."""
    per_cell = params.histogram_size // (params.grid_x * params.grid_y)
    out = []
    for m in masks:
        cells = m[::per_cell].reshape(params.grid_y, params.grid_x)
        step = params.grid_x // columns
        for left in range(0, params.grid_x, step):
            part = np.zeros_like(cells)
            part[:, left : left + step] = cells[:, left : left + step]
            out.append(np.repeat(part.ravel(), per_cell))
    return np.array(out)


def _uniform(masks: np.ndarray, params: LBPHParams) -> np.ndarray:
    """The masks restricted to uniform LBP codes (at most 2 bit changes around the circle):
    prototypes zero on the other codes, whose share then adds the same to every class."""
    n = params.neighbors
    codes = np.arange(1 << n)
    turns = codes ^ (((codes << 1) | (codes >> (n - 1))) & ((1 << n) - 1))
    uniform = np.array([bin(int(t)).count("1") <= 2 for t in turns])
    cells = params.grid_x * params.grid_y
    return masks & np.tile(uniform, cells)[None, :]


# Region masks edged does not ship, tried in the `faces` section (bench only).
MASKS: dict[str, Callable[[np.ndarray, LBPHParams], np.ndarray]] = {
    "columns": _columns,
    "uniform": _uniform,
}


@contextlib.contextmanager
def variant_masks(kind: str) -> Iterator[None]:
    """`fitting.region_masks` replaced by a `MASKS` variant while a model is fitted."""
    if not kind:
        yield
        return
    original = fitting.region_masks
    fitting.region_masks = lambda params, band: MASKS[kind](original(params, band), params)
    try:
        yield
    finally:
        fitting.region_masks = original


def progress(label: str, i: int, n: int) -> None:
    if i == n or i % 100 == 0:
        print(f"  {label}: {i}/{n}", file=sys.stderr, flush=True)


def pipeline(cache: Cache, cfg: Config) -> tuple:
    """A (train, predict) pair over cached faces, with edged's real model code."""
    det, fc = cfg.detector, cfg.fit
    found = cache.boxes(det)[:, 0] >= 0
    faces = cache.faces(det, fc.preprocess, cfg.align)
    hists = cache.hists(det, fc.preprocess, fc.lbph, False, cfg.align)
    mirrored = cache.hists(det, fc.preprocess, fc.lbph, True, cfg.align) if fc.mirror else None
    ids = {c: i for i, c in enumerate(CLASSES)}

    def train(items: Sequence[Sample]) -> Trained:
        idx = np.array([cache.index[s.path] for s in items])
        idx = idx[found[idx]]
        labels = [ids[cache.items[i].label] for i in idx]
        if cfg.nearest:
            fitted = fitting.FittedModel(
                list(hists[idx]),
                labels,
                dict(enumerate(CLASSES)),
                fc.lbph,
                ModelMeta(preprocess=fc.preprocess, trained_images=len(idx)),
            )
        else:
            with variant_masks(cfg.masks):
                fitted = fitting.fit_histograms(
                    hists[idx],
                    None if mirrored is None else mirrored[idx],
                    labels,
                    dict(enumerate(CLASSES)),
                    fc,
                    groups=[cache.items[i].person for i in idx],
                )
        return Trained(fitting.to_model(fitted), len(idx))

    def predict(model, path: Path) -> tuple[str | None, float]:
        i = cache.index[path]
        if not found[i]:
            return None, 0.0
        p = model.predict_face(faces[i])
        return p.expression, p.confidence

    return train, predict


def run_cv(cache: Cache, cfg: Config, items: Sequence[Sample], folds: int, seed: int = 0):
    train, predict = pipeline(cache, cfg)
    return cross_validate(
        items, train, predict, folds=folds, seed=seed, classes=CLASSES, name=cfg.name
    )


def row(rep: EvalReport, extra: str = "") -> str:
    rec = rep.recalls()
    bands = rep.confidence_bands(3)
    return (
        f"| {rep.name} | {rep.balanced_accuracy:.1%} | {rep.face_rate_train:.1%} / "
        f"{rep.face_rate_test:.1%} | "
        + " / ".join(f"{100 * rec[c]:.0f}" for c in CLASSES)
        + f" | {rep.ece:.3f} | "
        + " / ".join(f"{100 * a:.0f}" for _, _, a, _ in bands)
        + f" |{extra}"
    )


HEADER = (
    "| configuration | balanced acc. | face found (train / test) | recall "
    + " / ".join(CLASSES)
    + " % | ECE | acc. by confidence third % |\n|---|---|---|---|---|---|"
)


def section_detector(cache: Cache) -> None:
    print("\n## Detector: images with a face found (every listed image)\n")
    print("| detector | face found | CPU ms / image (first run only) |\n|---|---|---|")
    for name, det in DETECTORS.items():
        rate = float((cache.boxes(det)[:, 0] >= 0).mean())
        ms = cache.detect_ms.get(det)
        print(f"| {name} | {rate:.1%} | {f'{ms:.1f}' if ms else 'cached'} |")


def section_workshop(items: Sequence[Sample], folds: int) -> None:
    sys.path.insert(0, str(ROOT))  # bench/ is no package when this file is run as a script
    from bench.workshop import workshop_pipeline  # noqa: PLC0415 (needs the path above)

    print("\n## The workshop pipeline through the same protocol\n", flush=True)
    train, predict = workshop_pipeline(CLASSES)
    rep = cross_validate(
        items,
        train,
        predict,
        folds=folds,
        classes=CLASSES,
        name="workshop",
        progress=lambda d, n: progress("workshop folds", d, n),
    )
    print(HEADER)
    print(row(rep))


def section_ablation(cache: Cache, items: Sequence[Sample], folds: int) -> None:
    print("\n## Ablation: one idea at a time (outer folds; exploratory)\n", flush=True)
    # "first": the region-prototype model as first built (radius 1, no margin); the
    # variations are around it, the last line is the shipped default.
    d = replace(FORMAT1, lbph=LBPHParams(radius=1), preprocess=PreprocessConfig())
    raw = PreprocessConfig(64, 0.0, "none")
    pre = d.preprocess
    steps = [
        Config(
            "every face, nearest histogram, raw 64 px", replace(d, preprocess=raw), nearest=True
        ),
        Config("every face, nearest histogram, CLAHE", d, nearest=True),
        Config("class means, no mirror, linear scorer", replace(d, band=0, mirror=False)),
        Config("class means + mirror, linear scorer", replace(d, band=0)),
        Config("first: 4 band prototypes per class + mirror", d),
        Config("first without mirror", replace(d, mirror=False)),
        Config("first, 8 one-row bands (40 histograms)", replace(d, band=1)),
        Config("first, margin 0.1", replace(d, preprocess=replace(pre, margin=0.1))),
        Config("first, equalize hist", replace(d, preprocess=replace(pre, equalize="hist"))),
        Config("first, radius 2 (the shipped default)", FORMAT1),
        Config(
            "first, grid 6x6 (3 bands)", replace(d, lbph=LBPHParams(radius=1, grid_x=6, grid_y=6))
        ),
        Config("first, 48 px faces", replace(d, preprocess=replace(pre, size=48))),
        Config("first, 96 px faces", replace(d, preprocess=replace(pre, size=96))),
        Config(
            "first, radius 2 + margin 0.1",
            replace(FORMAT1, preprocess=replace(FORMAT1.preprocess, margin=0.1)),
        ),
    ]
    print(HEADER)
    for cfg in steps:
        t0 = time.monotonic()
        rep = run_cv(cache, cfg, items, folds)
        print(row(rep, f" {time.monotonic() - t0:.0f} s"), flush=True)


def section_nested(
    cache: Cache,
    items: Sequence[Sample],
    folds: int,
    candidates: Sequence[Config] = CANDIDATES,
    name: str = "edged, nested CV",
) -> EvalReport:
    print(f"\n## Nested CV ({name}): configuration chosen on training people only\n", flush=True)
    outcomes: list[Outcome] = []
    chosen: list[str] = []
    train_images = train_faces = 0
    for f, test_idx in enumerate(person_folds([s.person for s in items], folds, 0)):
        held = set(test_idx)
        train_items = [s for i, s in enumerate(items) if i not in held]
        scores = {}
        for cfg in candidates:
            scores[cfg.name] = run_cv(cache, cfg, train_items, 3, seed=1).balanced_accuracy
        best = max(candidates, key=lambda c: scores[c.name])
        chosen.append(best.name)
        print(
            f"  fold {f + 1}: inner balanced accuracy "
            + ", ".join(f"{k}: {v:.3f}" for k, v in scores.items())
            + f" -> {best.name}",
            flush=True,
        )
        train, predict = pipeline(cache, best)
        trained = train(train_items)
        train_images += len(train_items)
        train_faces += trained.faces_found
        for i in test_idx:
            label, conf = predict(trained.state, items[i].path)
            outcomes.append(Outcome(items[i].path, items[i].label, label, conf, f))
    rep = EvalReport(list(CLASSES), outcomes, folds, train_images, train_faces, name)
    rep.notes.append(
        "chosen per outer fold: " + "; ".join(f"{k} x{v}" for k, v in Counter(chosen).most_common())
    )
    print()
    print(format_report(rep))
    # The same choice made on every person: what the shipped default should be.
    scores = {c.name: run_cv(cache, c, items, 3, seed=1).balanced_accuracy for c in candidates}
    best = max(scores, key=scores.__getitem__)
    print(
        "\nchoice on all people (3-fold CV): "
        + ", ".join(f"{k}: {v:.3f}" for k, v in scores.items())
        + f" -> {best}"
    )
    return rep


FACES = [
    Config("format 1: region prototypes + scorer (before issue 15)", FORMAT1),
    Config("format 1, scorer fitted on 10 inner folds", replace(FORMAT1, inner_folds=10)),
    Config("+ readout histograms, 3 inner folds", replace(DEFAULT, inner_folds=3)),
    Config("+ readout histograms, 10 inner folds (the default)", DEFAULT),
    Config("format 1, regions of 2x4 cells (40 histograms)", FORMAT1, masks="columns"),
    Config("format 1, uniform-pattern prototypes", FORMAT1, masks="uniform"),
    Config("format 1, faces aligned by the eyes", FORMAT1, align=True),
    Config("default, faces aligned by the eyes", DEFAULT, align=True),
    Config("default, LBP radius 1", replace(DEFAULT, lbph=LBPHParams(radius=1))),
    Config("default, 96 px faces", replace(DEFAULT, preprocess=PreprocessConfig(size=96))),
]
# The nested choice for the procedure issue 15 ships: readouts or not, LBP radius 1 or 2.
FACE_CANDIDATES = [
    Config(f"{'readouts' if ro else 'format 1'}, radius {r}", replace(c, lbph=LBPHParams(radius=r)))
    for ro, c in ((False, FORMAT1), (True, DEFAULT))
    for r in (1, 2)
]


def _timed(fn: Callable[[], object], reps: int = 3) -> float:
    """CPU ms of one call of ``fn`` (one OpenCV thread), best of ``reps`` rounds."""
    cv2.setNumThreads(1)
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best * 1000


def model_cost(cache: Cache, cfg: Config, items: Sequence[Sample]) -> tuple[float, float, float]:
    """A model trained on every image: (ms to classify a prepared face, ms per face from
    the frame (crop, resize, CLAHE and classify: the daemon's per-face cost), file MB)."""
    train, _ = pipeline(cache, cfg)
    model = train(items).state
    found = np.flatnonzero(cache.boxes(cfg.detector)[:, 0] >= 0)
    faces = cache.faces(cfg.detector, cfg.fit.preprocess, cfg.align)[found[:300]]
    prepare = EyeAligner(cfg.fit.preprocess) if cfg.align else model.preprocessor
    frames = [
        (
            to_gray(cv2.imread(str(items[i].path))),
            Box(*(int(v) for v in cache.boxes(cfg.detector)[i])),
        )
        for i in found[:100]
    ]
    face_ms = _timed(lambda: [model.predict_face(f) for f in faces]) / len(faces)
    frame_ms = _timed(lambda: [model.predict_face(prepare(g, b)) for g, b in frames]) / len(frames)
    hists = model.recognizer.getHistograms()
    labels = [int(v) for v in np.asarray(model.recognizer.getLabels()).ravel()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trainer.yml"
        write_model(path, hists, labels, model.classes, cfg.fit.lbph, model.meta)
        size = path.stat().st_size / 1e6
    return face_ms, frame_ms, size


FACES_HEADER = (
    "| configuration | balanced acc. | recall "
    + " / ".join(CLASSES)
    + " % | lowest class | ECE | acc. by confidence third % | predict ms / face "
    "(prepared / from the frame) | model file |\n|---|---|---|---|---|---|---|---|"
)


def faces_row(rep: EvalReport, cost: tuple[float, float, float], seeds: list[float]) -> str:
    rec = rep.recalls()
    low = min(CLASSES, key=lambda c: rec[c])
    bands = rep.confidence_bands(3)
    mean = f" (seeds: {', '.join(f'{b:.1%}' for b in seeds)})" if len(seeds) > 1 else ""
    return (
        f"| {rep.name} | {rep.balanced_accuracy:.1%}{mean} | "
        + " / ".join(f"{100 * rec[c]:.0f}" for c in CLASSES)
        + f" | {low} {100 * rec[low]:.0f}% | {rep.ece:.3f} | "
        + " / ".join(f"{100 * a:.0f}" for _, _, a, _ in bands)
        + f" | {cost[0]:.2f} / {cost[1]:.2f} | {cost[2]:.1f} MB |"
    )


def section_faces(cache: Cache, items: Sequence[Sample], folds: int, seeds: Sequence[int]) -> None:
    print("\n## Better faces, same file: one idea at a time (outer folds)\n", flush=True)
    print(FACES_HEADER)
    for cfg in FACES:
        t0 = time.monotonic()
        reps = [run_cv(cache, cfg, items, folds, seed=s) for s in seeds]
        cost = model_cost(cache, cfg, items)
        bal = [r.balanced_accuracy for r in reps]
        print(faces_row(reps[0], cost, bal) + f" {time.monotonic() - t0:.0f} s", flush=True)


def section_cost(cache: Cache, items: Sequence[Sample]) -> None:
    print("\n## Model size and predict time per face (default config, all images)\n")
    d = DEFAULT
    train, _ = pipeline(cache, Config("default", d))
    model = train(items).state
    faces = cache.faces(IMAGE_DETECTOR, d.preprocess)
    found = cache.boxes(IMAGE_DETECTOR)[:, 0] >= 0
    sample = faces[found][:300]
    cv2.setNumThreads(1)
    for f in sample[:20]:
        model.predict_face(f)
    t0 = time.process_time()
    reps = 3
    for _ in range(reps):
        for f in sample:
            model.predict_face(f)
    per_face = (time.process_time() - t0) * 1000 / (reps * len(sample))
    every = fitting.FittedModel(
        list(cache.hists(IMAGE_DETECTOR, d.preprocess, d.lbph, False)[found]),
        [CLASSES.index(s.label) for s, ok in zip(items, found, strict=True) if ok],
        dict(enumerate(CLASSES)),
        d.lbph,
        ModelMeta(preprocess=d.preprocess, trained_images=1),
    )
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = Path(tmp) / "ours.yml", Path(tmp) / "every.yml"
        write_model(
            ours,
            list(model.recognizer.getHistograms()),
            [int(v) for v in np.asarray(model.recognizer.getLabels()).ravel()],
            model.classes,
            d.lbph,
            model.meta,
        )
        plain = d.lbph.create()
        plain.train(list(faces[found]), np.array(every.labels, np.int32))
        plain.write(str(theirs))  # the workshop's way: every face, text floats
        print("| | value |\n|---|---|")
        print(f"| histograms in the model | {model.samples} |")
        print(f"| model file | {ours.stat().st_size / 1e6:.2f} MB |")
        print(
            f"| every-face text model of the same faces ({len(every.labels)}) | "
            f"{theirs.stat().st_size / 1e6:.1f} MB |"
        )
        print(
            f"| predict time per face (CPU, 1 thread, {d.preprocess.size} px) | {per_face:.2f} ms |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", type=Path, default=FULL, help="workshop-layout dataset")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "edged-accuracy-cache",
        help="where detected faces are cached",
    )
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument(
        "--seeds",
        default="0",
        help="outer-fold seeds for the faces section, comma-separated (the table shows the "
        "first seed's figures and every seed's balanced accuracy)",
    )
    ap.add_argument(
        "--only",
        default="detector,workshop,ablation,nested,cost,faces,faces-nested",
        help="comma-separated sections (default: all)",
    )
    args = ap.parse_args(argv)
    ds = load_dataset(args.dataset, CLASSES)
    items = ds.samples
    print(
        f"# {len(items)} images, {len({s.person for s in items})} people, "
        f"{args.folds}-fold person-grouped CV",
        flush=True,
    )
    cache = Cache(items, args.cache)
    wanted = set(args.only.split(","))
    if "detector" in wanted:
        section_detector(cache)
    if "workshop" in wanted:
        section_workshop(items, args.folds)
    if "ablation" in wanted:
        section_ablation(cache, items, args.folds)
    if "nested" in wanted:
        section_nested(cache, items, args.folds)
    if "cost" in wanted:
        section_cost(cache, items)
    if "faces" in wanted:
        section_faces(cache, items, args.folds, [int(v) for v in args.seeds.split(",")])
    if "faces-nested" in wanted:
        section_nested(cache, items, args.folds, FACE_CANDIDATES, "edged with readouts, nested CV")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
