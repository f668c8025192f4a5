"""The enrollment store: prepared face crops of the people a camera sees, on disk.

Layout::

    <root>/.edged-enrolled                 JSON: format, how the crops were prepared
    <root>/.lock                           flock'd by every writer
    <root>/.cache/<person>.<anything>      derived data of one person (see `cache_path`)
    <root>/<person>/<expression>/<sha256 of the PNG, 16 hex>.png

Crops are 8-bit grey, already prepared as the model prepares faces (`Preprocessor`), so
training and the daemon need not find the face again. Faces are private: folders are
0700 and files 0600, set explicitly (never left to the umask). Files are named by their
content, so the same crop added twice is stored once.

Why the care: a store is written by hand (``edged enroll``) on a Raspberry Pi whose SD
card fills up, and read by training and the daemon. An `add` is all or nothing (temp
files, fsync, rename; on ENOSPC or EFBIG every file of the call is removed); writers take
turns on ``.lock`` (a second waits a bounded time, then says another is running);
readers take no lock, ignore stray files, and never follow a symlink out of the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from edged.atomic import write_atomic
from edged.enrollment.names import check_person, is_safe_name, person_problem
from edged.errors import DatasetError, EdgedError, InputMissing
from edged.vision.detector import Gray
from edged.vision.preprocess import PreprocessConfig, is_equalize

FORMAT = 1
MARKER = ".edged-enrolled"
LOCK = ".lock"
CACHE = ".cache"
TEMP_PREFIX = ".tmp"
DIGEST_CHARS = 16
LOCK_TIMEOUT = 10.0  # seconds a second `edged enroll` waits for the first
_MARKER_MAX_BYTES = 64 * 1024
_DIR_MODE = 0o700
_FILE_MODE = 0o600

Owner = tuple[int, int] | None  # (uid, gid) to give what a write creates; None: the writer's


class StoreError(EdgedError):
    """The store cannot be written or used as asked (exit 1, like a model that cannot be
    written); nothing of the failed call is left behind."""


class StoreBusy(StoreError):
    """Another writer held the store's lock for longer than the wait allows."""


class UnknownPerson(StoreError, InputMissing):
    """`forget` of someone who is not enrolled (exit 66, like a missing input)."""


class PreparedDifferently(DatasetError):
    """Crops prepared unlike the store's (another face size or equalisation): they could
    not be trained together (exit 65, an input that cannot be used)."""


class EnrolledFace(NamedTuple):
    """One stored crop: whose, which expression, and its file."""

    person: str
    expression: str
    path: Path


@dataclass
class Contents:
    """What a scan of the store found, and what it skipped (one line each, and why)."""

    faces: list[EnrolledFace] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def describe(cfg: PreprocessConfig) -> str:
    """``64x64, margin 0, clahe``: a preparation as a person reads it."""
    size = f"{cfg.size}x{cfg.size}" if cfg.size else "raw crop size"
    return f"{size}, margin {cfg.margin:g}, {cfg.equalize} equalisation"


def encode_crop(crop: Gray, preprocess: PreprocessConfig) -> tuple[str, bytes]:
    """A crop as its stored file name and PNG bytes; `ValueError` for a crop that is not
    what ``preprocess`` makes (not 8-bit grey, or not ``size`` x ``size``)."""
    arr = np.asarray(crop)
    if arr.dtype != np.uint8 or arr.ndim != 2 or not arr.size:
        raise ValueError(f"a face crop must be an 8-bit grey image, not {arr.dtype} {arr.shape}")
    n = preprocess.size
    if n and arr.shape != (n, n):
        raise ValueError(
            f"a face crop of {arr.shape[1]}x{arr.shape[0]} is not what {describe(preprocess)} makes"
        )
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise ValueError("OpenCV could not encode the face crop as PNG")
    data = buf.tobytes()
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS] + ".png", data


def is_crop_name(name: str) -> bool:
    """A stored crop's file name: ``<hex>.png`` (temp files and strays are not)."""
    return not name.startswith(".") and name.lower().endswith(".png")


