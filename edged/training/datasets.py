"""Labelled face datasets in the four layouts users have, read into one list of samples.

- ``lists``: the workshop's ``images/`` plus one ``<class>.txt`` of file names per class;
- ``legend``: the dataset's own ``data/legend.csv`` (``user.id,image,emotion``);
- ``folders``: one folder of images per class;
- ``enrolled``: a person level above the class folders, ``<person>/<class>/*.png``: an
  enrollment store (`edged.enrollment.store`, marked by its ``.edged-enrolled`` file:
  its crops are already prepared, ``Sample.prepared``), or any folder shaped so (every
  top-level folder holds only folders named after known classes: photos, not crops).

Only file names and labels are read here (no image decoding): the trainer decides
what a missing, unreadable or faceless image means. Label spellings are normalised
(``happiness``, ``SADNESS`` → ``happy``, ``sad``) so every layout yields the same names.

Several datasets (`load_datasets`, `merge`) are merged by class name. A photo is known
by its bytes (`content_keys`): the same bytes in two datasets count once, and the same
bytes under two classes are left out. Re-encoded or resized copies are not the same
bytes; `fingerprint` (of the decoded picture, which the trainer has in hand anyway) and
`near_duplicates` find them, and `group_people` puts their people in one group, so an
evaluation split never has such a copy on both sides.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import random
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edged.enrollment.store import (
    MARKER,
    EnrolledFace,
    EnrollmentStore,
    StoreError,
    is_crop_name,
)
from edged.errors import DatasetError
from edged.images import find_images, identity, is_image_name
from edged.labels import KNOWN_CLASSES, normalize_label
from edged.vision.detector import Gray
from edged.vision.model import WORKSHOP_CLASSES
from edged.vision.preprocess import PreprocessConfig

Layout = Literal["lists", "legend", "folders", "enrolled"]
# Every layout, in the order ``auto`` tries them (``--layout``'s choices, with ``auto``).
LAYOUTS: tuple[Layout, ...] = ("lists", "legend", "folders", "enrolled")

# The workshop's five classes in its id order (0 anger, 1 happy, 2 sad, 3 neutral,
# 4 surprise), so an edged model keeps the ids an old subscriber knows.
DEFAULT_CLASSES: tuple[str, ...] = WORKSHOP_CLASSES

_PERSON = re.compile(r"^(.+?)_\d+$")


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


def person_folds(
    persons: Sequence[str],
    k: int,
    seed: int = 0,
    labels: Sequence[object] | None = None,
) -> list[list[int]]:
    """Indices into ``persons`` split into at most ``k`` folds, each person inside one fold.

    People are dealt largest first (ties in a seeded random order) to the fold that is
    currently smallest, so folds come out near equal in size even when one person has a
    hundred photos. With fewer people than ``k`` there are as many folds as people: no
    fold is ever empty. Evaluation (outer folds) and fitting (inner folds) both use this.

    With ``labels``, a face weighs 1/(its class's count), exactly (fractions): sizes then
    do not depend on how many photos each class happens to have, so repeating a class's
    faces deals the people into the same folds (`edged.training.fitting`).
    """
    by_person: dict[str, list[int]] = {}
    for i, person in enumerate(persons):
        by_person.setdefault(person, []).append(i)
    weight = _face_weights(labels, len(persons))
    size = {p: sum((weight[i] for i in idx), Fraction(0)) for p, idx in by_person.items()}
    people = sorted(by_person)
    random.Random(seed).shuffle(people)
    people.sort(key=lambda p: size[p], reverse=True)  # stable: keeps shuffled ties
    folds: list[list[int]] = [[] for _ in range(min(k, len(people)))]
    load = [Fraction(0)] * len(folds)
    for person in people:
        j = load.index(min(load))  # the first of the smallest
        folds[j].extend(by_person[person])
        load[j] += size[person]
    return [sorted(f) for f in folds if f]


def _face_weights(labels: Sequence[object] | None, n: int) -> list[Fraction]:
    if labels is None:
        return [Fraction(1)] * n
    counts = Counter(labels)
    return [Fraction(1, counts[c]) for c in labels]


@dataclass(frozen=True, slots=True)
class Sample:
    """A labelled photo. ``sources``: the datasets (0-based, in the order given) that
    have this photo, the first one counting it; ``group``: who it must never be split
    from in evaluation ("" = its person alone; see `group_people`); ``prepared``: the
    file is a face crop already prepared as `Dataset.prepared_with` says (an enrollment
    store's), so no face is to be searched in it."""

    path: Path
    label: str
    person: str
    sources: tuple[int, ...] = (0,)
    group: str = ""
    prepared: bool = False

    @property
    def fold_group(self) -> str:
        return self.group or self.person


@dataclass
class Dataset:
    """The samples of the requested classes, plus what the labels named but the disk lacks.

    ``listed`` counts every entry per class, found or not; ``missing`` holds the names
    that do not exist; ``conflicts`` the images given two different classes (left out),
    whatever the names they were given under (a link or hard link is the same image);
    ``warnings`` what was left out of the layout and why (class folders that are links
    to the dataset or to another class, folder links that loop), one line each, for
    every reader of the dataset to report alike. ``prepared_with``: for an enrollment
    store, how its crops (``Sample.prepared``) were prepared; a model must prepare
    faces the same way to train on them.
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
    warnings: tuple[str, ...] = ()
    prepared_with: PreprocessConfig | None = None

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


@dataclass
class ClassFolders:
    """The ``folders`` layout: class name → folder and its images; what was left out."""

    folders: dict[str, Path] = field(default_factory=dict)
    images: dict[str, list[Path]] = field(default_factory=dict)
    # Class name → why its folder is left out; the warnings, one line each.
    left_out: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    loops: dict[str, list[str]] = field(default_factory=dict)


def _class_folders(root: Path) -> ClassFolders:
    """Sub-folders holding images, each a class; a folder that is a link to the dataset
    (or a folder above it) or that shares photos with another class folder is left out,
    with a warning: its photos would be trained under two labels."""
    candidates = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    left = _links_to_the_dataset(root, candidates)
    found = {d: find_images(d) for d in candidates if d not in left}
    left |= _links_to_another_class([d for d, f in found.items() if f.files])
    out = ClassFolders()
    for d in candidates:
        name = normalize_label(d.name)
        if d in left:
            out.left_out.setdefault(name, left[d])
            out.warnings.append(
                f"{d.name}/ {left[d]}: left out, or its photos would be trained under two labels"
            )
        elif found[d].files and name not in out.folders:
            out.folders[name] = d
            out.images[name] = found[d].files
            out.loops[name] = [
                f"{link.relative_to(root)} -> {os.readlink(link)} leads back to a folder above it "
                "or already searched: not followed"
                for link in found[d].loops
            ]
    return out


def _arrow(link: Path) -> str:
    return f"({link.name} -> {os.readlink(link)})"


def _links_to_the_dataset(root: Path, candidates: list[Path]) -> dict[Path, str]:
    """The folders that are links to the dataset itself or to a folder above it."""
    real_root = root.resolve()
    left: dict[Path, str] = {}
    for d in candidates:
        if d.is_symlink():
            real = d.resolve()
            if real == real_root:
                left[d] = f"is a link to the dataset folder itself {_arrow(d)}"
            elif real_root.is_relative_to(real):
                left[d] = f"is a link to a folder that holds the dataset {_arrow(d)}"
    return left


def _links_to_another_class(classes: list[Path]) -> dict[Path, str]:
    """The class folders that are links to the same folder as another class, into it or
    to a folder holding it: of two such folders the link is left out (both if both are)."""
    reals = {d: d.resolve() for d in classes}
    left: dict[Path, str] = {}
    for d in classes:
        if not d.is_symlink():
            continue
        for other in classes:
            if other == d or normalize_label(other.name) == normalize_label(d.name):
                continue
            why = _overlap(reals[d], reals[other], other.name)
            if why:
                left[d] = f"is a link {why} {_arrow(d)}"
                break
    return left


def _overlap(mine: Path, other: Path, name: str) -> str | None:
    if mine == other:
        return f"to the same folder as {name}/"
    if mine.is_relative_to(other):
        return f"into {name}/"
    if other.is_relative_to(mine):
        return f"to a folder that holds {name}/"
    return None


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


# --- the enrolled layout: <person>/<class>/ ------------------------------------------------


def _class_order(name: str) -> tuple[int, str]:
    """Known classes in their usual order, then the others by name."""
    known = KNOWN_CLASSES.index(name) if name in KNOWN_CLASSES else len(KNOWN_CLASSES)
    return known, name


def _marked(root: Path) -> bool:
    """Whether ``root`` is an enrollment store (its marker file, not a link to one)."""
    return (root / MARKER).is_file() and not (root / MARKER).is_symlink()


def _shaped_enrolled(root: Path) -> bool:
    """Whether ``root`` has a person level above class folders, without a marker: every
    top-level folder holds only folders named after known classes (after normalising),
    and none is itself a class (that is the folders layout's ``happy/2020/``, not a
    person). Links are not looked at: the store never follows them."""
    people = [d for d in sorted(root.iterdir()) if not d.name.startswith(".") and _real_folder(d)]
    if not people:
        return False
    for person in people:
        if normalize_label(person.name) in KNOWN_CLASSES:
            return False
        inside = [e for e in person.iterdir() if not e.name.startswith(".")]
        if not inside:
            return False
        for e in inside:
            if not _real_folder(e) or normalize_label(e.name) not in KNOWN_CLASSES:
                return False
    return True


def _real_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _enrolled_classes(root: Path) -> tuple[str, ...] | None:
    """The classes of the enrolled layout of ``root``, or None if it has none."""
    if not _marked(root) and not _shaped_enrolled(root):
        return None
    faces = _enrolled_faces(root)[0]
    return tuple(sorted({normalize_label(f.expression) for f in faces}, key=_class_order))


def _enrolled_faces(
    root: Path,
) -> tuple[list[EnrolledFace], list[str], PreprocessConfig | None]:
    """The store's crops (a marked store: its ``.png`` files) or the shaped folder's
    photos, the scan's warnings, and how the crops were prepared (None: photos)."""
    store = EnrollmentStore(root)
    try:
        prepared = store.prepared_with() if _marked(root) else None
    except StoreError as e:
        raise DatasetError(str(e)) from None
    found = store.scan(is_crop_name if prepared else lambda n: is_image_name(Path(n)))
    return found.faces, found.warnings, prepared


def _read_enrolled(root: Path, classes: tuple[str, ...]) -> _Entries:
    faces, warnings, prepared = _enrolled_faces(root)
    entries: dict[str, list[Path]] = {c: [] for c in classes}
    persons: dict[Path, str] = {}
    for f in faces:
        label = normalize_label(f.expression)
        if label in entries:
            entries[label].append(f.path)
            persons[f.path] = f.person
    offered = tuple(sorted({normalize_label(f.expression) for f in faces}, key=_class_order))
    _check_classes(root, "enrolled", classes, offered)
    return _Entries(
        entries=entries,
        offered=offered,
        sources={c: f"*/{c}/" for c in classes},
        warnings=tuple(warnings),
        persons=persons,
        prepared_with=prepared,
    )


def available_layouts(root: Path) -> dict[Layout, tuple[str, ...]]:
    """Each layout present under ``root`` with the classes it offers (cheap: no images read).

    An enrolled layout hides the folders layout: its top-level folders are people, not
    classes.
    """
    found: dict[Layout, tuple[str, ...]] = {}
    lists = _list_files(root)
    if lists:
        found["lists"] = tuple(lists)
    legend = _legend_file(root)
    if legend is not None:
        found["legend"] = tuple(sorted({c for _, c in _legend_rows(legend)}))
    enrolled = _enrolled_classes(root)
    folders = {} if enrolled is not None else _class_folders(root).folders
    if found:  # images/ of the lists or legend layout is not a class
        folders.pop("images", None)
    if folders:
        found["folders"] = tuple(folders)
    if enrolled:
        found["enrolled"] = enrolled
    return found


def choose_layout(
    root: Path, classes: tuple[str, ...], layout: str = "auto", partial: bool = False
) -> Layout:
    """The layout to read: the one asked for, or the first of lists, legend, folders that
    has every requested class (so ``--classes happy,disgust`` on the workshop dataset
    reads its legend, which alone has disgust). With ``partial`` (one of several
    datasets), failing that, the layout with the most of them (the first on a tie)."""
    found = available_layouts(root)
    if layout != "auto":
        if layout not in found:
            raise DatasetError(f"{root} has no {layout} layout ({_describe(found)})")
        return layout
    if not found:
        raise DatasetError(
            f"{root} holds no dataset: expected images/ with <class>.txt lists, "
            "data/legend.csv, one folder of images per class, or an enrollment store "
            "(<person>/<class>/)"
        )
    for name, offered in found.items():
        if set(classes) <= set(offered):
            return name
    if partial:
        return _most_classes(root, classes, found)
    everywhere = {c for offered in found.values() for c in offered}
    unknown = [c for c in classes if c not in everywhere]
    if unknown:
        raise DatasetError(
            f"unknown class {', '.join(repr(c) for c in unknown)}: {root} has "
            f"{', '.join(sorted(everywhere))}"
            + _why_left_out(unknown, _class_folders(root).left_out)
        )
    raise DatasetError(
        f"no single layout of {root} has all of {', '.join(classes)} ({_describe(found)})"
    )


def _most_classes(
    root: Path, classes: tuple[str, ...], found: dict[Layout, tuple[str, ...]]
) -> Layout:
    best = max(found, key=lambda name: len(set(classes) & set(found[name])))
    if not set(classes) & set(found[best]):
        raise DatasetError(
            f"{root} has none of the classes {', '.join(classes)} ({_describe(found)})"
        )
    return best


def _describe(found: dict[Layout, tuple[str, ...]]) -> str:
    if not found:
        return "found no lists, legend or class folders"
    return "found: " + "; ".join(f"{k} ({', '.join(v)})" for k, v in found.items())


# --- reading ----------------------------------------------------------------------------


def load_dataset(
    root: Path | str,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    layout: str = "auto",
    partial: bool = False,
) -> Dataset:
    """Read a dataset's labels; raises `DatasetError` for a missing folder or unknown class.

    Files named by the labels but absent on disk are returned in ``missing``, not
    raised: whether that is fatal is the caller's choice (``--skip-missing``). With
    ``partial`` (one dataset of several) the layout may have only some of ``classes``:
    the dataset's ``classes`` are then those it has, in the order asked.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset {root} is not a folder")
    classes = tuple(normalize_label(c) for c in classes)
    chosen = choose_layout(root, classes, layout, partial)
    if partial:
        offered = available_layouts(root)[chosen]
        classes = tuple(c for c in classes if c in offered)
        if not classes:
            raise DatasetError(
                f"the {chosen} layout of {root} has none of the classes asked for "
                f"(it has {', '.join(offered)})"
            )
    readers = {
        "lists": _read_lists,
        "legend": _read_legend,
        "folders": _read_folders,
        "enrolled": _read_enrolled,
    }
    read = readers[chosen](root, classes)
    return _assemble(root=root, layout=chosen, classes=classes, read=read)


@dataclass
class _Entries:
    """What a layout names per class, before the disk is asked about any of it."""

    entries: dict[str, list[Path]]
    offered: tuple[str, ...]
    sources: dict[str, str]
    warnings: tuple[str, ...] = ()
    # The enrolled layout: who each photo shows (its folder), how its crops were prepared.
    persons: dict[Path, str] = field(default_factory=dict)
    prepared_with: PreprocessConfig | None = None


def _read_lists(root: Path, classes: tuple[str, ...]) -> _Entries:
    files = _list_files(root)
    _check_classes(root, "lists", classes, tuple(files))
    return _Entries(
        entries={c: [root / "images" / n for n in _read_list(files[c])] for c in classes},
        offered=tuple(files),
        sources={c: files[c].name for c in classes},
    )


def _read_legend(root: Path, classes: tuple[str, ...]) -> _Entries:
    legend = _legend_file(root)
    assert legend is not None
    rows = _legend_rows(legend)
    offered = tuple(sorted({c for _, c in rows}))
    _check_classes(root, "legend", classes, offered)
    entries: dict[str, list[Path]] = {c: [] for c in classes}
    for name, cls in rows:
        if cls in entries:
            entries[cls].append(root / "images" / name)
    return _Entries(entries, offered, {c: str(legend.relative_to(root)) for c in classes})


def _read_folders(root: Path, classes: tuple[str, ...]) -> _Entries:
    found = _class_folders(root)
    offered = tuple(found.folders)
    _check_classes(root, "folders", classes, offered, found.left_out)
    loops = [line for c in classes for line in found.loops[c]]
    return _Entries(
        entries={c: found.images[c] for c in classes},
        offered=offered,
        sources={c: found.folders[c].name + "/" for c in classes},
        warnings=(*found.warnings, *loops),
    )


def _check_classes(
    root: Path,
    layout: Layout,
    classes: tuple[str, ...],
    offered: tuple[str, ...],
    left_out: dict[str, str] | None = None,
) -> None:
    unknown = [c for c in classes if c not in offered]
    if unknown:
        raise DatasetError(
            f"unknown class {', '.join(repr(c) for c in unknown)}: the {layout} layout of "
            f"{root} has {', '.join(offered) or 'no classes'}" + _why_left_out(unknown, left_out)
        )


def _why_left_out(unknown: Sequence[str], left_out: dict[str, str] | None) -> str:
    """``; fear/ was left out: it is a link to ...`` for requested classes whose folder was."""
    why = [f"; {c}/ was left out: it {left_out[c]}" for c in unknown if left_out and c in left_out]
    return "".join(why)


# A file as `_assemble` knows it: its (device, inode), or its path when it does not exist.
_Key = tuple[int, int] | Path


def _assemble(*, root: Path, layout: Layout, classes: tuple[str, ...], read: _Entries) -> Dataset:
    """Samples from the class entries: duplicates merged, contradicting labels left out.

    An image is known by its file (device and inode), not its name: the same photo
    reached through a link or a hard link under two classes is a contradiction too.
    """
    stats = {p: _stat(p) for paths in read.entries.values() for p in paths}
    key: dict[Path, _Key] = {p: identity(st) if st else p for p, st in stats.items()}
    labels_of: dict[_Key, set[str]] = {}
    named: dict[_Key, Path] = {}
    for cls, paths in read.entries.items():
        for p in paths:
            labels_of.setdefault(key[p], set()).add(cls)
            named.setdefault(key[p], p)
    conflicts = {
        _shown(root, named[k]): tuple(sorted(ls)) for k, ls in labels_of.items() if len(ls) > 1
    }
    listed: dict[str, int] = {}
    missing: dict[str, list[str]] = {}
    samples: list[Sample] = []
    for cls in classes:
        seen: set[_Key] = set()
        listed[cls] = 0
        for p in read.entries[cls]:
            if key[p] in seen:
                continue
            seen.add(key[p])
            listed[cls] += 1
            if len(labels_of[key[p]]) > 1:
                continue
            st = stats[p]
            if st is None or not stat.S_ISREG(st.st_mode):
                missing.setdefault(cls, []).append(p.name)
                continue
            person = read.persons.get(p) or person_of(p)
            samples.append(Sample(p, cls, person, prepared=read.prepared_with is not None))
    return Dataset(
        root=root,
        layout=layout,
        classes=classes,
        samples=samples,
        listed=listed,
        missing=missing,
        conflicts=conflicts,
        available=read.offered,
        sources=read.sources,
        warnings=read.warnings,
        prepared_with=read.prepared_with,
    )


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _shown(root: Path, path: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


# --- several datasets -------------------------------------------------------------------


class RepeatedDataset(DatasetError):
    """The same folder given twice with the same layout: a mistake on the command line."""


def load_datasets(
    specs: Sequence[tuple[Path | str, str]], classes: tuple[str, ...] = DEFAULT_CLASSES
) -> list[Dataset]:
    """Read each ``(folder, layout)`` in turn (``layout`` may be ``auto``).

    One dataset is read exactly as `load_dataset` reads it. Of several, each may have
    only some of the classes (``partial``), but every class must be in one of them; an
    error names the dataset by its number. The same folder may be given twice only with
    two different layouts (the workshop dataset's lists and its legend).
    """
    classes = tuple(normalize_label(c) for c in classes)
    if len(specs) == 1:
        return [load_dataset(specs[0][0], classes, specs[0][1])]
    parts: list[Dataset] = []
    seen: dict[tuple[Path, Layout], int] = {}
    for n, (root, layout) in enumerate(specs, start=1):
        try:
            ds = load_dataset(root, classes, layout, partial=True)
        except DatasetError as e:
            raise DatasetError(f"dataset {n}: {e}") from None
        key = (ds.root.resolve(), ds.layout)
        if key in seen:
            raise RepeatedDataset(
                f"dataset {n} ({root}) is dataset {seen[key]} again, with the same layout "
                f"({ds.layout}): give each one its own --layout, or leave one out"
            )
        seen[key] = n
        parts.append(ds)
    lacking = [c for c in classes if not any(c in ds.classes for ds in parts)]
    if lacking:
        have = "; ".join(
            f"{n}: {ds.layout} of {ds.root} has {', '.join(ds.available)}"
            for n, ds in enumerate(parts, start=1)
        )
        raise DatasetError(
            f"unknown class {', '.join(repr(c) for c in lacking)}: no dataset has it ({have})"
        )
    return parts


def photos_of(parts: Sequence[Dataset]) -> list[Path]:
    """Every photo `merge` needs a content key for: the samples, and the photos left out
    for two labels that are on disk (the same bytes elsewhere are contradicted too)."""
    out = {s.path: None for ds in parts for s in ds.samples}
    for ds in parts:
        for name in ds.conflicts:
            path = ds.root / name
            if path.is_file():
                out.setdefault(path, None)
    return list(out)


def content_keys(
    paths: Sequence[Path], progress: Callable[[int, int], None] | None = None
) -> dict[Path, str]:
    """A key per file, equal for two files exactly when their bytes are.

    Cheap: a file whose size no other file here has can have no twin, so it is known
    by its (device, inode) and never read; only files of a shared size are hashed
    (SHA-256, once per file however many names it has). ``progress(done, total)``
    counts the files hashed.
    """
    stats: dict[Path, os.stat_result] = {}
    for p in paths:
        st = _stat(p)
        if st is not None:
            stats[p] = st
    files: dict[tuple[int, int], int] = {identity(st): st.st_size for st in stats.values()}
    sizes = Counter(files.values())
    digests: dict[tuple[int, int], str] = {}
    todo = [p for p, st in stats.items() if sizes[st.st_size] > 1]
    for n, p in enumerate(todo, start=1):
        fid = identity(stats[p])
        if fid not in digests:
            digests[fid] = _sha256(p)
        if progress is not None:
            progress(n, len(todo))
    keys: dict[Path, str] = {}
    for p in paths:
        st = stats.get(p)
        if st is None:
            keys[p] = f"path:{p}"
        else:
            fid = identity(st)
            keys[p] = digests.get(fid) or f"file:{fid[0]}:{fid[1]}"
    return keys


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return f"path:{path}"  # unreadable: the trainer says so when it reads it
    return "sha256:" + h.hexdigest()


@dataclass
class Collection:
    """Several datasets merged by class name, each photo once.

    ``samples``: the distinct photos (by bytes); a photo in several datasets is counted
    by the first (``Sample.sources[0]``) and the others list it in ``duplicate``.
    ``two_labels``: per dataset and class, the entries left out because the same bytes
    carry another class (here or in another dataset); ``conflicts`` names those photos.
    ``same_photo``: pairs of people whose names one photo carries (a copy renamed), for
    `group_people`.
    """

    classes: tuple[str, ...]
    parts: list[Dataset]
    duplicate: list[Counter[str]]
    two_labels: list[Counter[str]]
    samples: list[Sample] = field(default_factory=list)
    conflicts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    same_photo: list[tuple[str, str]] = field(default_factory=list)

    def shown(self, path: Path) -> str:
        """A photo's name as warnings show it: relative to its dataset with one dataset."""
        if len(self.parts) == 1:
            return _shown(self.parts[0].root, path)
        return str(path)


def merge(parts: Sequence[Dataset], keys: dict[Path, str], classes: tuple[str, ...]) -> Collection:
    """The datasets' samples, each photo (by ``keys``, from `content_keys`) once."""

    def key_of(path: Path) -> str:
        return keys.get(path, f"path:{path}")

    labels_of: dict[str, set[str]] = {}
    for ds in parts:
        for name, their in ds.conflicts.items():
            labels_of.setdefault(key_of(ds.root / name), set()).update(their)
        for s in ds.samples:
            labels_of.setdefault(key_of(s.path), set()).add(s.label)
    out = Collection(classes, list(parts), [Counter() for _ in parts], [Counter() for _ in parts])
    first: dict[str, int] = {}
    named: set[str] = set()  # the contradicted photos already named in ``conflicts``
    for k, ds in enumerate(parts):
        for name, their in ds.conflicts.items():
            out.two_labels[k].update(their)
            _name_conflict(out, named, key_of(ds.root / name), ds.root / name, labels_of)
        for s in ds.samples:
            key = key_of(s.path)
            if len(labels_of[key]) > 1:
                out.two_labels[k][s.label] += 1
                _name_conflict(out, named, key, s.path, labels_of)
            else:
                _add(out, k, s, key, first)
    return out


def _name_conflict(
    out: Collection, named: set[str], key: str, path: Path, labels_of: dict[str, set[str]]
) -> None:
    """Name a contradicted photo once, by the first name it was met under."""
    if key not in named:
        named.add(key)
        out.conflicts[out.shown(path)] = tuple(sorted(labels_of[key]))


def _add(out: Collection, k: int, s: Sample, key: str, first: dict[str, int]) -> None:
    """One dataset entry of a photo with one class: a new photo, or a repeat of one."""
    if key not in first:
        first[key] = len(out.samples)
        out.samples.append(dataclasses.replace(s, sources=(k,), group=""))
        return
    i = first[key]
    seen = out.samples[i]
    out.duplicate[k][s.label] += 1
    if k not in seen.sources:
        out.samples[i] = dataclasses.replace(seen, sources=(*seen.sources, k))
    if s.person != seen.person:
        out.same_photo.append((seen.person, s.person))


# --- near-duplicates: the same picture re-encoded or resized ---------------------------

# A fingerprint is the photo shrunk to 16x16 grey pixels (area average), less its mean,
# scaled to length 1; two photos are near-duplicates when their fingerprints' dot
# product (a correlation) is at least NEAR_DUPLICATE. Measured on the workshop dataset's
# 2363 photos: a copy re-encoded (JPEG quality 20-90) or resized (0.2x-2x, at least 64
# px) stays at >= 0.993; two different photos of different people reach 0.945 at most,
# of one person 0.986 (two frames of one video) and 0.9994 (the same picture twice).
# Binary hashes do worse on such face crops, all centred alike: a 64-bit DCT hash put
# different people 4 bits apart and a resized copy 6.
FINGERPRINT_SIZE = 16
NEAR_DUPLICATE = 0.98
Fingerprint = npt.NDArray[np.float32]


def fingerprint(gray: Gray) -> Fingerprint:
    """The decoded photo's fingerprint (see `NEAR_DUPLICATE`); a flat picture's is zero."""
    size = (FINGERPRINT_SIZE, FINGERPRINT_SIZE)
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    out: Fingerprint = small / norm if norm > 1e-6 else np.zeros_like(small)
    return out


def near_duplicates(
    prints: Sequence[Fingerprint],
    threshold: float = NEAR_DUPLICATE,
    progress: Callable[[int, int], None] | None = None,
    block: int = 512,
) -> list[tuple[int, int]]:
    """Pairs (i < j) of fingerprints at least ``threshold`` alike: every pair compared,
    a block of rows at a time (3000 photos: well under a second)."""
    if not len(prints):
        return []
    m = np.vstack(prints).astype(np.float32)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(m), block):
        sims = m[start : start + block] @ m[start:].T
        rows, cols = np.nonzero(sims >= threshold)
        pairs += [
            (start + int(r), start + int(c)) for r, c in zip(rows, cols, strict=True) if c > r
        ]
        if progress is not None:
            progress(min(start + block, len(m)), len(m))
    return pairs


def group_people(persons: Iterable[str], links: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each person's evaluation group: people linked (directly or through others) share
    one, named after the first of them in sorted order; an unlinked person is their own."""
    parent: dict[str, str] = {p: p for p in persons}

    def root(p: str) -> str:
        parent.setdefault(p, p)
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {p: root(p) for p in list(parent)}
