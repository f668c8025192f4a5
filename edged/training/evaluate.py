"""The evaluation protocol: person-grouped k-fold cross-validation of any face pipeline.

The protocol is separate from the pipeline. `cross_validate` takes labelled images
(path, class, person) and two callables:

- ``train(items) -> Trained``: build a predictor from the training items only,
  reporting how many of them gave a usable face;
- ``predict(state, path) -> (class | None, confidence)``: classify one image; None
  when no face is found, which counts as a wrong answer.

so the workshop pipeline (bench/workshop.py) and edged's own go through the very same
folds and arithmetic. `edged_pipeline` is the ready pair for edged's pipeline.

Folds keep each *group* on one side: an item's ``group``, or its person when it has none
(a group joins the people of near-duplicate photos: `edged.training.datasets`). Items
given as ``train_only`` (photos only another dataset has) join the training side of
every fold whose test side has none of their group, and are never tested.

What the numbers mean:

- balanced accuracy: the mean over classes of per-class recall, over *every* listed
  image (no face found = wrong). Chance is 1 / number of classes.
- ECE (expected calibration error): answered images are put in 10 equal-width bins by
  their confidence; ECE is the bin-size-weighted mean of |accuracy - mean confidence|.
  0 means "confidence 0.7" is right 70% of the time. Images with no face are left out
  of ECE (they carry no confidence), which is the stricter choice.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edged.images import DEFAULT_MAX_PIXELS
from edged.training import fitting
from edged.training.datasets import person_folds
from edged.vision.detector import IMAGE_DETECTOR, DetectorConfig, Gray
from edged.vision.model import ExpressionModel
from edged.vision.photo import PhotoDetector
from edged.vision.preprocess import Preprocessor

log = logging.getLogger("edged.evaluate")

ECE_BINS = 10


class Labelled(Protocol):
    """A labelled image: what `cross_validate` needs from an item."""

    @property
    def path(self) -> Path: ...
    @property
    def label(self) -> str: ...
    @property
    def person(self) -> str: ...
    @property
    def group(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Item:
    """A labelled image; any object with these attributes works as well. ``group``:
    who it must never be split from ("" = its person alone)."""

    path: Path
    label: str
    person: str
    group: str = ""


def group_of(item: Labelled) -> str:
    """The group an item's fold is chosen by: its ``group``, else its person."""
    return item.group or item.person


@dataclass(frozen=True)
class Trained:
    """What a ``train`` callable returns: its predictor state and how many faces it used."""

    state: Any
    faces_found: int