class EnrollmentStore:
    """The crops under ``root``. The constructor only remembers where: nothing is read
    or created until a method needs it, so a store that does not exist yet is empty."""

    def __init__(self, root: Path, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self._owner: Owner = None  # who what a write creates belongs to (see `owner_for`)

    # --- reading (no lock: writers rename whole files into place) -------------------------

    def scan(self, images: Callable[[str], bool] = is_crop_name) -> Contents:
        """Every crop, sorted by person, expression and file, and what was skipped:
        links (never followed: a warning), names that cannot be a person, unreadable
        folders. Stray files (not ``images``, temp files) are skipped silently."""
        out = Contents()
        if not self.root.is_dir():
            return out
        for person in _folders(self.root, out, "", _person_warning):
            for expression in _folders(self.root / person, out, f"{person}/", _expression_warning):
                shown = f"{person}/{expression}/"
                for name in _files(self.root / person / expression, out, shown, images):
                    path = self.root / person / expression / name
                    out.faces.append(EnrolledFace(person, expression, path))
        out.faces.sort()
        return out

    def faces(self) -> list[EnrolledFace]:
        """Every stored crop as ``(person, expression, path)``, sorted."""
        return self.scan().faces

    def summary(self) -> dict[str, dict[str, int]]:
        """person → expression → number of crops."""
        out: dict[str, dict[str, int]] = {}
        for f in self.faces():
            per = out.setdefault(f.person, {})
            per[f.expression] = per.get(f.expression, 0) + 1
        return out

    def version(self) -> str:
        """A short hash of the crops' names: changes with every add and forget. Cheap
        (folders listed, no file read), so a daemon may poll it."""
        h = hashlib.sha256()
        for f in self.faces():
            h.update(f"{f.person}/{f.expression}/{f.path.name}\n".encode())
        return h.hexdigest()[:12]

    def prepared_with(self) -> PreprocessConfig | None:
        """How the stored crops were prepared (the marker file), or None before the first add."""
        path = self.root / MARKER
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {_reason(e)}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreError(f"{path} is not a regular file")
            data = os.read(fd, _MARKER_MAX_BYTES + 1)
        finally:
            os.close(fd)
        return _parse_marker(path, data)

    def cache_path(self, person: str, name: str) -> Path:
        """Where derived data of one person goes (e.g. the daemon's histograms of their
        crops): ``<root>/.cache/<person>.<name>``; `forget` removes every such file.
        The dot cannot occur in a person's name, so ``al.x`` is never ``alice``'s."""
        check_person(person)
        return self.root / CACHE / f"{person}.{name}"

    # --- writing (under the lock) ---------------------------------------------------------

    def add(
        self,
        person: str,
        expression: str,
        crops: Sequence[Gray],
        preprocess: PreprocessConfig | None = None,
    ) -> list[Path]:
        """Store ``crops`` (prepared with ``preprocess``, default `PreprocessConfig()`)
        under person/expression, all or nothing. Returns the files written by this call:
        a crop already stored (same bytes) is not written again.

        Raises `ValueError` for a bad name or crop, `PreparedDifferently` when the store
        holds crops prepared otherwise, `StoreBusy`, and `StoreError` when the disk
        refuses (full, file too large...): every file of the call is then removed.
        """
        preprocess = preprocess or PreprocessConfig()
        check_person(person)
        if not is_safe_name(expression):
            raise ValueError(f"expression {expression!r} cannot be a folder name")
        blobs = dict(encode_crop(c, preprocess) for c in crops)
        if not blobs:
            return []
        try:
            with self._locked(create=True):
                undo = _Undo()
                try:
                    self._check_marker(preprocess, undo)
                    return self._write(person, expression, blobs, undo)
                except BaseException:
                    undo.run()
                    raise
        except OSError as e:
            raise StoreError(
                f"cannot write to the enrollment store {self.root}: {_reason(e)}; "
                "nothing was stored"
            ) from None

    def forget(self, person: str) -> int:
        """Remove everything of ``person``: their crops, folders, temp files and cache
        files. Returns how many files were removed; `UnknownPerson` if there are none."""
        check_person(person)
        if not self.root.is_dir():
            raise UnknownPerson(f"{person} is not enrolled: {self.root} does not exist")
        try:
            with self._locked(create=False):
                return self._forget(person)
        except OSError as e:
            raise StoreError(f"cannot remove {person} from {self.root}: {_reason(e)}") from None

    def _forget(self, person: str) -> int:
        folder = self.root / person
        try:
            st = folder.lstat()
        except FileNotFoundError:
            enrolled = ", ".join(sorted(self.summary())) or "nobody"
            raise UnknownPerson(
                f"{person} is not enrolled in {self.root} (enrolled: {enrolled})"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            removed = _count_files(folder)
            shutil.rmtree(folder)  # never follows a link inside (unlinks the link)
        else:  # a link or a stray file under the person's name: the entry itself goes
            removed = 1
            folder.unlink()
        removed += self._forget_caches(person)
        _fsync_folder(self.root)
        return removed

    def _forget_caches(self, person: str) -> int:
        cache = self.root / CACHE
        if cache.is_symlink() or not cache.is_dir():
            return 0
        removed = 0
        for entry in os.scandir(cache):
            if not entry.name.startswith(f"{person}."):
                continue
            path = cache / entry.name
            if entry.is_dir(follow_symlinks=False):
                removed += _count_files(path)
                shutil.rmtree(path)
            else:
                removed += 1
                path.unlink()
        return removed

    @contextlib.contextmanager
    def _locked(self, *, create: bool) -> Iterator[None]:
        """Hold the store's exclusive lock; wait at most ``lock_timeout`` for it."""
        self._owner = owner_for(self.root)
        if create:
            _make_folder(self.root, self._owner, parents=True)
        fd = os.open(
            self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE
        )
        try:
            _own(fd, self._owner)
            self._wait_for_lock(fd)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _wait_for_lock(self, fd: int) -> None:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"another edged enroll is running on {self.root} (waited "
                        f"{self.lock_timeout:g} s for {self.root / LOCK}); try again when it "
                        "is done"
                    ) from None
                time.sleep(0.05)

    def _check_marker(self, preprocess: PreprocessConfig, undo: _Undo) -> None:
        """The first add writes the marker; a later one must prepare crops the same way."""
        stored = self.prepared_with()
        if stored is None:
            marker = self.root / MARKER
            body = {"format": FORMAT, "preprocess": dataclasses.asdict(preprocess)}
            write_atomic(marker, (json.dumps(body, indent=2) + "\n").encode(), mode=_FILE_MODE)
            undo.files.append(marker)
            if self._owner is not None:
                os.chown(marker, *self._owner, follow_symlinks=False)
        elif stored != preprocess:
            raise PreparedDifferently(
                f"{self.root} holds faces prepared as {describe(stored)}, but these are "
                f"prepared as {describe(preprocess)}: enroll with a model that prepares "
                "faces the same way, or into another --store"
            )

    def _write(
        self, person: str, expression: str, blobs: dict[str, bytes], undo: _Undo
    ) -> list[Path]:
        folder = self.root / person / expression
        for d in (self.root / person, folder):
            if _make_folder(d, self._owner):
                undo.folders.append(d)
        _remove_temps(folder)  # a killed writer's: we hold the lock, so none is live
        written: list[Path] = []
        temps: list[tuple[Path, Path]] = []
        for name, data in blobs.items():
            final = folder / name
            if not _is_regular(final):
                temps.append((_write_temp(folder, data, undo, self._owner), final))
        for tmp, final in temps:
            os.replace(tmp, final)
            undo.files.append(final)
            written.append(final)
        _fsync_folder(folder)
        return written


@dataclass
class _Undo:
    """What an `add` created so far, removed again if it fails."""

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)

    def run(self) -> None:
        for p in self.files:
            with contextlib.suppress(OSError):
                p.unlink()
        for d in reversed(self.folders):
            with contextlib.suppress(OSError):
                d.rmdir()


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def _parse_marker(path: Path, data: bytes) -> PreprocessConfig:
    bad = StoreError(f"{path} is damaged: not the marker edged enroll writes; move it away")
    if len(data) > _MARKER_MAX_BYTES:
        raise bad
    try:
        body = json.loads(data)
        fmt, pre = body["format"], body["preprocess"]
    except (ValueError, TypeError, KeyError):
        raise bad from None
    if not isinstance(fmt, int) or fmt < 1:
        raise bad
    if fmt > FORMAT:
        raise StoreError(f"{path} is of format {fmt}, written by a newer edged: update edged")
    return _preprocess_from(pre, bad)


