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
import os
import random
import re
import stat
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

from edged.errors import DatasetError
from edged.images import find_images, identity
from edged.vision.model import WORKSHOP_CLASSES

Layout = Literal["lists", "legend", "folders"]

# The workshop's five classes in its id order (0 anger, 1 happy, 2 sad, 3 neutral,
# 4 surprise), so an edged model keeps the ids an old subscriber knows.
DEFAULT_CLASSES: tuple[str, ...] = WORKSHOP_CLASSES

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
    path: Path
    label: str
    person: str


@dataclass
class Dataset:
    """The samples of the requested classes, plus what the labels named but the disk lacks.

    ``listed`` counts every entry per class, found or not; ``missing`` holds the names
    that do not exist; ``conflicts`` the images given two different classes (left out),
    whatever the names they were given under (a link or hard link is the same image);
    ``warnings`` what was left out of the layout and why (class folders that are links
    to the dataset or to another class, folder links that loop), one line each, for
    every reader of the dataset to report alike.
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


def available_layouts(root: Path) -> dict[Layout, tuple[str, ...]]:
    """Each layout present under ``root`` with the classes it offers (cheap: no images read)."""
    found: dict[Layout, tuple[str, ...]] = {}
    lists = _list_files(root)
    if lists:
        found["lists"] = tuple(lists)
    legend = _legend_file(root)
    if legend is not None:
        found["legend"] = tuple(sorted({c for _, c in _legend_rows(legend)}))
    folders = _class_folders(root).folders
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
            + _why_left_out(unknown, _class_folders(root).left_out)
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
    if chosen == "lists":
        read = _read_lists(root, classes)
    elif chosen == "legend":
        read = _read_legend(root, classes)
    else:
        read = _read_folders(root, classes)
    return _assemble(root=root, layout=chosen, classes=classes, read=read)


@dataclass
class _Entries:
    """What a layout names per class, before the disk is asked about any of it."""

    entries: dict[str, list[Path]]
    offered: tuple[str, ...]
    sources: dict[str, str]
    warnings: tuple[str, ...] = ()


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
            samples.append(Sample(p, cls, person_of(p)))
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
    )


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _shown(root: Path, path: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
