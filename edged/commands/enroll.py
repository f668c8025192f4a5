"""``edged enroll``: teach edged the faces of the people its camera sees.

``--from PHOTO...`` finds the largest face of each photo (the still-photo detector, as
``edged detect`` and ``edged-train``), prepares it as the model prepares faces, and keeps
the crops in the enrollment store (`edged.enrollment.store`); ``--list`` shows who is
enrolled; ``--forget`` removes a person. Names are checked before anything is read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
from pathlib import Path
from typing import TextIO

from edged.enrollment.names import PERSON_RULE, check_expression, person_problem
from edged.enrollment.store import EnrollmentStore
from edged.errors import ExitStatus
from edged.images import ImageUnreadable, add_max_pixels_option, read_image
from edged.labels import KNOWN_CLASSES
from edged.settings import load_settings
from edged.vision.detector import IMAGE_DETECTOR, FaceDetector, Gray, to_gray
from edged.vision.model_file import load_model
from edged.vision.photo import PhotoDetector
from edged.vision.preprocess import PreprocessConfig, Preprocessor

_EXPRESSIONS = textwrap.fill(
    "expressions: spelled as datasets spell them (happiness is happy, SADNESS is sad); "
    "one of the model's classes with --model, else one of " + ", ".join(KNOWN_CLASSES) + ".",
    86,
    subsequent_indent="  ",
)

EPILOG = f"""\
person names: {PERSON_RULE}.
{_EXPRESSIONS}
photos: the largest face of each is stored; a photo with several faces says so, one
  with none (or that cannot be read) is named and not stored. Faces are prepared as
  the model prepares them (--model; without it as the store's earlier faces were, or
  edged's default, 64x64 CLAHE). The store keeps 8-bit grey face crops, never the
  photos: <store>/<person>/<expression>/<sha256>.png, folders 0700, files 0600. The
  same crop twice is stored once. All of a call's faces are stored or none (a full
  disk stores none); a second edged enroll waits up to 10 s for the first.
forgetting: --forget removes the person's crops, folders, temp and cache files. On an
  SD card or other flash storage the removed bytes may survive (wear levelling): for
  real erasure keep the store on an encrypted disk. A model trained from the store
  (edged-train ... STORE) still holds that person's face histograms: train it again.

exit status: 0 done; 2 bad command line (a person name, an unknown expression, --from
  without --person); 65 no face stored from some photo (none at all: nothing stored);
  66 the model file is missing or unusable, or --forget of someone not enrolled; 1 the
  store cannot be written (full disk, another edged enroll running); 78 bad
  configuration.

examples:
  edged enroll --from me-smiling.jpg me-laughing.jpg --person alice --expression happy
  edged enroll --from photos/sad-*.jpg --person alice --expression sad --model trainer.yml
  edged enroll --list
  edged enroll --forget alice --store /var/lib/edged/enrolled
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "enroll",
        help="store the faces of the people the camera sees (per person and expression)",
        description=textwrap.fill(
            "Keep face crops of the people this camera sees, per person and expression, "
            "in the enrollment store (enroll.store of the configuration): add them from "
            "photos, list them, or forget a person.",
            88,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--from", dest="photos", nargs="+", type=Path, metavar="PHOTO", help="photos to enroll"
    )
    action.add_argument("--list", action="store_true", help="who is enrolled, with counts")
    action.add_argument("--forget", metavar="PERSON", help="remove everything of PERSON")
    p.add_argument("--person", metavar="NAME", help="whose face the photos show (with --from)")
    p.add_argument(
        "--expression", metavar="CLASS", help="the expression the photos show (with --from)"
    )
    p.add_argument(
        "--store",
        type=Path,
        metavar="DIR",
        help="the enrollment store (default: enroll.store of the configuration: "
        "'enrolled' beside model.path)",
    )
    p.add_argument(
        "-m",
        "--model",
        type=Path,
        help="the model whose classes and face preparation to use (with --from)",
    )
    p.add_argument("--json", action="store_true", help="with --list: one JSON object")
    p.add_argument("-c", "--config", type=Path, metavar="FILE", help="edged TOML configuration")
    add_max_pixels_option(p)
    p.set_defaults(func=run)


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line beyond argparse's own checks, or None."""
    if args.photos is not None:
        if not args.person or not args.expression:
            return "--from needs --person and --expression"
        return person_problem(args.person)
    if args.person is not None or args.expression is not None or args.model is not None:
        return "--person, --expression and --model go with --from"
    if args.json and not args.list:
        return "--json goes with --list"
    if args.forget is not None:
        return person_problem(args.forget)
    return None


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    problem = usage_problem(args)
    if problem:
        print(f"edged enroll: error: {problem}", file=err)
        return ExitStatus.USAGE
    settings = load_settings(args.config)
    store_dir = args.store or settings.enroll.store
    assert store_dir is not None  # filled in by the settings
    store = EnrollmentStore(store_dir)
    if args.list:
        return list_store(store, as_json=args.json, out=out, err=err)
    if args.forget is not None:
        return forget(store, args.forget, out=out, err=err)
    return enroll(args, store, settings.model.max_bytes, out=out, err=err)


# --- --from ------------------------------------------------------------------------------