def _preprocess_from(pre: Any, bad: StoreError) -> PreprocessConfig:
    if not isinstance(pre, dict):
        raise bad
    size, margin, equalize = pre.get("size"), pre.get("margin"), pre.get("equalize")
    if type(size) is not int or size < 0 or not isinstance(margin, int | float):
        raise bad
    if not isinstance(equalize, str) or not is_equalize(equalize):
        raise bad
    return PreprocessConfig(size=size, margin=float(margin), equalize=equalize)


def owner_for(root: Path) -> Owner:
    """Who the files a write creates belong to: run as root, the owner of the store (or,
    for a new store, of the folder it goes in) when that is another user; else None
    (the writer's own). So ``sudo edged enroll`` into the service's state folder
    (``DynamicUser=yes``: owned by the service's user) leaves files the service can read.
    """
    if os.geteuid() != 0:
        return None
    for folder in (root, root.parent):
        try:
            st = os.stat(folder)
        except OSError:
            continue
        return (st.st_uid, st.st_gid) if st.st_uid != 0 else None
    return None


def _own(fd: int, owner: Owner, mode: int = _FILE_MODE) -> None:
    """Give an open file its mode (never the umask's) and, if any, its owner."""
    if owner is not None:
        os.fchown(fd, *owner)
    os.fchmod(fd, mode)


