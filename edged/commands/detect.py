"""``edged detect``: the workshop's "label a photo" step, for one image or thousands.

Runs the daemon's own `Pipeline` (image-mode detector, the model's `Preprocessor`,
LBPH) on still images, draws what the notebook drew (box, expression, confidence)
and/or prints one JSON line per image, so scripts need not start a process per photo.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import cv2

from edged.arguments import number
from edged.errors import EdgedError, ExitStatus, InputMissing
from edged.settings import load_settings
from edged.training.datasets import is_image_name, normalize_label
from edged.vision.detector import IMAGE_DETECTOR, DetectorConfig, FaceDetector, Image, pixels
from edged.vision.draw import draw_faces
from edged.vision.model import WORKSHOP_CLASSES, ExpressionModel
from edged.vision.model_file import load_model
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
  ...). With one input, -o is the annotated file to write (or a folder to write it
  into: an existing one, or a name without an extension); with several, -o is a
  folder and each picture keeps its name (and its path below a folder given as
  input). Without -o nothing is written.
output: a line per image on stdout, or with --json one JSON object per image:
  {{"image": "...", "width": W, "height": H, "faces": [{{"expression": "happy",
  "confidence": 0.71, "distance": 48.2, "box": [x, y, w, h]}}], "output": "...",
  "model_version": "..."}}; an image that cannot be read gets {{"image": ..., "error": ...}}.
workshop models: a trainer.yml written by the workshop's own code has no class names
  inside; its ids are read as --labels (or model.labels in the configuration), by
  default the workshop's {", ".join(f"{i} {n}" for i, n in enumerate(WORKSHOP_CLASSES))}.

exit status: 0 all images done; 65 some image could not be read (the others are still
  done); 66 an input or the model file is missing or unusable; 2 bad command line;
  78 bad configuration.

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
    p.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class Job:
    """One input image and where its annotated copy goes (None: not written)."""

    source: Path
    output: Path | None


def plan(inputs: list[Path], output: Path | None) -> list[Job]:
    """Expand folders and map every image to its output file; fail before any work.

    Raises `InputMissing` for paths that do not exist, `EdgedError` when two
    images would be written to one file or an output would overwrite its input.
    """
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputMissing(f"no such file or folder: {', '.join(missing[:3])}{more}")
    pairs = _expand(inputs)
    if output is None:
        return [Job(src, None) for src, _ in pairs]
    single = len(inputs) == 1 and not inputs[0].is_dir()
    # A name without an extension cannot be an image file: take it as a folder to create.
    if single and not output.is_dir() and output.suffix:
        jobs = [Job(pairs[0][0], output)]
    else:
        if output.exists() and not output.is_dir():
            raise EdgedError(f"-o {output} must be a folder when several images are given")
        jobs = [Job(src, output / rel) for src, rel in pairs]
    _check_outputs(jobs)
    return jobs


def _expand(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(image, its name below the output folder) for every input, folders expanded."""
    pairs: list[tuple[Path, Path]] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f))
            if not found:
                raise InputMissing(f"folder {p} holds no image files")
            pairs.extend((f, f.relative_to(p)) for f in found)
        else:
            pairs.append((p, Path(p.name)))
    return pairs


def _check_outputs(jobs: list[Job]) -> None:
    """Every output is an image type OpenCV writes, not an input, and not shared."""
    seen: dict[Path, Path] = {}
    writable: dict[str, bool] = {}
    for j in jobs:
        assert j.output is not None
        ext = j.output.suffix.lower()
        if ext not in writable:
            writable[ext] = bool(ext) and cv2.haveImageWriter(f"x{ext}")
        if not writable[ext]:
            raise EdgedError(
                f"cannot write {j.output}: OpenCV writes .jpg, .png, .bmp, .webp or .tif, "
                f"not {ext or 'files without an extension'}"
            )
        key = j.output.resolve()
        if key == j.source.resolve():
            raise EdgedError(f"refusing to overwrite the input {j.source} with its annotated copy")
        if key in seen:
            raise EdgedError(
                f"{seen[key]} and {j.source} would both be written to {j.output}; "
                "give them in separate calls or rename one"
            )
        seen[key] = j.source


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
    path: Path, labels: list[str] | None, from_config: bool, err: TextIO
) -> ExpressionModel:
    """Load the model, and say where class names come from when the file has none."""
    model = load_model(path, labels)
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
    jobs = plan(list(args.images), args.output)  # InputMissing: exit 66
    settings = load_settings(args.config)
    model_path: Path = args.model or settings.model.path
    labels = args.labels or settings.model.labels
    model = open_model(model_path, labels, args.labels is None and bool(labels), err)
    cfg = IMAGE_DETECTOR
    if args.min_size is not None:
        cfg = DetectorConfig(
            cfg.scale_factor, cfg.min_neighbors, args.min_size, cfg.max_width, cfg.pad
        )
    pipeline = Pipeline(FaceDetector(cfg), max_faces=args.max_faces)
    failed = 0
    for job in jobs:
        if not _detect_one(job, pipeline, model, as_json=args.json, out=out, err=err):
            failed += 1
    if failed:
        print(f"edged detect: {failed} of {len(jobs)} images could not be read", file=err)
        return ExitStatus.DATAERR
    return ExitStatus.OK


def _detect_one(
    job: Job, pipeline: Pipeline, model: ExpressionModel, *, as_json: bool, out: TextIO, err: TextIO
) -> bool:
    """Label one image: print its result, write its annotated copy; False if unreadable."""
    raw = cv2.imread(str(job.source), cv2.IMREAD_COLOR)
    if raw is None:
        msg = f"{job.source} cannot be read as an image"
        if as_json:
            print(json.dumps({"image": str(job.source), "error": msg}), file=out, flush=True)
        print(f"edged detect: {msg}", file=err, flush=True)
        return False
    image = pixels(raw)
    result = pipeline.process(image, model)
    if job.output is not None:
        _write_annotated(job.output, image, result)
    if as_json:
        print(json.dumps(result_json(job, image.shape, result)), file=out, flush=True)
    else:
        print(result_text(job, result), file=out, flush=True)
    return True


def _write_annotated(path: Path, image: Image, result: FrameResult) -> None:
    """The picture with every face's box and caption drawn on it (``image`` is drawn on)."""
    draw_faces(image, result.faces)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok = cv2.imwrite(str(path), image)
    except cv2.error:
        ok = False
    if not ok:
        raise EdgedError(f"cannot write {path} (unknown image extension or no permission)")
