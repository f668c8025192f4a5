"""``edged-train``: build ``trainer.yml`` from a labelled dataset (and ``--eval`` it).

Reading labels is `edged.datasets`; turning faces into histograms is `edged.fitting`;
the held-out protocol is `edged.evaluate`. This module finds the face in each image
(with the same detector and `vision.Preprocessor` prediction uses), decides what bad
input means, reports progress and the per-class table, and writes the model once,
atomically, only when everything above succeeded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from edged.arguments import number
from edged.errors import DatasetError, EdgedError, ExitStatus, RedactingArgumentParser, run_guarded
from edged.images import DEFAULT_MAX_PIXELS, ImageUnreadable, add_max_pixels_option, read_image
from edged.training import fitting
from edged.training.datasets import DEFAULT_CLASSES, Dataset, Sample, load_dataset, parse_classes
from edged.training.evaluate import (
    EvalReport,
    cross_validate,
    edged_pipeline,
    format_report,
    write_confusion_png,
)
from edged.vision.detector import (
    IMAGE_DETECTOR,
    DetectorConfig,
    FaceDetector,
    Gray,
    to_gray,
)
from edged.vision.model import LBPHParams
from edged.vision.model_file import write_model
from edged.vision.pipeline import largest_face
from edged.vision.preprocess import Preprocessor

# How many file names an error or warning quotes before "and N more".
SHOW_NAMES = 5


@dataclass
class ClassCounts:
    """One row of the final table."""

    listed: int = 0
    missing: int = 0
    unreadable: int = 0
    no_face: int = 0
    trained: int = 0

    @property
    def read(self) -> int:
        return self.listed - self.missing - self.unreadable


@dataclass
class FaceSet:
    """The prepared faces of a dataset, and what happened to every image."""

    classes: tuple[str, ...]
    faces: list[Gray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    persons: list[str] = field(default_factory=list)
    counts: dict[str, ClassCounts] = field(default_factory=dict)
    # Per class: the unreadable images' names, with the reason when one is known.
    unreadable: dict[str, list[str]] = field(default_factory=dict)
    # Every readable sample's face (None: no face found), for --eval to reuse.
    by_path: dict[Path, Gray | None] = field(default_factory=dict)
    readable: list[Sample] = field(default_factory=list)


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
    dataset: Dataset,
    detector: FaceDetector,
    pre: Preprocessor,
    progress: Progress | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FaceSet:
    """The largest face of every readable image, prepared exactly as prediction prepares it.

    Images are read with `read_image`: one above ``max_pixels`` is unreadable (from its
    header, before decoding), and so is one OpenCV cannot decode, out of memory included.
    """
    ids = {c: i for i, c in enumerate(dataset.classes)}
    out = FaceSet(dataset.classes)
    for c in dataset.classes:
        out.counts[c] = ClassCounts(
            listed=dataset.listed.get(c, 0), missing=len(dataset.missing.get(c, []))
        )
    for n, s in enumerate(dataset.samples, start=1):
        counts = out.counts[s.label]
        try:
            image = read_image(s.path, max_pixels)
        except ImageUnreadable as e:
            counts.unreadable += 1
            name = s.path.name + (f" ({e.reason})" if e.reason else "")
            out.unreadable.setdefault(s.label, []).append(name)
        else:
            out.readable.append(s)
            face = largest_face(to_gray(image), detector, pre)
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
    return out


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
            f"{c}: {n.listed} listed, {n.missing} missing, {n.unreadable} unreadable"
            + (f" ({_examples(faces.unreadable[c])})" if n.unreadable else "")
            + f", {n.no_face} without a face"
            for c, n in faces.counts.items()
            if n.trained == 0
        )
        raise DatasetError(
            f"class {', '.join(empty)} has no usable face ({why}); "
            "fix its images or leave it out with --classes"
        )


def format_table(counts: dict[str, ClassCounts]) -> str:
    """The per-class summary printed after training."""
    head = ("class", "listed", "missing", "read", "unreadable", "no face", "trained")
    rows = [
        (c, n.listed, n.missing, n.read, n.unreadable, n.no_face, n.trained)
        for c, n in counts.items()
    ]
    total = ClassCounts(
        *(sum(getattr(n, k) for n in counts.values()) for k in ClassCounts.__dataclass_fields__)
    )
    rows.append(
        (
            "total",
            total.listed,
            total.missing,
            total.read,
            total.unreadable,
            total.no_face,
            total.trained,
        )
    )
    width = max(len(head[0]), *(len(str(r[0])) for r in rows))
    lines = [f"{head[0]:<{width}}  " + "  ".join(f"{h:>10}" for h in head[1:])]
    lines += [f"{r[0]:<{width}}  " + "  ".join(f"{v:>10}" for v in r[1:]) for r in rows]
    return "\n".join(lines)


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
    dataset: Dataset
    faces: FaceSet
    fitted: fitting.FittedModel
    version: str
    seconds: float


def train(
    dataset: Dataset,
    out: Path,
    *,
    lbph: LBPHParams | None = None,
    detector: DetectorConfig | None = None,
    skip_missing: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _: None,
    stream: TextIO | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> TrainResult:
    """Train on ``dataset`` and write ``out``; raises before writing anything on bad input."""
    t0 = time.monotonic()
    if dataset.missing and not skip_missing:
        names = [
            f"{dataset.sources.get(c, c)}: {n}" for c, ns in dataset.missing.items() for n in ns
        ]
        raise DatasetError(
            f"{len(names)} listed images do not exist in {dataset.root} "
            f"({_examples(names)}); fix the lists or pass --skip-missing"
        )
    cfg = fitting.FitConfig(lbph=lbph or LBPHParams())
    det = FaceDetector(detector or IMAGE_DETECTOR)
    pre = Preprocessor(cfg.preprocess)
    bar = Progress("finding faces", len(dataset.samples), stream, enabled=progress)
    faces = extract_faces(dataset, det, pre, bar, max_pixels)
    check_faces(faces)
    # Warnings only once training goes ahead: a refusal stays one line.
    warn_left_out(dataset, faces, log)
    classes = dict(enumerate(dataset.classes))
    fitted = fitting.fit(faces.faces, faces.labels, classes, cfg, groups=faces.persons)
    version = save(fitted, out)
    return TrainResult(dataset, faces, fitted, version, time.monotonic() - t0)


def warn_left_out(dataset: Dataset, faces: FaceSet, log: Callable[[str], None]) -> None:
    """One warning line per kind of thing left out of training."""
    for line in dataset.warnings:
        log(line)
    if dataset.missing:
        log(f"skipping {dataset.missing_count} listed images that do not exist")
    if dataset.conflicts:
        log(
            f"leaving out {len(dataset.conflicts)} images labelled with two classes: "
            + _examples([f"{k} ({'/'.join(v)})" for k, v in dataset.conflicts.items()])
        )
    unreadable = [n for ns in faces.unreadable.values() for n in ns]
    if unreadable:
        log(
            f"{len(unreadable)} images could not be read as pictures and were left out: "
            + _examples(unreadable)
        )


def check_folds(samples: Sequence[Sample], folds: int) -> None:
    """Each fold needs a person of its own: refuse --folds the dataset cannot fill."""
    people = len({s.person for s in samples})
    if people < folds:
        hint = f"use --folds {people} or " if people >= 2 else ""
        raise DatasetError(
            f"--eval with {folds} folds needs at least {folds} different people; "
            f"the dataset has {people} ({hint}add photos of more people)"
        )


def evaluate(
    result: TrainResult,
    *,
    folds: int,
    lbph: LBPHParams | None = None,
    detector: DetectorConfig | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> EvalReport:
    """Person-grouped k-fold evaluation on the same images, reusing the detected faces."""
    items = result.faces.readable
    check_folds(items, folds)
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
        classes=list(result.dataset.classes),
        progress=lambda done, _total: bar.update(done),
        name="edged",
    )
    bar.finish()
    return report


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


# --- command line -----------------------------------------------------------------------

EPILOG = """\
dataset layouts (--layout auto picks the first that has every requested class):
  lists    DATASET/images/ + one DATASET/<class>.txt per class, one file name per line
           (the workshop's layout)
  legend   DATASET/data/legend.csv (or DATASET/legend.csv) with columns user.id,image,emotion
           and the images in DATASET/images/; spellings like happiness or SADNESS are
           read as happy and sad
  folders  one folder of images per class: DATASET/happy/*.jpg, DATASET/sad/*.jpg, ...
class names: anger, happy, neutral, sad, surprise, disgust, fear, contempt, or the names
  of your own lists or folders. Default: the workshop's five, with its ids (0 anger,
  1 happy, 2 sad, 3 neutral, 4 surprise).

bad input: a listed file that does not exist is an error (naming the first few) unless
  --skip-missing; an image that cannot be decoded (out of memory included), that is
  above --max-pixels (read from its header, before decoding), or that shows no face is
  left out and counted in the table; a class left with no face is an error. A class
  folder that is a link to the dataset, a folder above it or another class is left out
  with a warning, and so is a photo reached under two classes. On every error the
  existing model file is left untouched. The model is written atomically: a daemon
  reading it sees the old file or the new one, never half of one.

outputs: the model file (-o, default trainer.yml) with the class names inside; a
  per-class table on stdout (listed, missing, read, unreadable, no face, trained);
  progress on stderr; with --eval, the held-out report and a confusion-matrix PNG.

exit status: 0 trained; 2 bad command line; 65 unusable dataset (missing folder or
  files, unknown class, a class without faces); 66 OpenCV's face cascade is missing;
  1 the model cannot be written; 70 a bug (please report it); 141 stdout was closed
  early (| head): the rest is skipped quietly.

example:
  edged-train ~/facial_expressions -o trainer.yml --eval
  edged-train ~/my-faces --layout folders --classes happy,sad,neutral --grid-x 7 --grid-y 7
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
    p.add_argument("dataset", type=Path, metavar="DATASET", help="the dataset folder")
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
        choices=("auto", "lists", "legend", "folders"),
        default="auto",
        help="how the dataset is labelled (default: %(default)s; see below)",
    )
    p.add_argument(
        "--classes",
        metavar="A,B,...",
        help="classes to train, in id order (default: " + ",".join(DEFAULT_CLASSES) + ")",
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


def run(args: argparse.Namespace) -> int:
    """The ``edged-train`` command; raises `EdgedError` subclasses for the user's mistakes."""
    quiet: bool = args.quiet

    def note(msg: str) -> None:
        if not quiet:
            print(f"edged-train: {msg}", file=sys.stderr, flush=True)

    def warn(msg: str) -> None:
        print(f"edged-train: warning: {msg}", file=sys.stderr, flush=True)

    classes = parse_classes(args.classes) if args.classes else DEFAULT_CLASSES
    out: Path = args.output
    _check_output(out)
    dataset = load_dataset(args.dataset, classes, args.layout)
    note(
        f"{dataset.root}: {dataset.layout} layout, {len(dataset.samples)} images in "
        f"{len(classes)} classes ({', '.join(classes)})"
    )
    if args.eval:
        check_folds(dataset.samples, args.folds)
    lbph = LBPHParams(args.radius, args.neighbors, args.grid_x, args.grid_y)
    result = train(
        dataset,
        out,
        lbph=lbph,
        skip_missing=args.skip_missing,
        progress=not quiet,
        log=warn,
        max_pixels=args.max_pixels,
    )
    if not quiet:
        print(format_table(result.faces.counts))
        print(
            f"wrote {out} (version {result.version}): {len(classes)} classes, "
            f"{len(result.fitted.histograms)} histograms from {len(result.faces.faces)} faces, "
            f"LBPH radius {lbph.radius} neighbors {lbph.neighbors} grid "
            f"{lbph.grid_x}x{lbph.grid_y}, {result.seconds:.1f} s",
            flush=True,
        )
    if args.eval:
        report = evaluate(
            result, folds=args.folds, lbph=lbph, progress=not quiet, max_pixels=args.max_pixels
        )
        print(format_report(report))
        print(format_confusion(report), flush=True)
        try:
            write_confusion_png(report, args.eval_png)
        except OSError as e:
            raise EdgedError(f"cannot write {args.eval_png}: {e}") from None
        print(f"confusion matrix: {args.eval_png}")
    return ExitStatus.OK


def main(argv: Sequence[str] | None = None) -> int:
    """``edged-train``."""
    return run_guarded(run, build_parser().parse_args(argv), "edged-train")