def _make_folder(path: Path, owner: Owner = None, *, parents: bool = False) -> bool:
    """Create ``path`` 0700 whatever the umask (and ``owner``'s); True if this call
    created it. An existing folder is kept as it is; a link or a file there is refused."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        if parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, _DIR_MODE)
        except FileExistsError:  # another process made it meanwhile: check it below
            return _make_folder(path, owner)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _own(fd, owner, _DIR_MODE)
        finally:
            os.close(fd)
        return True
    if stat.S_ISLNK(st.st_mode):
        raise StoreError(f"{path} is a link: refusing to write through it")
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{path} is not a folder")
    return False


def _write_temp(folder: Path, data: bytes, undo: _Undo, owner: Owner) -> Path:
    """``data`` in a new 0600 temp file in ``folder``, on disk (fsync'd), registered in
    ``undo`` before the first byte so a failed write leaves nothing."""
    tmp = folder / f"{TEMP_PREFIX}.{secrets.token_hex(8)}.png"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE
    )
    undo.files.append(tmp)
    try:
        _own(fd, owner)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "the disk accepted no more bytes")
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _remove_temps(folder: Path) -> None:
    for entry in os.scandir(folder):
        if entry.name.startswith(TEMP_PREFIX) and not entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(folder / entry.name)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def _count_files(folder: Path) -> int:
    """Files (and links) below ``folder``, links not followed."""
    n = 0
    for top, dirs, files in os.walk(folder):  # a linked folder is listed in dirs, not entered
        n += len(files) + sum(1 for d in dirs if os.path.islink(os.path.join(top, d)))
    return n


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _entries(folder: Path, out: Contents) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        out.warnings.append(f"{folder}: cannot be listed ({_reason(e)}): skipped")
        return []


def _person_warning(name: str) -> str | None:
    problem = person_problem(name)
    return f"{problem}: skipped" if problem else None


def _expression_warning(name: str) -> str | None:
    return None if is_safe_name(name) else f"{name!r} cannot be an expression: skipped"


def _folders(
    folder: Path, out: Contents, shown: str, problem: Callable[[str], str | None]
) -> Iterator[str]:
    """The names of the real (not linked) sub-folders of ``folder`` whose name passes."""
    for entry in _entries(folder, out):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            out.warnings.append(
                f"{shown}{entry.name} is a link ({os.readlink(folder / entry.name)}): "
                "not followed out of the store"
            )
        elif entry.is_dir(follow_symlinks=False):
            why = problem(entry.name)
            if why:
                out.warnings.append(f"{shown}{entry.name}: {why}")
            else:
                yield entry.name


def _files(folder: Path, out: Contents, shown: str, images: Callable[[str], bool]) -> Iterator[str]:
    """The names of the regular files of ``folder`` that are ``images``; links warned of."""
    for entry in _entries(folder, out):
        if entry.name.startswith(".") or not images(entry.name):
            continue
        if entry.is_symlink():
            out.warnings.append(
                f"{shown}{entry.name} is a link ({os.readlink(folder / entry.name)}): "
                "not followed out of the store"
            )
        elif entry.is_file(follow_symlinks=False):
            yield entry.name
