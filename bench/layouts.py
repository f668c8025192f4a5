"""Compare layouts on the same photos: ``python -m bench.layouts`` (issue 15).

The workshop dataset labels its photos twice: five list files (1018 photos) and
``data/legend.csv`` (2129 usable photos: the same ones plus 1112 more, mostly happy and
neutral). Does more data help? Every row is scored on the *same* photos, the lists
layout's, with the *same* person-grouped folds (made from those photos alone):

- ``lists alone``: trained on the other folds' lists photos (today's ``edged-train --eval``);
- ``legend (on the lists photos)``: trained on the legend's photos only, minus every
  person and near-duplicate of the tested fold (a legend model judged on the lists photos);
- ``lists + legend``: the lists photos of the other folds, plus the photos only the legend
  has (``edged-train DS DS --layout lists --layout legend --eval-on 1``).

The tested photos are the lists photos that survive the merge (a photo that the legend
labels with two classes is left out of every row). Photos are read, fingerprinted and
their faces found by `edged.training.trainer.extract_faces`, as ``edged-train`` does,
and cached under ``--cache`` (default /tmp/edged-layouts-cache), so a rerun only trains.
Target (issue 15): with more data, balanced accuracy on these photos >= the lists
layout's, and every class >= 40% recall.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edged.training import datasets as datasets_module
from edged.training import fitting, trainer
from edged.training.datasets import Collection, Dataset, Sample, load_dataset
from edged.training.evaluate import EvalReport, cross_validate, edged_pipeline
from edged.vision import detector as detector_module
from edged.vision import pipeline as pipeline_module
from edged.vision import preprocess as preprocess_module
from edged.vision.detector import IMAGE_DETECTOR, FaceDetector
from edged.vision.preprocess import Preprocessor

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT.parent / "shared" / "datasets" / "facial_expressions"
CLASSES = ("anger", "happy", "sad", "neutral", "surprise")
TARGET_RECALL = 0.40


def note(msg: str) -> None:
    print(f"[layouts] {msg}", file=sys.stderr, flush=True)


def _cache_key(photos: Collection, cfg: fitting.FitConfig) -> str:
    """The photos, and the code and settings that make faces and fingerprints from them:
    a change to any invalidates the cache."""
    code = "".join(
        inspect.getsource(m)
        for m in (detector_module, preprocess_module, pipeline_module, datasets_module)
    )
    names = "\n".join(str(s.path) for s in photos.samples)
    parts = (names, code, cv2.__version__, IMAGE_DETECTOR, cfg.preprocess)
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def faces_of(photos: Collection, cfg: fitting.FitConfig, cache: Path) -> trainer.FaceSet:
    """`trainer.extract_faces` on every photo, from the cache when it is there."""
    path = cache / f"faces-{_cache_key(photos, cfg)}.npz"
    if path.exists():
        return _load(path, photos, cfg)
    t0 = time.monotonic()
    bar = trainer.Progress("finding faces", len(photos.samples))
    pre = Preprocessor(cfg.preprocess)
    faces = trainer.extract_faces(photos, FaceDetector(IMAGE_DETECTOR), pre, bar)
    note(f"faces found in {time.monotonic() - t0:.0f} s; cached in {path}")
    readable = {s.path for s in faces.readable}
    size = cfg.preprocess.size
    found = np.array([faces.by_path.get(s.path) is not None for s in photos.samples])
    arrays = {
        "readable": np.array([s.path in readable for s in photos.samples]),
        "found": found,
        "faces": np.array(
            [
                f if (f := faces.by_path.get(s.path)) is not None else np.zeros((size, size))
                for s in photos.samples
            ],
            np.uint8,
        ),
        "prints": np.array(faces.prints, np.float32),
    }
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return faces


def _load(path: Path, photos: Collection, cfg: fitting.FitConfig) -> trainer.FaceSet:
    data = np.load(path)
    out = trainer.FaceSet(photos.classes)
    for i, s in enumerate(photos.samples):
        if data["readable"][i]:
            out.readable.append(s)
            out.by_path[s.path] = data["faces"][i] if data["found"][i] else None
    out.prints = list(data["prints"])
    note(f"faces from the cache {path}")
    return out


def row(name: str, rep: EvalReport, base: EvalReport | None, seconds: float) -> str:
    rec = rep.recalls()
    spread = rep.recall_spread()
    low = min(rep.classes, key=lambda c: rec[c])
    misses = [f"{c} {100 * rec[c]:.0f}%" for c in rep.classes if rec[c] < TARGET_RECALL]
    if base is None:
        target = "(the reference)"
    elif rep.balanced_accuracy >= base.balanced_accuracy and not misses:
        target = "met"
    else:
        parts = []
        if rep.balanced_accuracy < base.balanced_accuracy:
            parts.append(f"{100 * (rep.balanced_accuracy - base.balanced_accuracy):+.1f} points")
        parts += [f"{m} < 40%" for m in misses]
        target = "missed: " + ", ".join(parts)
    return (
        f"| {name} | {rep.train_images / rep.folds:.0f} | {rep.balanced_accuracy:.1%} | "
        + " / ".join(f"{100 * rec[c]:.0f}" for c in rep.classes)
        + f" | {low} {100 * rec[low]:.0f}% (folds {100 * spread[low][0]:.0f}-"
        f"{100 * spread[low][1]:.0f}%) | {rep.ece:.3f} | {target} | {seconds:.0f} s |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", type=Path, default=FULL, help="the workshop dataset folder")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "edged-layouts-cache",
        help="where detected faces and fingerprints are cached",
    )
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = fitting.FitConfig()
    lists = load_dataset(args.dataset, CLASSES, "lists")
    legend = load_dataset(args.dataset, CLASSES, "legend")
    photos = trainer.collect([lists, legend], CLASSES)
    faces = faces_of(photos, cfg, args.cache)
    trainer.assign_groups(faces, photos)
    items = faces.readable  # with their groups (people joined by near-duplicates)
    tested = [s for s in items if 0 in s.sources]
    from_legend = [s for s in items if 1 in s.sources]
    legend_only = [s for s in items if 0 not in s.sources]
    _header(lists, legend, photos, tested, legend_only, args.folds, len(faces.linked))
    train, predict = edged_pipeline(cfg, IMAGE_DETECTOR, faces=faces.by_path)
    runs: list[tuple[str, Sequence[Sample], bool]] = [
        ("lists alone", (), True),
        ("legend (on the lists photos)", from_legend, False),
        ("lists + legend", legend_only, True),
    ]
    base: EvalReport | None = None
    for name, extra, on_items in runs:
        t0 = time.monotonic()
        rep = cross_validate(
            tested,
            train,
            predict,
            folds=args.folds,
            seed=args.seed,
            classes=CLASSES,
            name=name,
            train_only=extra,
            train_on_items=on_items,
        )
        print(row(name, rep, base, time.monotonic() - t0), flush=True)
        base = base or rep
    return 0


def _header(
    lists: Dataset,
    legend: Dataset,
    photos: Collection,
    tested: Sequence[Sample],
    legend_only: Sequence[Sample],
    folds: int,
    linked: int,
) -> None:
    left_out = len(lists.samples) - len(tested)
    print(
        f"# Layouts compared on the same photos: {len(tested)} lists photos "
        f"({len({s.fold_group for s in tested})} people), {folds}-fold person-grouped CV\n"
    )
    print(
        f"lists: {len(lists.samples)} photos; legend: {len(legend.samples)} photos, "
        f"{len(legend_only)} of them not in the lists; {left_out} lists photo(s) left out "
        f"as labelled with two classes ({', '.join(photos.conflicts) or 'none'}); "
        f"{linked} near-duplicate pair(s) across people.\n"
    )
    print(
        "| training data | training photos per fold | balanced accuracy (lists photos) | "
        "recall " + " / ".join(CLASSES) + " % | lowest class | ECE | target | time |"
    )
    print("|---|---|---|---|---|---|---|---|")


if __name__ == "__main__":
    raise SystemExit(main())
