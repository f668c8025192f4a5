"""Issue 7's experiments, reproducible: ``python -m bench.accuracy_experiments``.

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
- ``cost``: model file size and predict time per face for the default model.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
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
from edged.vision.detector import IMAGE_DETECTOR, Box, DetectorConfig, FaceDetector, to_gray
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


DEFAULT = fitting.FitConfig()
# Candidates for the nested choice: only models within the size budget (a model file
# at least 20x smaller than the workshop's 72 MB, so at most ~4 region prototypes per
# class at 8x8 cells: one-row bands (8 per class) are out, see the ablation).
CANDIDATES = [
    Config(
        f"band {b}, margin {m}, radius {r}",
        replace(
            DEFAULT,
            band=b,
            preprocess=replace(DEFAULT.preprocess, margin=m),
            lbph=replace(DEFAULT.lbph, radius=r),
        ),
    )
    for b in (0, 2, 4)
    for m in (0.0, 0.1)
    for r in (1, 2)
]


class Cache:
    """Detected boxes, prepared faces and LBPH histograms per configuration, on disk."""

    def __init__(self, items: Sequence[Sample], folder: Path) -> None:
        self.items = list(items)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.index = {s.path: i for i, s in enumerate(self.items)}
        self._mem: dict[str, np.ndarray] = {}
        self.detect_ms: dict[DetectorConfig, float] = {}

    def _key(self, *parts: object) -> str:
        names = "\n".join(str(s.path) for s in self.items)
        # The code that makes faces is part of the key: a change to it invalidates the cache.
        code = inspect.getsource(FaceDetector) + inspect.getsource(Preprocessor)
        return hashlib.sha1(repr((names, code, cv2.__version__, *parts)).encode()).hexdigest()[:16]

    def _load(self, kind: str, parts: tuple, make) -> np.ndarray:
        key = f"{kind}-{self._key(*parts)}"
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

    def faces(self, det: DetectorConfig, pre: PreprocessConfig) -> np.ndarray:
        def make() -> np.ndarray:
            boxes = self.boxes(det)
            p = Preprocessor(pre)
            out = np.zeros((len(self.items), pre.size, pre.size), np.uint8)
            for i, s in enumerate(self.items):
                if boxes[i, 0] >= 0:
                    gray = to_gray(cv2.imread(str(s.path), cv2.IMREAD_COLOR))
                    out[i] = p(gray, Box(*(int(v) for v in boxes[i])))
            return out

        return self._load("faces", (det, pre), make)

    def hists(
        self, det: DetectorConfig, pre: PreprocessConfig, lbph: LBPHParams, mirror: bool
    ) -> np.ndarray:
        def make() -> np.ndarray:
            faces = self.faces(det, pre)
            if mirror:
                faces = np.ascontiguousarray(faces[:, :, ::-1])
            return fitting.lbph_histograms(list(faces), lbph)

        return self._load("hists", (det, pre, lbph, mirror), make)


def progress(label: str, i: int, n: int) -> None:
    if i == n or i % 100 == 0:
        print(f"  {label}: {i}/{n}", file=sys.stderr, flush=True)


def pipeline(cache: Cache, cfg: Config) -> tuple:
    """A (train, predict) pair over cached faces, with edged's real model code."""
    det, fc = cfg.detector, cfg.fit
    found = cache.boxes(det)[:, 0] >= 0
    faces = cache.faces(det, fc.preprocess)
    hists = cache.hists(det, fc.preprocess, fc.lbph, False)
    mirrored = cache.hists(det, fc.preprocess, fc.lbph, True) if fc.mirror else None
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
    d = replace(DEFAULT, lbph=LBPHParams(radius=1), preprocess=PreprocessConfig())
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
        Config("first, radius 2 (the shipped default)", DEFAULT),
        Config(
            "first, grid 6x6 (3 bands)", replace(d, lbph=LBPHParams(radius=1, grid_x=6, grid_y=6))
        ),
        Config("first, 48 px faces", replace(d, preprocess=replace(pre, size=48))),
        Config("first, 96 px faces", replace(d, preprocess=replace(pre, size=96))),
        Config(
            "first, radius 2 + margin 0.1",
            replace(DEFAULT, preprocess=replace(DEFAULT.preprocess, margin=0.1)),
        ),
    ]
    print(HEADER)
    for cfg in steps:
        t0 = time.monotonic()
        rep = run_cv(cache, cfg, items, folds)
        print(row(rep, f" {time.monotonic() - t0:.0f} s"), flush=True)


def section_nested(cache: Cache, items: Sequence[Sample], folds: int) -> EvalReport:
    print("\n## Nested CV: configuration chosen on training people only\n", flush=True)
    outcomes: list[Outcome] = []
    chosen: list[str] = []
    train_images = train_faces = 0
    for f, test_idx in enumerate(person_folds([s.person for s in items], folds, 0)):
        held = set(test_idx)
        train_items = [s for i, s in enumerate(items) if i not in held]
        scores = {}
        for cfg in CANDIDATES:
            scores[cfg.name] = run_cv(cache, cfg, train_items, 3, seed=1).balanced_accuracy
        best = max(CANDIDATES, key=lambda c: scores[c.name])
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
    rep = EvalReport(list(CLASSES), outcomes, folds, train_images, train_faces, "edged, nested CV")
    rep.notes.append(
        "chosen per outer fold: " + "; ".join(f"{k} x{v}" for k, v in Counter(chosen).most_common())
    )
    print()
    print(format_report(rep))
    # The same choice made on every person: what the shipped default should be.
    scores = {c.name: run_cv(cache, c, items, 3, seed=1).balanced_accuracy for c in CANDIDATES}
    best = max(scores, key=scores.__getitem__)
    print(
        "\nchoice on all people (3-fold CV): "
        + ", ".join(f"{k}: {v:.3f}" for k, v in scores.items())
        + f" -> {best}"
    )
    return rep


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
        "--only",
        default="detector,workshop,ablation,nested,cost",
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
