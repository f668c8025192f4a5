"""``edged detect``: the workshop's "label a photo" step, for one image or thousands.

Runs the daemon's own `Pipeline` (image-mode detector, the model's `Preprocessor`,
LBPH) on still images, draws what the notebook drew (box, expression, confidence)
and/or prints one JSON line per image, so scripts need not start a process per photo.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import cv2

from edged.arguments import number
from edged.atomic import write_atomic
from edged.errors import EdgedError, ExitStatus, InputMissing
from edged.images import ImageUnreadable, add_max_pixels_option, find_images, identity, read_image
from edged.labels import normalize_label
from edged.settings import load_settings
from edged.vision.detector import IMAGE_DETECTOR, DetectorConfig, Image
from edged.vision.draw import draw_faces
from edged.vision.model import WORKSHOP_CLASSES, ExpressionModel
from edged.vision.model_file import MAX_MODEL_BYTES, load_model
from edged.vision.photo import PhotoDetector
from edged.vision.pipeline import FrameResult, Pipeline

CONFIDENCE_HELP = (
    "confidence is 0..1: how far the best class stands out from the others (a softmax "
    "over the per-class LBPH distances). For a model trained by edged-train with held-out "
    "calibration it reads as the chance the answer is right; for a workshop model it is "
    "only a relative margin. distance is LBPH's raw chi-square distance to the nearest "
    "training face (lower is closer; the workshop showed 100 - distance)."
)

EPILOG = f"""\
{textwrap.fill(CONFIDENCE_HELP, 88)}

inputs: image files and folders (searched recursively for .jpg, .png, .bmp, .webp, .tif,
  ...; folder links followed, loops not). With one input, -o is the annotated file to
  write (or a folder to write it into: an existing one, or a name without an
  extension); with several, -o is a folder and each picture keeps its name (and its
  path below a folder given as input). Without -o nothing is written. An -o that is
  an input by any name (a link, a hard link, ./x.jpg) or lies inside a folder given
  as input (its pictures would be read as inputs next time) is refused before any
  work. Annotated copies are written atomically: all of the picture or none of it.
  An image of more than --max-pixels (from its header, before decoding) or that
  cannot be decoded (out of memory included) is unreadable; the others are done.
output: a line per image on stdout, or with --json one JSON object per image:
  {{"image": "...", "width": W, "height": H, "faces": [{{"expression": "happy",
  "confidence": 0.71, "distance": 48.2, "box": [x, y, w, h]}}], "output": "...",
  "model_version": "..."}}; an image that cannot be read, or whose annotated copy
  cannot be written, gets {{"image": ..., "error": ...}}.
workshop models: a trainer.yml written by the workshop's own code has no class names
  inside; its ids are read as --labels (or model.labels in the configuration), by
  default the workshop's {", ".join(f"{i} {n}" for i, n in enumerate(WORKSHOP_CLASSES))}.

exit status: 0 all images done; 65 some image could not be read (the others are still
  done); 1 some annotated copy could not be written, e.g. a full disk (the others are
  still done; this wins over 65); 66 an input or the model file is missing or
  unusable; 2 bad command line, including an -o refused as above; 78 bad
  configuration; 141 stdout was closed early (| head): the rest is skipped quietly.

examples:
  edged detect elon.jpg -o elon-labelled.jpg
  edged detect photos/ --model /var/lib/edged/trainer.yml --json > faces.jsonl
  edged detect group.jpg --min-size 0.05 -o group-labelled.jpg
  edged detect me.jpg --model workshop/trainer.yml --labels anger,happy,sad,neutral,surprise
"""


def _labels(text: str) -> list[str]:
    names = [normalize_label(p) for p in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty class name")
    return names


_fraction = number(float, above=0.0, high=1.0)
_positive = number(int, low=1)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "detect",
        help="label the faces in photos with their expression (box, expression, confidence)",
        description="Find the faces in image files and classify their expression with "
        "the model, using the same detection and preprocessing as the daemon (tuned for "
        "still photos). Writes annotated pictures (-o) and/or prints the results.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image file or folder")
    p.add_argument(
        "-m",
        "--model",
        type=Path,
        help="model file (default: model.path of the configuration, trainer.yml)",
    )
    p.add_argument(
        "-o", "--output", type=Path, metavar="OUT", help="annotated image (one input) or folder"
    )
    p.add_argument("--json", action="store_true", help="one JSON line per image on stdout")
    p.add_argument(
        "--labels",
        type=_labels,
        metavar="A,B,...",
        help="class names by id for a model without names inside (a workshop trainer.yml)",
    )
    p.add_argument("-c", "--config", type=Path, metavar="FILE", help="edged TOML configuration")
    p.add_argument(
        "--max-faces", type=_positive, default=20, help="faces per image (default: %(default)s)"
    )
    p.add_argument(
        "--min-size",
        type=_fraction,
        help="smallest face as a fraction of the shorter image side (default "
        f"{IMAGE_DETECTOR.min_size}; lower it for group photos)",
    )
    add_max_pixels_option(p)
    p.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class Job:
    """One input image and where its annotated copy goes (None: not written)."""

    source: Path
    output: Path | None


class OutputRefused(EdgedError):
    """An -o that cannot be used as asked (it would overwrite or become an input, two
    images would share it, no image type): a bad command line, exit 2, before any work."""


@dataclass
class Inputs:
    """The images to label (with their names below -o) and what they are on disk."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    # (device, inode) of every input file, and of every folder searched for them,
    # each with the input it came from.
    files: dict[tuple[int, int], Path] = field(default_factory=dict)
    folders: dict[tuple[int, int], Path] = field(default_factory=dict)