TrainFn = Callable[[Sequence[Labelled]], Trained]
PredictFn = Callable[[Any, Path], tuple[str | None, float]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One held-out image's answer."""

    path: Path
    truth: str
    predicted: str | None
    confidence: float
    fold: int

    @property
    def correct(self) -> bool:
        return self.predicted == self.truth


@dataclass
class EvalReport:
    """Every held-out answer of a cross-validation, and the figures derived from them."""

    classes: list[str]
    outcomes: list[Outcome]
    folds: int
    train_images: int = 0
    train_faces: int = 0
    name: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def face_rate_test(self) -> float:
        n = len(self.outcomes)
        return sum(o.predicted is not None for o in self.outcomes) / n if n else 0.0

    @property
    def face_rate_train(self) -> float:
        return self.train_faces / self.train_images if self.train_images else 0.0

    def confusion(self) -> npt.NDArray[np.int64]:
        """Rows: true class; columns: predicted class, then a last column for "no face"."""
        index = {c: i for i, c in enumerate(self.classes)}
        m = np.zeros((len(self.classes), len(self.classes) + 1), np.int64)
        for o in self.outcomes:
            col = index.get(o.predicted, len(self.classes)) if o.predicted is not None else -1
            m[index[o.truth], col] += 1
        return m

    def recalls(self) -> dict[str, float]:
        return recall_per_class(
            [o.truth for o in self.outcomes], [o.predicted for o in self.outcomes], self.classes
        )

    def fold_recalls(self) -> dict[str, list[float]]:
        """Each class's recall in each fold (NaN in a fold without that class)."""
        folds = sorted({o.fold for o in self.outcomes})
        per_fold = [
            recall_per_class(
                [o.truth for o in self.outcomes if o.fold == f],
                [o.predicted for o in self.outcomes if o.fold == f],
                self.classes,
            )
            for f in folds
        ]
        return {c: [r[c] for r in per_fold] for c in self.classes}

    def recall_spread(self) -> dict[str, tuple[float, float]]:
        """Each class's lowest and highest recall over the folds that have it: a class
        that works for some people only shows a wide spread."""
        out = {}
        for c, values in self.fold_recalls().items():
            have = [v for v in values if not math.isnan(v)]
            out[c] = (min(have), max(have)) if have else (math.nan, math.nan)
        return out

    def subset(self, paths: Iterable[Path], name: str) -> EvalReport:
        """The same answers restricted to ``paths`` (e.g. one source dataset's photos)."""
        keep = set(paths)
        return EvalReport(
            self.classes,
            [o for o in self.outcomes if o.path in keep],
            self.folds,
            self.train_images,
            self.train_faces,
            name,
        )

    @property
    def balanced_accuracy(self) -> float:
        return balanced_accuracy(
            [o.truth for o in self.outcomes], [o.predicted for o in self.outcomes], self.classes
        )

    @property
    def accuracy(self) -> float:
        n = len(self.outcomes)
        return sum(o.correct for o in self.outcomes) / n if n else 0.0

    def answered(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(confidence, correct) of the images where a face was found."""
        got = [o for o in self.outcomes if o.predicted is not None]
        return (
            np.array([o.confidence for o in got], np.float64),
            np.array([o.correct for o in got], np.float64),
        )

    @property
    def ece(self) -> float:
        conf, ok = self.answered()
        return expected_calibration_error(conf, ok)

    def confidence_bands(self, bands: int = 3) -> list[tuple[float, float, float, int]]:
        """Answered images split into equal-count bands by confidence, lowest first:
        (lowest confidence, highest confidence, accuracy, count) per band."""
        conf, ok = self.answered()
        if not len(conf):
            return []
        order = np.argsort(conf, kind="stable")
        out = []
        for part in np.array_split(order, bands):
            if len(part):
                c = conf[part]
                out.append((float(c.min()), float(c.max()), float(ok[part].mean()), len(part)))
        return out


def recall_per_class(
    truth: Sequence[str], predicted: Sequence[str | None], classes: Iterable[str]
) -> dict[str, float]:
    """Share of each class's images answered with that class (None = no face = wrong)."""
    total: Counter[str] = Counter(truth)
    hit: Counter[str] = Counter(t for t, p in zip(truth, predicted, strict=True) if t == p)
    return {c: (hit[c] / total[c] if total[c] else math.nan) for c in classes}


def balanced_accuracy(
    truth: Sequence[str], predicted: Sequence[str | None], classes: Iterable[str]
) -> float:
    """Mean per-class recall over the classes that have images."""
    r = [v for v in recall_per_class(truth, predicted, classes).values() if not math.isnan(v)]
    return float(sum(r) / len(r)) if r else 0.0


def expected_calibration_error(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, bins: int = ECE_BINS
) -> float:
    """Bin-size-weighted mean |accuracy - mean confidence| over equal-width bins of [0, 1]."""
    conf = np.asarray(confidence, np.float64)
    ok = np.asarray(correct, np.float64)
    if not len(conf):
        return 0.0
    # Bin b holds (b/bins, (b+1)/bins]; confidence 0 goes to the first bin.
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        if n:
            ece += n / len(conf) * abs(float(ok[sel].mean()) - float(conf[sel].mean()))
    return ece


def cross_validate(
    items: Sequence[Labelled],
    train: TrainFn,
    predict: PredictFn,
    *,
    folds: int = 5,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    name: str = "",
    train_only: Sequence[Labelled] = (),
    train_on_items: bool = True,
) -> EvalReport:
    """Train on k-1 folds, predict every image of the held-out fold, k times.

    Every item is predicted exactly once, by a model that never saw its group (its
    person, or the people of its near-duplicates). Folds are made from ``items`` alone,
    so adding ``train_only`` items leaves them unchanged: those join the training side
    of a fold only when their group (and their file) is not on its test side, and are
    never predicted. ``train_on_items=False`` trains on ``train_only`` items alone (a
    model made from another dataset, scored on these photos).
    ``progress(done_folds, folds)`` is called after each fold.
    """
    if not items:
        raise ValueError("nothing to evaluate")
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    groups = [group_of(it) for it in items]
    if len(set(groups)) < folds:
        raise ValueError(f"{len(set(groups))} people cannot fill {folds} folds")
    class_list = list(classes) if classes else sorted({it.label for it in items})
    outcomes: list[Outcome] = []
    train_images = train_faces = 0
    for f, test_idx in enumerate(person_folds(groups, folds, seed)):
        train_items = training_side(
            items, test_idx, train_only=train_only, train_on_items=train_on_items
        )
        trained = train(train_items)
        train_images += len(train_items)
        train_faces += trained.faces_found
        for i in test_idx:
            it = items[i]
            label, conf = predict(trained.state, it.path)
            outcomes.append(Outcome(it.path, it.label, label, float(conf), f))
        log.info("fold %d/%d done (%d held-out images)", f + 1, folds, len(test_idx))
        if progress:
            progress(f + 1, folds)
    return EvalReport(class_list, outcomes, folds, train_images, train_faces, name)


def training_side(
    items: Sequence[Labelled],
    test_idx: Sequence[int],
    *,
    train_only: Sequence[Labelled] = (),
    train_on_items: bool = True,
) -> list[Labelled]:
    """What a fold trains on: the items outside ``test_idx`` (unless ``train_on_items``
    is False), then each ``train_only`` item whose group and file are not tested."""
    held = set(test_idx)
    tested_groups = {group_of(items[i]) for i in held}
    tested_paths = {items[i].path for i in held}
    side = [it for i, it in enumerate(items) if i not in held] if train_on_items else []
    side += [
        it for it in train_only if group_of(it) not in tested_groups and it.path not in tested_paths
    ]
    return side


def format_report(report: EvalReport) -> str:
    """The table ``edged-train --eval`` prints (Markdown, readable as plain text)."""
    rec = report.recalls()
    lines = [
        f"| {report.name or 'pipeline'} | {len(report.outcomes)} images, "
        f"{report.folds}-fold CV, people never on both sides |",
        "|---|---|",
        f"| balanced accuracy | {report.balanced_accuracy:.1%} "
        f"(chance {1 / max(1, len(report.classes)):.0%}) |",
        f"| accuracy | {report.accuracy:.1%} |",
        f"| face found (training / test) | {report.face_rate_train:.1%} / "
        f"{report.face_rate_test:.1%} |",
        "| recall: "
        + " / ".join(report.classes)
        + " | "
        + " / ".join(f"{100 * rec[c]:.0f}" for c in report.classes)
        + " % |",
        "| recall over the folds, lowest-highest | "
        + " / ".join(_spread(*report.recall_spread()[c]) for c in report.classes)
        + " % |",
        f"| expected calibration error | {report.ece:.3f} |",
    ]
    bands = report.confidence_bands(3)
    if bands:
        lines.append(
            "| accuracy by confidence (low / mid / high third) | "
            + " / ".join(f"{100 * acc:.0f}% @{lo:.2f}-{hi:.2f}" for lo, hi, acc, _ in bands)
            + " |"
        )
    lines.extend(f"| note | {n} |" for n in report.notes)
    return "\n".join(lines)


def _spread(low: float, high: float) -> str:
    if math.isnan(low):
        return "-"
    return f"{100 * low:.0f}-{100 * high:.0f}"


def format_sources(report: EvalReport, sources: Sequence[tuple[str, Iterable[Path]]]) -> str:
    """The score of each source's photos: ``sources`` is (name, the photos it has) per
    source; a photo two sources have counts in both lines."""
    lines = [
        "| source | images | balanced accuracy | recall: " + " / ".join(report.classes) + " |",
        "|---|---|---|---|",
    ]
    for name, paths in sources:
        part = report.subset(paths, name)
        rec = part.recalls()
        shown = " / ".join("-" if math.isnan(rec[c]) else f"{100 * rec[c]:.0f}" for c in rec)
        lines.append(
            f"| {name} | {len(part.outcomes)} | {part.balanced_accuracy:.1%} | {shown} % |"
        )
    return "\n".join(lines)


def write_confusion_png(report: EvalReport, path: Path | str) -> None:
    """A confusion-matrix picture: rows true class, columns predicted (+ "no face")."""
    m = report.confusion()
    rows = m.sum(axis=1, keepdims=True).clip(min=1)
    share = m / rows
    names = [*report.classes, "no face"]
    cell, left, top = 70, 110, 110
    h = top + cell * len(report.classes) + 20
    w = left + cell * len(names) + 20
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    title = f"balanced acc {report.balanced_accuracy:.1%}  ECE {report.ece:.3f}"
    cv2.putText(img, title, (10, 25), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "true \\ predicted", (10, top - 10), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for j, n in enumerate(names):
        cv2.putText(
            img, n[:8], (left + j * cell + 4, top - 30), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA
        )
    for i, n in enumerate(report.classes):
        y = top + i * cell
        cv2.putText(img, n[:12], (10, y + cell // 2), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(len(names)):
            x = left + j * cell
            v = float(share[i, j])
            shade = int(255 * (1 - v))
            cv2.rectangle(img, (x, y), (x + cell - 2, y + cell - 2), (255, shade, shade), -1)
            colour = (255, 255, 255) if v > 0.5 else (0, 0, 0)
            cv2.putText(
                img, f"{100 * v:.0f}%", (x + 12, y + 30), font, 0.45, colour, 1, cv2.LINE_AA
            )
            cv2.putText(img, f"n={m[i, j]}", (x + 12, y + 50), font, 0.35, colour, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")


def edged_pipeline(
    fit_config: fitting.FitConfig | None = None,
    detector_config: DetectorConfig | None = None,
    faces: dict[Path, Gray | None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[TrainFn, PredictFn]:
    """The (train, predict) pair for edged's own pipeline: image-mode detector, the
    shared `Preprocessor`, `fitting.fit`, and `ExpressionModel` scoring.

    Detected faces are cached per path inside the pair, so k folds detect each image once;
    ``faces`` seeds that cache (edged-train passes the faces it already extracted).
    Images are read by `edged.images.read_image`: one above ``max_pixels`` has no face.
    """
    cfg = fit_config or fitting.FitConfig()
    detector = PhotoDetector(detector_config or IMAGE_DETECTOR)
    pre = Preprocessor(cfg.preprocess)
    cache: dict[Path, Gray | None] = dict(faces or {})

    def face_of(path: Path) -> Gray | None:
        if path not in cache:
            cache[path] = fitting.extract_face(path, detector, pre, max_pixels)
        return cache[path]

    def train(items: Sequence[Labelled]) -> Trained:
        names = sorted({it.label for it in items})
        ids = {n: i for i, n in enumerate(names)}
        faces, labels, groups = [], [], []
        for it in items:
            face = face_of(Path(it.path))
            if face is not None:
                faces.append(face)
                labels.append(ids[it.label])
                groups.append(group_of(it))
        fitted = fitting.fit(faces, labels, dict(enumerate(names)), cfg, groups=groups)
        return Trained(fitting.to_model(fitted), len(faces))

    def predict(model: ExpressionModel, path: Path) -> tuple[str | None, float]:
        face = face_of(Path(path))
        if face is None:
            return None, 0.0
        p = model.predict_face(face)
        return p.expression, p.confidence

    return train, predict
