"""Labelled face datasets in the three layouts users have, read into one list of samples.

- ``lists``: the workshop's ``images/`` plus one ``<class>.txt`` of file names per class;
- ``legend``: the dataset's own ``data/legend.csv`` (``user.id,image,emotion``);
- ``folders``: one folder of images per class.

Only file names and labels are read here (no image decoding): the trainer decides
what a missing, unreadable or faceless image means. Label spellings are normalised
(``happiness``, ``SADNESS`` → ``happy``, ``sad``) so every layout yields the same names.
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edged.errors import DatasetError
from edged.vision.model import WORKSHOP_CLASSES

Layout = Literal["lists", "legend", "folders"]

# The workshop's five classes in its id order (0 anger, 1 happy, 2 sad, 3 neutral,
# 4 surprise), so an edged model keeps the ids an old subscriber knows.
DEFAULT_CLASSES: tuple[str, ...] = WORKSHOP_CLASSES

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)

_ALIASES = {
    "angry": "anger",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "neutrality": "neutral",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "contemptuous": "contempt",
}
_PERSON = re.compile(r"^(.+?)_\d+$")


def normalize_label(name: str) -> str:
    """The class name for a label as some dataset spells it (``HAPPINESS`` → ``happy``).

    Unknown names are kept (lower-cased): a user may train classes of their own.
    """
    key = name.strip().lower().replace(" ", "_")
    return _ALIASES.get(key, key)


def parse_classes(text: str) -> tuple[str, ...]:
    """``--classes anger,Happiness`` → ``("anger", "happy")``; duplicates and blanks refused."""
    names = [normalize_label(p) for p in text.split(",")]
    if any(not n for n in names):
        raise DatasetError(f"--classes {text!r} has an empty class name")
    dup = [n for n, k in Counter(names).items() if k > 1]
    if dup:
        raise DatasetError(f"--classes {text!r} names {', '.join(dup)} twice")
    return tuple(names)


def person_of(path: Path | str) -> str:
    """Who is in a photo: the name before its last ``_digits`` (``Ann_Lee_0003`` → ``Ann_Lee``).

    Evaluation splits by this, so one person's photos never sit on both sides.
    """
    stem = Path(path).stem
    m = _PERSON.match(stem)
    return m.group(1) if m else stem


def person_folds(persons: Sequence[str], k: int, seed: int = 0) -> list[list[int]]:
    """Indices into ``persons`` split into at most ``k`` folds, each person inside one fold.

    People are dealt largest first (ties in a seeded random order) to the fold that is
    currently smallest, so folds come out near equal in size even when one person has a
    hundred photos. With fewer people than ``k`` there are as many folds as people: no
    fold is ever empty. Evaluation (outer folds) and fitting (inner folds) both use this.
    """
    by_person: dict[str, list[int]] = {}
    for i, person in enumerate(persons):
        by_person.setdefault(person, []).append(i)
    people = sorted(by_person)
    random.Random(seed).shuffle(people)
    people.sort(key=lambda p: len(by_person[p]), reverse=True)  # stable: keeps shuffled ties
    folds: list[list[int]] = [[] for _ in range(min(k, len(people)))]
    for person in people:
        min(folds, key=len).extend(by_person[person])  # the first of the smallest
    return [sorted(f) for f in folds if f]


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


@dataclass(frozen=True, slots=True)
class Sample:
    path: Path
    label: str
    person: str


@dataclass
class Dataset:
    """The samples of the requested classes, plus what the labels named but the disk lacks.

    ``listed`` counts every entry per class, found or not; ``missing`` holds the names
    that do not exist; ``conflicts`` the images given two different classes (left out).
    """

    root: Path
    layout: Layout
    classes: tuple[str, ...]
    samples: list[Sample]
    listed: dict[str, int]
    missing: dict[str, list[str]] = field(default_factory=dict)
    conflicts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    available: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def missing_count(self) -> int:
        return sum(len(v) for v in self.missing.values())


# --- layout discovery -------------------------------------------------------------------


def _list_files(root: Path) -> dict[str, Path]:
    """Class name → list file, for the ``lists`` layout (``images/`` + ``<class>.txt``)."""
    if not (root / "images").is_dir():
        return {}
    out: dict[str, Path] = {}
    for p in sorted(root.glob("*.txt")):
        if p.is_file() and not p.name.startswith("."):
            out.setdefault(normalize_label(p.stem), p)
    return out


def _legend_file(root: Path) -> Path | None:
    for p in (root / "data" / "legend.csv", root / "legend.csv"):
        if p.is_file():
            return p
    return None


def _class_folders(root: Path) -> dict[str, Path]:
    """Class name → folder, for the ``folders`` layout: sub-folders holding images."""
    out: dict[str, Path] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(is_image_name(f) for f in d.rglob("*") if f.is_file()):
            out.setdefault(normalize_label(d.name), d)
    return out


def _legend_rows(path: Path) -> list[tuple[str, str]]:
    """(image, class) pairs from a legend CSV, with the dataset's label spellings normalised."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            try:
                i_img, i_emo = header.index("image"), header.index("emotion")
            except ValueError:
                raise DatasetError(
                    f"{path} has no 'image' and 'emotion' columns in its header "
                    f"(found: {', '.join(header) or 'nothing'})"
                ) from None
            rows = []
            for line, row in enumerate(reader, start=2):
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) <= max(i_img, i_emo):
                    raise DatasetError(f"{path}:{line}: expected {len(header)} columns: {row!r}")
                rows.append((row[i_img].strip(), normalize_label(row[i_emo])))
            return rows
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise DatasetError(f"{path} is not valid CSV: {e}") from None


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"list file {path} is not UTF-8 text ({e.reason})") from None
    lines = (ln.strip() for ln in text.splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def available_layouts(root: Path) -> dict[Layout, tuple[str, ...]]:
    """Each layout present under ``root`` with the classes it offers (cheap: no images read)."""
    found: dict[Layout, tuple[str, ...]] = {}
    lists = _list_files(root)
    if lists:
        found["lists"] = tuple(lists)
    legend = _legend_file(root)
    if legend is not None:
        found["legend"] = tuple(sorted({c for _, c in _legend_rows(legend)}))
    folders = _class_folders(root)
    if found:  # images/ of the lists or legend layout is not a class
        folders.pop("images", None)
    if folders:
        found["folders"] = tuple(folders)
    return found


def choose_layout(root: Path, classes: tuple[str, ...], layout: str = "auto") -> Layout:
    """The layout to read: the one asked for, or the first of lists, legend, folders that
    has every requested class (so ``--classes happy,disgust`` on the workshop dataset
    reads its legend, which alone has disgust)."""
    found = available_layouts(root)
    if layout != "auto":
        if layout not in found:
            raise DatasetError(f"{root} has no {layout} layout ({_describe(found)})")
        return layout
    if not found:
        raise DatasetError(
            f"{root} holds no dataset: expected images/ with <class>.txt lists, "
            "data/legend.csv, or one folder of images per class"
        )
    for name, offered in found.items():
        if set(classes) <= set(offered):
            return name
    everywhere = {c for offered in found.values() for c in offered}
    unknown = [c for c in classes if c not in everywhere]
    if unknown:
        raise DatasetError(
            f"unknown class {', '.join(repr(c) for c in unknown)}: {root} has "
            f"{', '.join(sorted(everywhere))}"
        )
    raise DatasetError(
        f"no single layout of {root} has all of {', '.join(classes)} ({_describe(found)})"
    )


def _describe(found: dict[Layout, tuple[str, ...]]) -> str:
    if not found:
        return "found no lists, legend or class folders"
    return "found: " + "; ".join(f"{k} ({', '.join(v)})" for k, v in found.items())


# --- reading ----------------------------------------------------------------------------


def load_dataset(
    root: Path | str,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    layout: str = "auto",
) -> Dataset:
    """Read a dataset's labels; raises `DatasetError` for a missing folder or unknown class.

    Files named by the labels but absent on disk are returned in ``missing``, not
    raised: whether that is fatal is the caller's choice (``--skip-missing``).
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset {root} is not a folder")
    classes = tuple(normalize_label(c) for c in classes)
    chosen = choose_layout(root, classes, layout)
    entries: dict[str, list[Path]]
    sources: dict[str, str]
    if chosen == "lists":
        files = _list_files(root)
        offered = tuple(files)
        _check_classes(root, chosen, classes, offered)
        entries = {c: [root / "images" / n for n in _read_list(files[c])] for c in classes}
        sources = {c: files[c].name for c in classes}
    elif chosen == "legend":
        legend = _legend_file(root)
        assert legend is not None
        rows = _legend_rows(legend)
        offered = tuple(sorted({c for _, c in rows}))
        _check_classes(root, chosen, classes, offered)
        entries = {c: [] for c in classes}
        for name, cls in rows:
            if cls in entries:
                entries[cls].append(root / "images" / name)
        sources = {c: str(legend.relative_to(root)) for c in classes}
    else:
        folders = _class_folders(root)
        offered = tuple(folders)
        _check_classes(root, chosen, classes, offered)
        entries = {
            c: sorted(f for f in folders[c].rglob("*") if f.is_file() and is_image_name(f))
            for c in classes
        }
        sources = {c: folders[c].name + "/" for c in classes}
    return _assemble(
        root=root,
        layout=chosen,
        classes=classes,
        entries=entries,
        offered=offered,
        sources=sources,
    )


def _check_classes(
    root: Path, layout: Layout, classes: tuple[str, ...], offered: tuple[str, ...]
) -> None:
    unknown = [c for c in classes if c not in offered]
    if unknown:
        raise DatasetError(
            f"unknown class {', '.join(repr(c) for c in unknown)}: the {layout} layout of "
            f"{root} has {', '.join(offered) or 'no classes'}"
        )


def _assemble(
    *,
    root: Path,
    layout: Layout,
    classes: tuple[str, ...],
    entries: dict[str, list[Path]],
    offered: tuple[str, ...],
    sources: dict[str, str],
) -> Dataset:
    """Samples from the class entries: duplicates merged, contradicting labels left out."""
    labels_of: dict[Path, set[str]] = {}
    for cls, paths in entries.items():
        for p in paths:
            labels_of.setdefault(p, set()).add(cls)
    conflicts = {
        str(p.relative_to(root)) if p.is_relative_to(root) else str(p): tuple(sorted(ls))
        for p, ls in labels_of.items()
        if len(ls) > 1
    }
    listed: dict[str, int] = {}
    missing: dict[str, list[str]] = {}
    samples: list[Sample] = []
    for cls in classes:
        seen: set[Path] = set()
        listed[cls] = 0
        for p in entries[cls]:
            if p in seen:
                continue
            seen.add(p)
            listed[cls] += 1
            if len(labels_of[p]) > 1:
                continue
            if not p.is_file():
                missing.setdefault(cls, []).append(p.name)
                continue
            samples.append(Sample(p, cls, person_of(p)))
    return Dataset(
        root=root,
        layout=layout,
        classes=classes,
        samples=samples,
        listed=listed,
        missing=missing,
        conflicts=conflicts,
        available=offered,
        sources=sources,
    )