def plan(inputs: list[Path], output: Path | None) -> list[Job]:
    """Expand folders and map every image to its output file; fail before any work.

    Raises `InputMissing` for paths that do not exist, `OutputRefused` when two images
    would be written to one file or an output is, or may become, an input.
    """
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputMissing(f"no such file or folder: {', '.join(missing[:3])}{more}")
    found = _expand(inputs)
    if output is None:
        return [Job(src, None) for src, _ in found.pairs]
    single = len(inputs) == 1 and not inputs[0].is_dir()
    # A name without an extension cannot be an image file: take it as a folder to create.
    if single and not output.is_dir() and output.suffix:
        jobs = [Job(found.pairs[0][0], output)]
    else:
        if output.exists() and not output.is_dir():
            raise OutputRefused(f"-o {output} must be a folder when several images are given")
        jobs = [Job(src, output / rel) for src, rel in found.pairs]
    _check_outputs(jobs, found)
    return jobs


def _expand(inputs: list[Path]) -> Inputs:
    """Every input image, folders expanded, and the identity of each file and folder."""
    found = Inputs()
    for p in inputs:
        if p.is_dir():
            listing = find_images(p)
            if not listing.files:
                raise InputMissing(f"folder {p} holds no image files")
            found.pairs.extend((f, f.relative_to(p)) for f in listing.files)
            for key in listing.folders:
                found.folders.setdefault(key, p)
        else:
            found.pairs.append((p, Path(p.name)))
    for src, _ in found.pairs:
        file = _identity(src)
        if file is not None:
            found.files.setdefault(file, src)
    return found


def _identity(path: Path | str) -> tuple[int, int] | None:
    try:
        return identity(os.stat(path))
    except OSError:
        return None


def _check_outputs(jobs: list[Job], found: Inputs) -> None:
    """Every output is an image type OpenCV writes, not an input by any name, outside
    every folder given as input, and not shared."""
    seen: dict[Path, Path] = {}
    writable: dict[str, bool] = {}
    for j in jobs:
        assert j.output is not None
        ext = j.output.suffix.lower()
        if ext not in writable:
            writable[ext] = bool(ext) and cv2.haveImageWriter(f"x{ext}")
        if not writable[ext]:
            raise OutputRefused(
                f"cannot write {j.output}: OpenCV writes .jpg, .png, .bmp, .webp or .tif, "
                f"not {ext or 'files without an extension'}"
            )
        _refuse_an_input(j.output, found)
        key = j.output.resolve()
        if key in seen:
            raise OutputRefused(
                f"{seen[key]} and {j.source} would both be written to {j.output}; "
                "give them in separate calls or rename one"
            )
        seen[key] = j.source


def _refuse_an_input(output: Path, found: Inputs) -> None:
    """Refuse an output that is an input (the same file: a link, a hard link, another
    spelling) or lies inside a folder searched for inputs (it would become one)."""
    real = Path(os.path.realpath(output))  # links followed, "sub/.." gone, even if absent
    same = found.files.get(_identity(real) or (-1, -1))
    if same is not None:
        what = "" if same == output else " by another name"
        raise OutputRefused(
            f"refusing to overwrite the input {same} with its annotated copy: {output} is "
            f"that file{what}"
        )
    for folder in real.parents:
        source = found.folders.get(_identity(folder) or (-1, -1))
        if source is not None:
            raise OutputRefused(
                f"refusing to write {output}: it is inside the input folder {source}, so the "
                "annotated copies would be read as inputs (now or next time); "
                "give -o a place outside it"
            )


def result_json(job: Job, shape: tuple[int, ...], result: FrameResult) -> dict[str, Any]:
    return {
        "image": str(job.source),
        "width": int(shape[1]),
        "height": int(shape[0]),
        "faces": [f.as_dict() for f in result.faces],
        "output": str(job.output) if job.output else None,
        "model_version": result.model_version,
    }


