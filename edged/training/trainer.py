"""``edged-train``: build ``trainer.yml`` from labelled datasets (and ``--eval`` it).

Reading labels and merging datasets is `edged.datasets`; turning faces into histograms
is `edged.fitting`; the held-out protocol is `edged.evaluate`. This module finds the
face in each image (with the same detector and `vision.Preprocessor` prediction uses),
fingerprints each decoded photo on the way (near-duplicates across datasets share an
evaluation group), decides what bad input means, reports progress and the per-class and
per-dataset table, and writes the model once, atomically, only when everything above
succeeded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TextIO

from edged.arguments import number
from edged.errors import (
    DatasetError,
    EdgedError,
    ExitStatus,
    ModelError,
    RedactingArgumentParser,
    run_guarded,
)
from edged.images import DEFAULT_MAX_PIXELS, ImageUnreadable, add_max_pixels_option, read_image
from edged.training import fitting
from edged.training.datasets import (
    DEFAULT_CLASSES,
    Collection,
    Dataset,
    Fingerprint,
    RepeatedDataset,
    Sample,
    content_keys,
    fingerprint,
    group_people,
    load_dataset,
    load_datasets,
    merge,
    near_duplicates,
    parse_classes,
    photos_of,
)
from edged.training.evaluate import (
    EvalReport,
    cross_validate,
    edged_pipeline,
    format_report,
    format_sources,
    write_confusion_png,
)
from edged.vision.detector import (
    IMAGE_DETECTOR,
    DetectorConfig,
    FaceDetector,
    Gray,
    to_gray,
)
from edged.vision.exemplars import CAP, Crop
from edged.vision.model import LBPHParams
from edged.vision.model_file import load_model, write_model
from edged.vision.photo import PhotoDetector
from edged.vision.pipeline import largest_face
from edged.vision.preprocess import Preprocessor

# How many file names an error or warning quotes before "and N more".
SHOW_NAMES = 5
# Past these counts a step shows its own progress line; below them it takes about a
# second or less here: hashing files of a shared size (~0.5 ms each), comparing
# fingerprints (every pair: 20000 photos take ~1.3 s).
LONG_HASHING = 2000
LONG_COMPARING = 20000


class CommandLineError(EdgedError):
    """Options that do not fit together: one line, exit 2 like any usage error."""


@dataclass
class ClassCounts:
    """One row of the final table: ``listed`` = missing + duplicate + two_labels +
    unreadable + read, and read = no_face + trained."""

    listed: int = 0
    missing: int = 0
    duplicate: int = 0  # the same bytes as a photo already counted (here or before)
    two_labels: int = 0  # the same bytes carry another class too: left out
    unreadable: int = 0
    no_face: int = 0
    trained: int = 0

    @property
    def read(self) -> int:
        return self.listed - self.missing - self.duplicate - self.two_labels - self.unreadable

    def __add__(self, other: ClassCounts) -> ClassCounts:
        return ClassCounts(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(ClassCounts))
        )


@dataclass
class FaceSet:
    """The prepared faces of the datasets, and what happened to every image."""

    classes: tuple[str, ...]
    faces: list[Gray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    persons: list[str] = field(default_factory=list)
    # Each face's evaluation group (its person, joined with near-duplicates' people).
    groups: list[str] = field(default_factory=list)
    counts: dict[str, ClassCounts] = field(default_factory=dict)
    # The same per dataset, in the order given.
    by_dataset: list[dict[str, ClassCounts]] = field(default_factory=list)
    # Per class: the unreadable images' names, with the reason when one is known.
    unreadable: dict[str, list[str]] = field(default_factory=dict)
    # Every readable sample's face (None: no face found), for --eval to reuse.
    by_path: dict[Path, Gray | None] = field(default_factory=dict)
    readable: list[Sample] = field(default_factory=list)
    # Every readable sample's fingerprint (`datasets.fingerprint`), for near-duplicates.
    prints: list[Fingerprint] = field(default_factory=list)
    # Pairs of photos found to be near-duplicates of another person's photo.
    linked: list[tuple[Path, Path]] = field(default_factory=list)


class Progress:
    """Progress on stderr: a live line on a terminal, a plain line per 10% otherwise
    (what journalctl and CI logs can read)."""

    def __init__(
        self,
        what: str,
        total: int,
        stream: TextIO | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = max(1, total)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self._clock = clock
        self._start = clock()
        self._last_draw = -1.0
        self._next_tenth = 1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if self.tty:
            if now - self._last_draw >= 0.1 or done >= self.total:
                self._last_draw = now
                self.stream.write(f"\r{self._line(done, now)}\x1b[K")
                self.stream.flush()
            return
        crossed = False
        while self._next_tenth <= 10 and done * 10 >= self._next_tenth * self.total:
            self._next_tenth += 1
            crossed = True
        if crossed:
            self.stream.write(self._line(done, now) + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, done: int, now: float) -> str:
        pct = 100 * done // self.total
        return f"{self.what}: {done}/{self.total} ({pct}%), {now - self._start:.0f} s"


def _examples(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOW_NAMES])
    more = len(names) - SHOW_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


def extract_faces(
    photos: Collection,
    detector: FaceDetector,
    pre: Preprocessor,
    progress: Progress | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FaceSet:
    """The largest face of every readable image, prepared exactly as prediction prepares it.

    Images are read with `read_image`: one above ``max_pixels`` is unreadable (from its
    header, before decoding), and so is one OpenCV cannot decode, out of memory included.
    Each decoded photo is fingerprinted on the way (for near-duplicates: no second read).
    """
    ids = {c: i for i, c in enumerate(photos.classes)}
    out = FaceSet(photos.classes, by_dataset=_dataset_counts(photos))
    for n, s in enumerate(photos.samples, start=1):
        counts = out.by_dataset[s.sources[0]][s.label]
        try:
            image = read_image(s.path, max_pixels)
        except ImageUnreadable as e:
            counts.unreadable += 1
            name = s.path.name + (f" ({e.reason})" if e.reason else "")
            out.unreadable.setdefault(s.label, []).append(name)
        else:
            gray = to_gray(image)
            out.readable.append(s)
            out.prints.append(fingerprint(gray))
            face = largest_face(gray, detector, pre)
            out.by_path[s.path] = face
            if face is None:
                counts.no_face += 1
            else:
                counts.trained += 1
                out.faces.append(face)
                out.labels.append(ids[s.label])
                out.persons.append(s.person)
        if progress is not None:
            progress.update(n)
    if progress is not None:
        progress.finish()
    out.counts = {c: _total(per[c] for per in out.by_dataset) for c in photos.classes}
    out.groups = list(out.persons)
    return out


def _dataset_counts(photos: Collection) -> list[dict[str, ClassCounts]]:
    """Per dataset and class, what the labels named and what merging left out."""
    return [
        {
            c: ClassCounts(
                listed=ds.listed.get(c, 0),
                missing=len(ds.missing.get(c, [])),
                duplicate=photos.duplicate[k][c],
                two_labels=photos.two_labels[k][c],
            )
            for c in photos.classes
        }
        for k, ds in enumerate(photos.parts)
    ]


def _total(counts: Iterable[ClassCounts]) -> ClassCounts:
    return sum(counts, ClassCounts())


def assign_groups(
    faces: FaceSet, photos: Collection, progress: Callable[[int, int], None] | None = None
) -> None:
    """Join the people of near-duplicate photos (and of one photo under two names) into
    one evaluation group, for the scorer's inner folds and for --eval's folds."""
    pairs = near_duplicates(faces.prints, progress=progress)
    readable = faces.readable
    links = [(readable[i].person, readable[j].person) for i, j in pairs]
    faces.linked = [
        (readable[i].path, readable[j].path)
        for i, j in pairs
        if readable[i].person != readable[j].person
    ]
    group = group_people((s.person for s in readable), [*links, *photos.same_photo])
    faces.readable = [replace(s, group=group[s.person]) for s in readable]
    faces.groups = [group[p] for p in faces.persons]


def check_faces(faces: FaceSet) -> None:
    """Refuse to train a model that could not answer for every requested class."""
    if not faces.faces:
        read = sum(c.read for c in faces.counts.values())
        if read == 0:
            names = [n for ns in faces.unreadable.values() for n in ns]
            raise DatasetError(
                "none of the images could be read as a picture"
                + (f" ({_examples(names)})" if names else "")
                + ": nothing to train"
            )
        raise DatasetError(
            f"no face found in any of the {read} readable images: nothing to train "
            "(are these photos of frontal faces?)"
        )
    empty = [c for c, n in faces.counts.items() if n.trained == 0]
    if empty:
        why = "; ".join(
            f"{c}: {n.listed} listed, {n.missing} missing"
            + (f", {n.duplicate} duplicate" if n.duplicate else "")
            + (f", {n.two_labels} with two labels" if n.two_labels else "")
            + f", {n.unreadable} unreadable"
            + (f" ({_examples(faces.unreadable[c])})" if n.unreadable else "")
            + f", {n.no_face} without a face"
            for c, n in faces.counts.items()
            if n.trained == 0
        )
        raise DatasetError(
            f"class {', '.join(empty)} has no usable face ({why}); "
            "fix its images or leave it out with --classes"
        )


# The table's columns: (ClassCounts field or property, heading). The two merging columns
# are shown with several datasets, or when a dataset has such a photo.
COLUMNS = (
    ("listed", "listed"),
    ("missing", "missing"),
    ("duplicate", "duplicate"),
    ("two_labels", "2 labels"),
    ("read", "read"),
    ("unreadable", "unreadable"),
    ("no_face", "no face"),
    ("trained", "trained"),
)
_MERGING = ("duplicate", "two_labels")


def format_table(
    counts: dict[str, ClassCounts], datasets: Sequence[tuple[str, dict[str, ClassCounts]]] = ()
) -> str:
    """The per-class summary printed after training: a row per class, the total, and
    with several datasets one row per dataset (its photos of every class)."""
    rows = [*counts.items(), ("total", _total(counts.values()))]
    rows += [(name, _total(per.values())) for name, per in datasets]
    columns = [
        (key, head)
        for key, head in COLUMNS
        if key not in _MERGING or datasets or any(getattr(n, key) for _, n in rows)
    ]
    cells = [[name, *(str(getattr(n, key)) for key, _ in columns)] for name, n in rows]
    head = ["class", *(h for _, h in columns)]
    widths = [max(len(r[i]) for r in [head, *cells]) for i in range(len(head))]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  "
        + "  ".join(f"{v:>{w}}" for v, w in zip(r[1:], widths[1:], strict=True))
        for r in [head, *cells]
    )


def _check_output(path: Path) -> None:
    """Fail before the long work, not after it, when the model cannot be written there."""
    if path.is_dir():
        raise EdgedError(f"output {path} is a folder: give a file name (e.g. {path}/trainer.yml)")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EdgedError(f"cannot write the model to {path}: {parent} is not writable")


def save(fitted: fitting.FittedModel, path: Path) -> str:
    """Write the model atomically (readers see the old file or the new one, never a mix)."""
    try:
        return write_model(
            path, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta
        )
    except OSError as e:
        raise EdgedError(f"cannot write the model to {path}: {e.strerror or e}") from None


@dataclass(frozen=True)
class TrainResult:
    photos: Collection
    faces: FaceSet
    fitted: fitting.FittedModel
    version: str
    seconds: float

    @property
    def dataset(self) -> Dataset:
        """The first dataset (the only one, for a single dataset)."""
        return self.photos.parts[0]


def collect(
    datasets: Sequence[Dataset],
    classes: tuple[str, ...] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Collection:
    """The datasets merged, each photo (by its bytes) once."""
    paths = photos_of(datasets)
    keys = content_keys(paths, progress)
    return merge(datasets, keys, classes or datasets[0].classes)


def check_missing(datasets: Sequence[Dataset]) -> None:
    """Refuse listed files that do not exist (``--skip-missing`` does not call this)."""
    several = len(datasets) > 1
    names = [
        f"{ds.root / ds.sources.get(c, c) if several else ds.sources.get(c, c)}: {n}"
        for ds in datasets
        for c, ns in ds.missing.items()
        for n in ns
    ]
    if names:
        where = "the datasets" if several else str(datasets[0].root)
        raise DatasetError(
            f"{len(names)} listed images do not exist in {where} "
            f"({_examples(names)}); fix the lists or pass --skip-missing"
        )


def train(
    datasets: Dataset | Sequence[Dataset],
    out: Path,
    *,
    classes: tuple[str, ...] | None = None,
    lbph: LBPHParams | None = None,
    detector: DetectorConfig | None = None,
    skip_missing: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _: None,
    stream: TextIO | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    exemplars: Sequence[StoredCrop] = (),
) -> TrainResult:
    """Train on the datasets (merged by class name, each photo once) and write ``out``;
    raises before writing anything on bad input. ``classes``: the model's, in id order
    (default: the first dataset's). ``exemplars``: enrolled crops the model keeps beside
    its generic part (`read_exemplars`), never trained on."""
    t0 = time.monotonic()
    parts = [datasets] if isinstance(datasets, Dataset) else list(datasets)
    if not skip_missing:
        check_missing(parts)
    hashing = _progress("comparing photos", LONG_HASHING, progress, stream)
    photos = collect(parts, classes, hashing)
    cfg = fitting.FitConfig(lbph=lbph or LBPHParams())
    det = PhotoDetector(detector or IMAGE_DETECTOR)
    pre = Preprocessor(cfg.preprocess)
    bar = Progress("finding faces", len(photos.samples), stream, enabled=progress)
    faces = extract_faces(photos, det, pre, bar, max_pixels)
    check_faces(faces)
    # Warnings only once training goes ahead: a refusal stays one line.
    warn_left_out(photos, faces, log)
    comparing = _progress("finding near-duplicates", LONG_COMPARING, progress, stream)
    assign_groups(faces, photos, comparing)
    names = dict(enumerate(photos.classes))
    fitted = fitting.fit(faces.faces, faces.labels, names, cfg, groups=faces.groups)
    if exemplars:
        fitted = with_exemplars(fitted, exemplars)
    version = save(fitted, out)
    return TrainResult(photos, faces, fitted, version, time.monotonic() - t0)


def _progress(
    what: str, long: int, enabled: bool, stream: TextIO | None
) -> Callable[[int, int], None] | None:
    """A ``progress(done, total)`` for work that only sometimes takes long: it shows a
    progress line (`Progress`) when the total is above ``long``."""
    if not enabled:
        return None
    bar: list[Progress] = []

    def update(done: int, total: int) -> None:
        if total <= long:
            return
        if not bar:
            bar.append(Progress(what, total, stream))
        bar[0].update(done)
        if done >= total:
            bar[0].finish()

    return update


def warn_left_out(photos: Collection, faces: FaceSet, log: Callable[[str], None]) -> None:
    """One warning line per kind of thing left out of training."""
    several = len(photos.parts) > 1
    for n, ds in enumerate(photos.parts, start=1):
        for line in ds.warnings:
            log(f"dataset {n} ({ds.root}): {line}" if several else line)
    missing = sum(ds.missing_count for ds in photos.parts)
    if missing:
        log(f"skipping {missing} listed images that do not exist")
    if photos.conflicts:
        log(
            f"leaving out {len(photos.conflicts)} images labelled with two classes: "
            + _examples([f"{k} ({'/'.join(v)})" for k, v in photos.conflicts.items()])
        )
    unreadable = [n for ns in faces.unreadable.values() for n in ns]
    if unreadable:
        log(
            f"{len(unreadable)} images could not be read as pictures and were left out: "
            + _examples(unreadable)
        )


def check_folds(samples: Sequence[Sample], folds: int, what: str = "the dataset") -> None:
    """Each fold needs a group of its own: refuse --folds the photos cannot fill (people
    whose photos are near-duplicates count as one)."""
    people = len({s.fold_group for s in samples})
    if people < folds:
        hint = f"use --folds {people} or " if people >= 2 else ""
        raise DatasetError(
            f"--eval with {folds} folds needs at least {folds} different people; "
            f"{what} has {people} ({hint}add photos of more people)"
        )


def evaluate(
    result: TrainResult,
    *,
    folds: int,
    eval_on: int | None = None,
    lbph: LBPHParams | None = None,
    detector: DetectorConfig | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> EvalReport:
    """Person-grouped k-fold evaluation on the same images, reusing the detected faces.

    ``eval_on`` (0-based): test only the photos of that dataset; the other datasets'
    photos join the training side of each fold whose tested people and near-duplicates
    they do not share (`cross_validate`'s ``train_only``).
    """
    items, extra = split_for_eval(result.faces.readable, eval_on)
    check_folds(items, folds, "the dataset" if eval_on is None else f"dataset {eval_on + 1}")
    cfg = fitting.FitConfig(lbph=lbph or LBPHParams())
    train_fn, predict_fn = edged_pipeline(
        cfg, detector or IMAGE_DETECTOR, faces=result.faces.by_path, max_pixels=max_pixels
    )
    bar = Progress("evaluating", folds, stream, enabled=progress)
    report = cross_validate(
        items,
        train_fn,
        predict_fn,
        folds=folds,
        classes=list(result.photos.classes),
        progress=lambda done, _total: bar.update(done),
        name="edged",
        train_only=extra,
    )
    bar.finish()
    if eval_on is not None and extra:
        report.notes.append(
            f"tested on dataset {eval_on + 1}'s photos only; the other {len(extra)} photos "
            "train only, never beside a tested person or near-duplicate"
        )
    return report


def split_for_eval(
    samples: Sequence[Sample], eval_on: int | None
) -> tuple[list[Sample], list[Sample]]:
    """(tested, training only): every photo tested, or only dataset ``eval_on``'s."""
    if eval_on is None:
        return list(samples), []
    tested = [s for s in samples if eval_on in s.sources]
    return tested, [s for s in samples if eval_on not in s.sources]


def source_lines(result: TrainResult) -> list[tuple[str, list[Path]]]:
    """Each dataset's name for the --eval report and the photos it has."""
    return [
        (
            f"{k + 1}: {ds.layout} {ds.root}",
            [s.path for s in result.faces.readable if k in s.sources],
        )
        for k, ds in enumerate(result.photos.parts)
    ]


def format_confusion(report: EvalReport) -> str:
    """The confusion matrix as text: rows the true class, columns the answer."""
    m = report.confusion()
    cols = [*report.classes, "no face"]
    width = max(10, *(len(c) for c in cols)) + 1
    lines = ["confusion matrix (rows: true class, columns: predicted)"]
    lines.append(" " * width + "".join(f"{c:>{width}}" for c in cols))
    for name, row in zip(report.classes, m, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{int(v):>{width}}" for v in row))
    return "\n".join(lines)


# --- enrollment stores: exemplars beside the generic model (issue 17) --------------------


@dataclass(frozen=True)
class StoredCrop:
    """A crop of an enrollment store: who, which expression (by name), the face."""

    person: str
    expression: str
    face: Gray
    path: Path


def read_exemplars(
    stores: Sequence[Dataset], size: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[StoredCrop]:
    """The stores' prepared crops, oldest first (the newest `CAP` of each person and
    expression are the ones a model keeps). A store of photos (not prepared crops) or a
    crop of another size is refused: the model could not compare it with a face."""
    out: list[tuple[float, StoredCrop]] = []
    for ds in stores:
        for s in ds.samples:
            if not s.prepared:
                raise DatasetError(
                    f"{ds.root} is not an enrollment store of prepared crops ({s.path.name}"
                    " is a photo): add its photos with `edged enroll` first"
                )
            try:
                face = to_gray(read_image(s.path, max_pixels))
                mtime = s.path.stat().st_mtime
            except (ImageUnreadable, OSError) as e:
                raise DatasetError(f"cannot read the enrolled crop {s.path}: {e}") from None
            if face.shape != (size, size):
                raise DatasetError(
                    f"the enrolled crop {s.path} is {face.shape[1]}x{face.shape[0]} px, not "
                    f"the model's {size}x{size}: enroll the person again"
                )
            out.append((mtime, StoredCrop(s.person, s.label, face, s.path)))
    out.sort(key=lambda item: (item[0], str(item[1].path)))
    return [c for _, c in out]


def with_exemplars(fitted: fitting.FittedModel, crops: Sequence[StoredCrop]) -> fitting.FittedModel:
    """``fitted`` keeping ``crops`` as exemplars (by expression name), the newest `CAP`
    of each person and expression."""
    ids = {name: i for i, name in fitted.classes.items()}
    unknown = sorted({c.expression for c in crops} - set(ids))
    if unknown:
        raise DatasetError(
            f"the enrollment store has expressions the model lacks ({', '.join(unknown)}); "
            f"the model has {', '.join(fitted.classes.values())}"
        )
    try:
        return fitting.attach_exemplars(
            fitted, [Crop(c.person, ids[c.expression], c.face) for c in crops]
        )
    except ModelError as e:
        raise DatasetError(str(e)) from None


def _attach_to_base(
    args: argparse.Namespace, layouts: Sequence[str], note: Callable[[str], None]
) -> int:
    """``--base-model FILE STORE...``: the model's generic part as it is, the stores'
    crops as its exemplars; FILE is only read (write -o elsewhere, or onto it: atomic)."""
    t0 = time.monotonic()
    out: Path = args.output
    if args.eval or args.eval_on is not None:
        raise CommandLineError("--eval needs the training photos: not with --base-model")
    _check_output(out)
    base = load_model(args.base_model)
    if base.source != "edged":
        raise ModelError(
            f"model file {args.base_model} was not written by edged-train (a workshop "
            "model): train one with edged-train first"
        )
    names = tuple(base.class_names())
    stores = [
        load_dataset(root, names, layout if layout != "auto" else "enrolled", partial=True)
        for root, layout in zip(args.datasets, layouts, strict=True)
    ]
    for ds in stores:
        if ds.layout != "enrolled":
            raise CommandLineError(
                f"{ds.root} is a {ds.layout} dataset, not an enrollment store: with "
                "--base-model every dataset is a store"
            )
    _describe(stores, note)
    crops = read_exemplars(stores, base.meta.preprocess.size, args.max_pixels)
    prepared = {ds.prepared_with for ds in stores} - {None}
    if prepared and prepared != {base.meta.preprocess}:
        raise DatasetError(
            f"the store's crops were prepared otherwise than the model prepares faces "
            f"({base.meta.preprocess}): enroll the people again"
        )
    fitted = with_exemplars(fitting.fitted_of(base), crops)
    version = save(fitted, out)
    if not args.quiet:
        print(f"from {args.base_model} (version {base.version}), {time.monotonic() - t0:.1f} s")
    _report_exemplars(fitted, out, version, args.quiet)
    return ExitStatus.OK


def _report_exemplars(fitted: fitting.FittedModel, out: Path, version: str, quiet: bool) -> None:
    ex = fitted.meta.exemplars
    if quiet or ex is None:
        return
    per = {p: sum(c.person == p for c in ex.crops) for p in ex.persons}
    shown = ", ".join(f"{p} {n}" for p, n in per.items())
    print(
        f"wrote {out} (version {version}, readable by its owner only): exemplars of "
        f"{len(per)} {'person' if len(per) == 1 else 'people'} ({shown} crops; at most "
        f"{CAP} per person and expression)",
        flush=True,
    )


# --- command line -----------------------------------------------------------------------

EPILOG = """\
dataset layouts (--layout auto picks the first that has every requested class):
  lists    DATASET/images/ + one DATASET/<class>.txt per class, one file name per line
           (the workshop's layout)
  legend   DATASET/data/legend.csv (or DATASET/legend.csv) with columns user.id,image,emotion
           and the images in DATASET/images/; spellings like happiness or SADNESS are
           read as happy and sad
  folders  one folder of images per class: DATASET/happy/*.jpg, DATASET/sad/*.jpg, ...
  enrolled an enrollment store (`edged enroll`): DATASET/<person>/<class>/*.png, prepared
           face crops. Not trained on: the model keeps the newest 4 crops of each person
           and expression as exemplars, and classifies a face near a person's own
           exemplars partly by them (as much as that person's crops predict each other)
class names: anger, happy, neutral, sad, surprise, disgust, fear, contempt, or the names
  of your own lists or folders. Default: the workshop's five, with its ids (0 anger,
  1 happy, 2 sad, 3 neutral, 4 surprise).

several datasets: edged-train A B C trains on all of them, merged by class name (after
  the spellings above). --layout is given once (for every dataset) or once per dataset,
  in the order of the datasets; the same folder may be given twice with two layouts
  (edged-train ~/fe ~/fe --layout lists --layout legend). A dataset may have only some
  of the classes; each class must be in one of them. A photo is known by its bytes: the
  same photo in two datasets is trained once (the later ones count it as "duplicate");
  the same photo under two classes is left out (counted as "2 labels"), with a warning.
  A copy re-encoded or resized is kept, but with --eval it is never on both sides of a
  split: its people and the original's are one group.

bad input: a listed file that does not exist is an error (naming the first few) unless
  --skip-missing; an image that cannot be decoded (out of memory included), that is
  above --max-pixels (read from its header, before decoding), or that shows no face is
  left out and counted in the table; a class left with no face is an error. A class
  folder that is a link to the dataset, a folder above it or another class is left out
  with a warning, and so is a photo reached under two classes. On every error the
  existing model file is left untouched. The model is written atomically: a daemon
  reading it sees the old file or the new one, never half of one.

outputs: the model file (-o, default trainer.yml) with the class names inside; a
  per-class table on stdout (listed, missing, read, unreadable, no face, trained; with
  several datasets also duplicate and 2 labels, and one row per dataset); progress on
  stderr; with --eval, the held-out report (each class's recall, and its lowest and
  highest over the folds; with several datasets, the score of each dataset's photos)
  and a confusion-matrix PNG.

exit status: 0 trained; 2 bad command line (also: --layout given neither once nor once
  per dataset, --eval-on beyond the datasets, one folder given twice with one layout);
  65 unusable dataset (missing folder or files, unknown class, a class without faces);
  66 OpenCV's face cascade is missing; 1 the model cannot be written; 70 a bug (please
  report it); 141 stdout was closed early (| head): the rest is skipped quietly.

enrollment: edged-train BASE... STORE trains the generic model on the BASE datasets and
  keeps the STORE's crops as exemplars; edged-train --base-model trainer.yml STORE -o
  family.yml adds them to an existing model in seconds (trainer.yml is only read). A
  model holding exemplars holds faces: it is written readable by its owner only (0600).

example:
  edged-train ~/facial_expressions -o trainer.yml --eval
  edged-train ~/my-faces --layout folders --classes happy,sad,neutral --grid-x 7 --grid-y 7
  edged-train ~/facial_expressions ~/facial_expressions --layout lists --layout legend \\
      --eval-on 1
"""


def build_parser() -> argparse.ArgumentParser:
    p = RedactingArgumentParser(
        prog="edged-train",
        description="Build an LBPH expression model (trainer.yml) from labelled face photos: "
        "finds the face in each image with OpenCV's Haar cascade, prepares it exactly as "
        "`edged run` and `edged detect` will, and trains LBPH on it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _dataset_arguments(p)
    _lbph_arguments(p.add_argument_group("LBPH"))
    _eval_arguments(p.add_argument_group("evaluation"))
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or table, only errors")
    p.add_argument("--traceback", action="store_true", help="show tracebacks for unexpected errors")
    return p


def _dataset_arguments(p: argparse.ArgumentParser) -> None:
    """What to read and where the model goes."""
    p.add_argument(
        "datasets",
        type=Path,
        nargs="+",
        metavar="DATASET",
        help="a dataset folder; several are merged by class name (see below)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("trainer.yml"),
        metavar="FILE",
        help="model file to write (default: %(default)s)",
    )
    p.add_argument(
        "--layout",
        choices=("auto", "lists", "legend", "folders", "enrolled"),
        action="append",
        help="how a dataset is labelled: once for every dataset, or repeated once per "
        "dataset in their order (default: auto; see below)",
    )
    p.add_argument(
        "--classes",
        metavar="A,B,...",
        help="classes to train, in id order (default: " + ",".join(DEFAULT_CLASSES) + ")",
    )
    p.add_argument(
        "--base-model",
        type=Path,
        metavar="FILE",
        help="add the enrollment stores given as datasets to this model's generic part, "
        "without reading its training photos again (seconds; FILE is never changed)",
    )
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="train without listed images that do not exist, instead of failing",
    )
    add_max_pixels_option(p)


def _lbph_arguments(g: argparse._ArgumentGroup) -> None:
    """LBPH's own parameters (defaults: `LBPHParams`)."""
    defaults = LBPHParams()
    g.add_argument(
        "--radius",
        type=number(int, low=1, high=8),
        default=defaults.radius,
        help="LBP radius in pixels (default: %(default)s)",
    )
    g.add_argument(
        "--neighbors",
        type=number(int, low=1, high=12),
        default=defaults.neighbors,
        help="LBP sample points (default: %(default)s)",
    )
    g.add_argument(
        "--grid-x",
        type=number(int, low=1, high=32),
        default=defaults.grid_x,
        help="histogram cells across (default: %(default)s)",
    )
    g.add_argument(
        "--grid-y",
        type=number(int, low=1, high=32),
        default=defaults.grid_y,
        help="histogram cells down (default: %(default)s)",
    )


def _eval_arguments(e: argparse._ArgumentGroup) -> None:
    """``--eval``: held-out accuracy after training."""
    e.add_argument(
        "--eval",
        action="store_true",
        help="also measure accuracy on held-out people (k-fold, each person on one side)",
    )
    e.add_argument(
        "--eval-on",
        type=number(int, low=1, high=1000),
        metavar="N",
        help="with several datasets: test only on the N-th dataset's photos (1: the "
        "first); the others' photos join the training side of each fold, never beside a "
        "tested person or near-duplicate, and are never tested (implies --eval)",
    )
    e.add_argument(
        "--folds",
        type=number(int, low=2, high=50),
        default=5,
        help="folds for --eval (default: %(default)s)",
    )
    e.add_argument(
        "--eval-png",
        type=Path,
        default=Path("confusion.png"),
        metavar="FILE",
        help="where --eval writes the confusion matrix (default: %(default)s)",
    )


def layouts_for(datasets: Sequence[Path], layouts: Sequence[str] | None) -> list[str]:
    """One layout per dataset: ``--layout`` given once applies to all, else in order."""
    given = list(layouts or ["auto"])
    if len(given) == 1:
        return given * len(datasets)
    if len(given) != len(datasets):
        raise CommandLineError(
            f"--layout is given {len(given)} times for {len(datasets)} datasets: give it "
            "once (for all of them) or once per dataset, in the same order"
        )
    return given


def run(args: argparse.Namespace) -> int:
    """The ``edged-train`` command; raises `EdgedError` subclasses for the user's mistakes."""
    try:
        return _run(args)
    except (CommandLineError, RepeatedDataset) as e:
        print(f"edged-train: error: {e}", file=sys.stderr)
        return ExitStatus.USAGE


def _run(args: argparse.Namespace) -> int:
    quiet: bool = args.quiet

    def note(msg: str) -> None:
        if not quiet:
            print(f"edged-train: {msg}", file=sys.stderr, flush=True)

    def warn(msg: str) -> None:
        print(f"edged-train: warning: {msg}", file=sys.stderr, flush=True)

    classes = parse_classes(args.classes) if args.classes else DEFAULT_CLASSES
    out: Path = args.output
    roots: list[Path] = args.datasets
    layouts = layouts_for(roots, args.layout)
    if args.base_model is not None:
        return _attach_to_base(args, layouts, note)
    eval_on = _eval_on(args, len(roots))
    _check_output(out)
    every = load_datasets(list(zip(roots, layouts, strict=True)), classes)
    stores = [ds for ds in every if ds.layout == "enrolled"]
    datasets = [ds for ds in every if ds.layout != "enrolled"]
    if not datasets:
        raise CommandLineError(
            "every dataset given is an enrollment store: give the photos to train the "
            "generic model on too, or add the store to a model with --base-model FILE"
        )
    if stores and eval_on is not None:
        raise CommandLineError("--eval-on counts datasets: give it without enrollment stores")
    _describe(every, note)
    if args.eval:
        _check_eval(datasets, args.folds, eval_on)
    lbph = LBPHParams(args.radius, args.neighbors, args.grid_x, args.grid_y)
    crops = read_exemplars(stores, fitting.FitConfig().preprocess.size, args.max_pixels)
    result = train(
        datasets,
        out,
        classes=classes,
        lbph=lbph,
        skip_missing=args.skip_missing,
        progress=not quiet,
        log=warn,
        max_pixels=args.max_pixels,
        exemplars=crops,
    )
    _report_training(result, out, lbph, quiet, note)
    if crops:
        _report_exemplars(result.fitted, out, result.version, quiet)
    if args.eval:
        _report_eval(result, args, eval_on, lbph)
    return ExitStatus.OK


def _eval_on(args: argparse.Namespace, count: int) -> int | None:
    """--eval-on as a 0-based dataset index (None: test every photo); implies --eval."""
    if args.eval_on is None:
        return None
    if args.eval_on > count:
        raise CommandLineError(
            f"--eval-on {args.eval_on}: there {'is' if count == 1 else 'are'} only {count} "
            f"dataset{'' if count == 1 else 's'}"
        )
    args.eval = True
    return int(args.eval_on) - 1


def _check_eval(datasets: Sequence[Dataset], folds: int, eval_on: int | None) -> None:
    """Refuse --folds the tested photos cannot fill, before any work."""
    if eval_on is None:
        check_folds([s for ds in datasets for s in ds.samples], folds)
    else:
        check_folds(datasets[eval_on].samples, folds, f"dataset {eval_on + 1}")


def _describe(datasets: Sequence[Dataset], note: Callable[[str], None]) -> None:
    if len(datasets) == 1:
        ds = datasets[0]
        note(
            f"{ds.root}: {ds.layout} layout, {len(ds.samples)} images in "
            f"{len(ds.classes)} classes ({', '.join(ds.classes)})"
        )
        return
    for n, ds in enumerate(datasets, start=1):
        some = f"{len(ds.classes)} class" + ("" if len(ds.classes) == 1 else "es")
        note(
            f"dataset {n}: {ds.root}: {ds.layout} layout, {len(ds.samples)} images in "
            f"{some} ({', '.join(ds.classes)})"
        )


def _report_training(
    result: TrainResult, out: Path, lbph: LBPHParams, quiet: bool, note: Callable[[str], None]
) -> None:
    parts = result.photos.parts
    if result.faces.linked:
        a, b = result.faces.linked[0]
        note(
            f"{len(result.faces.linked)} pairs of photos of different people are "
            f"near-duplicates (e.g. {a.name} ~ {b.name}): their people are one group "
            "for evaluation"
        )
    if quiet:
        return
    named = [
        (f"dataset {k + 1} ({ds.layout})", per)
        for k, (ds, per) in enumerate(zip(parts, result.faces.by_dataset, strict=True))
    ]
    print(format_table(result.faces.counts, named if len(parts) > 1 else ()))
    print(
        f"wrote {out} (version {result.version}): {len(result.photos.classes)} classes, "
        f"{len(result.fitted.histograms)} histograms from {len(result.faces.faces)} faces, "
        f"LBPH radius {lbph.radius} neighbors {lbph.neighbors} grid "
        f"{lbph.grid_x}x{lbph.grid_y}, {result.seconds:.1f} s",
        flush=True,
    )


def _report_eval(
    result: TrainResult, args: argparse.Namespace, eval_on: int | None, lbph: LBPHParams
) -> None:
    report = evaluate(
        result,
        folds=args.folds,
        eval_on=eval_on,
        lbph=lbph,
        progress=not args.quiet,
        max_pixels=args.max_pixels,
    )
    print(format_report(report))
    if len(result.photos.parts) > 1:
        print(format_sources(report, source_lines(result)))
    print(format_confusion(report), flush=True)
    try:
        write_confusion_png(report, args.eval_png)
    except OSError as e:
        raise EdgedError(f"cannot write {args.eval_png}: {e}") from None
    print(f"confusion matrix: {args.eval_png}")


def main(argv: Sequence[str] | None = None) -> int:
    """``edged-train``."""
    return run_guarded(run, build_parser().parse_args(argv), "edged-train")