def enroll(
    args: argparse.Namespace, store: EnrollmentStore, max_bytes: int, *, out: TextIO, err: TextIO
) -> int:
    """Find, prepare and store the face of each photo; 65 if some photo gave none."""
    allowed: list[str] | None = None
    if args.model is not None:
        model = load_model(args.model, max_bytes=max_bytes)  # ModelError: exit 66
        allowed, config = model.class_names(), model.preprocessor.config
    else:
        config = store.prepared_with() or PreprocessConfig()
    try:
        expression = check_expression(args.expression, allowed)
    except ValueError as e:
        print(f"edged enroll: error: {e}", file=err)
        return ExitStatus.USAGE
    detector, pre = PhotoDetector(IMAGE_DETECTOR), Preprocessor(config)  # as training does
    crops: list[Gray] = []
    for photo in args.photos:
        crop, line = face_of(photo, detector, pre, args.max_pixels)
        if crop is None:
            print(f"edged enroll: {line}", file=err)
        else:
            print(line, file=out)
            crops.append(crop)
    refused = len(args.photos) - len(crops)
    if not crops:
        print(
            f"edged enroll: error: no face in any of the {len(args.photos)} photos: nothing stored",
            file=err,
        )
        return ExitStatus.DATAERR
    written = store.add(args.person, expression, crops, config)  # StoreError: exit 1
    print(stored_line(store, args.person, expression, len(crops), len(written)), file=out)
    if refused:
        print(
            f"edged enroll: {refused} of {len(args.photos)} photos were not stored (no face, "
            "or unreadable); the others are",
            file=err,
        )
        return ExitStatus.DATAERR
    return ExitStatus.OK


def face_of(
    photo: Path, detector: FaceDetector, pre: Preprocessor, max_pixels: int
) -> tuple[Gray | None, str]:
    """The prepared largest face of ``photo`` (None if it has none or cannot be read)
    and the line that says what happened."""
    try:
        image = read_image(photo, max_pixels)
    except ImageUnreadable as e:
        return None, f"{photo}: cannot be read ({e.reason or 'not an image'}): not stored"
    gray = to_gray(image)
    boxes = detector.detect(gray)
    if not boxes:
        return None, f"{photo}: no face found: not stored"
    b = boxes[0]
    which = f"{len(boxes)} faces, using the largest" if len(boxes) > 1 else "face"
    return pre(gray, b).copy(), f"{photo}: {which} ({b.w}x{b.h} at {b.x},{b.y})"


def stored_line(
    store: EnrollmentStore, person: str, expression: str, faces: int, written: int
) -> str:
    """``stored 3 faces of alice / happy in DIR (alice: happy 3, sad 2)``."""
    counts = store.summary().get(person, {})
    totals = ", ".join(f"{e} {n}" for e, n in counts.items())
    again = faces - written
    more = f", {again} already there (the same crop)" if again else ""
    noun = "face" if written == 1 else "faces"
    return (
        f"stored {written} {noun} of {person} / {expression} in {store.root}{more} "
        f"({person}: {totals})"
    )


# --- --list and --forget -----------------------------------------------------------------


def list_store(store: EnrollmentStore, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Who is enrolled: a table (persons by expressions) or one JSON object."""
    contents = store.scan()
    for warning in contents.warnings:
        print(f"edged enroll: warning: {warning}", file=err)
    summary = store.summary()
    if as_json:
        prepared = store.prepared_with()
        body = {
            "store": str(store.root),
            "version": store.version(),
            "prepared": dataclasses.asdict(prepared) if prepared else None,
            "persons": summary,
        }
        print(json.dumps(body), file=out)
    elif not summary:
        print(f"nobody is enrolled in {store.root}", file=out)
    else:
        print(table(summary), file=out)
        faces = sum(sum(per.values()) for per in summary.values())
        print(f"{len(summary)} persons, {faces} faces in {store.root}", file=out)
    return ExitStatus.OK


def table(summary: dict[str, dict[str, int]]) -> str:
    """Persons down, expressions across (known classes in their usual order), totals."""
    seen = {e for per in summary.values() for e in per}
    order = [c for c in KNOWN_CLASSES if c in seen] + sorted(seen - set(KNOWN_CLASSES))
    head = ["person", *order, "total"]
    rows = [
        [p, *(str(per.get(e, 0)) for e in order), str(sum(per.values()))]
        for p, per in summary.items()
    ]
    width = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, width, strict=True))
        )
        for r in (head, *rows)
    ]
    return "\n".join(lines)


def forget(store: EnrollmentStore, person: str, *, out: TextIO, err: TextIO) -> int:
    """Remove a person, and say what was removed and what removal cannot promise."""
    before = store.summary().get(person, {})
    removed = store.forget(person)  # UnknownPerson: exit 66
    detail = ", ".join(f"{e} {n}" for e, n in before.items()) or "no faces"
    print(f"forgot {person}: removed {removed} files from {store.root} ({detail})", file=out)
    print(
        "edged enroll: note: on an SD card or flash drive the removed bytes may survive "
        "(wear levelling); a model file made from the store (edged-train ... STORE) "
        "still holds their face crops",
        file=err,
    )
    return ExitStatus.OK