def result_text(job: Job, result: FrameResult) -> str:
    if not result.faces:
        return f"{job.source}: no face found"
    parts = [
        f"{f.expression} {f.confidence:.2f} (distance {f.distance:.1f}) at "
        f"{f.box.x},{f.box.y} {f.box.w}x{f.box.h}"
        for f in result.faces
    ]
    head = f"{job.source}: " + (f"{len(parts)} faces: " if len(parts) > 1 else "")
    return head + "; ".join(parts)


def open_model(
    path: Path,
    labels: list[str] | None,
    from_config: bool,
    err: TextIO,
    max_bytes: int = MAX_MODEL_BYTES,
) -> ExpressionModel:
    """Load the model, and say where class names come from when the file has none."""
    model = load_model(path, labels, max_bytes=max_bytes)
    names = ", ".join(f"{i} {n}" for i, n in zip(model.class_ids, model.class_names(), strict=True))
    if model.source == "workshop":
        origin = (
            "model.labels of the configuration"
            if from_config
            else "--labels"
            if labels
            else "the workshop's id order; change with --labels"
        )
        print(
            f"edged detect: {path} has no class names inside (a workshop model): "
            f"reading ids as {names} (from {origin})",
            file=err,
        )
    elif labels and not from_config:
        print(
            f"edged detect: {path} names its own classes ({names}); --labels is ignored",
            file=err,
        )
    return model


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        jobs = plan(list(args.images), args.output)  # InputMissing: exit 66
    except OutputRefused as e:
        print(f"edged: error: {e}", file=err)
        return ExitStatus.USAGE
    settings = load_settings(args.config)
    model_path: Path = args.model or settings.model.path
    labels = args.labels or settings.model.labels
    from_config = args.labels is None and bool(labels)
    model = open_model(model_path, labels, from_config, err, settings.model.max_bytes)
    cfg = IMAGE_DETECTOR
    if args.min_size is not None:
        cfg = DetectorConfig(
            cfg.scale_factor, cfg.min_neighbors, args.min_size, cfg.max_width, cfg.pad
        )
    pipeline = Pipeline(PhotoDetector(cfg), max_faces=args.max_faces)
    outcomes = [
        _detect_one(
            job, pipeline, model, as_json=args.json, max_pixels=args.max_pixels, out=out, err=err
        )
        for job in jobs
    ]
    return _summary(outcomes, err)


Outcome = Literal["done", "unreadable", "unwritten"]


def _summary(outcomes: list[Outcome], err: TextIO) -> int:
    unreadable, unwritten = outcomes.count("unreadable"), outcomes.count("unwritten")
    if unreadable:
        print(f"edged detect: {unreadable} of {len(outcomes)} images could not be read", file=err)
    if unwritten:
        print(
            f"edged detect: {unwritten} of {len(outcomes)} annotated copies could not be written",
            file=err,
        )
        return ExitStatus.ERROR
    return ExitStatus.DATAERR if unreadable else ExitStatus.OK


def _detect_one(
    job: Job,
    pipeline: Pipeline,
    model: ExpressionModel,
    *,
    as_json: bool,
    max_pixels: int,
    out: TextIO,
    err: TextIO,
) -> Outcome:
    """Label one image: print its result, write its annotated copy."""
    try:
        image = read_image(job.source, max_pixels)
    except ImageUnreadable as e:
        _failed(job, str(e), as_json=as_json, out=out, err=err)
        return "unreadable"
    result = pipeline.process(image, model)
    if job.output is not None:
        try:
            _write_annotated(job.output, image, result)
        except OSError as e:
            msg = f"cannot write {job.output}: {e.strerror or e}"
            _failed(job, msg, as_json=as_json, out=out, err=err)
            return "unwritten"
    if as_json:
        print(json.dumps(result_json(job, image.shape, result)), file=out, flush=True)
    else:
        print(result_text(job, result), file=out, flush=True)
    return "done"


def _failed(job: Job, msg: str, *, as_json: bool, out: TextIO, err: TextIO) -> None:
    if as_json:
        print(json.dumps({"image": str(job.source), "error": msg}), file=out, flush=True)
    print(f"edged detect: {msg}", file=err, flush=True)


def _write_annotated(path: Path, image: Image, result: FrameResult) -> None:
    """The picture with every face's box and caption drawn on it (``image`` is drawn on),
    written atomically: a full disk leaves no truncated picture. Raises `OSError`."""
    draw_faces(image, result.faces)
    try:
        ok, encoded = cv2.imencode(path.suffix, image)
    except cv2.error:
        ok = False
    if not ok:
        raise OSError(f"OpenCV cannot encode a {path.suffix} picture")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, encoded.tobytes())
