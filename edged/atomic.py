"""All-or-nothing file writes: every file edged writes goes through `write_atomic`.

Why not let a library write the file: OpenCV's writer ignores ENOSPC, so a full disk
used to leave a truncated model behind a "wrote" message. Here our own ``os.write``
raises, what reached the disk is checked before the rename, and on any failure the old
file is untouched and the temp file removed. A killed writer's temp file is removed by
the next write: a live writer holds an exclusive ``flock`` on its temp file, so a temp
file nobody holds is a dead writer's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

Owner = tuple[int, int] | None  # (uid, gid) a written file is given, or None: the writer's


def owner_for(folder: Path) -> Owner:
    """Who a file written into ``folder`` should belong to: run as root, the folder's
    owner when that is another user; else None. So ``sudo edged-train -o
    /var/lib/edged/family.yml`` (a 0600 model holding faces) stays readable by the
    service, whose ``DynamicUser=yes`` owns its state folder."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_uid, st.st_gid) if st.st_uid != 0 else None


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    check: Callable[[Path], None] | None = None,
    owner: Owner = None,
) -> None:
    """Replace `path` with `data`, all or nothing (given ``owner`` if not None).

    The temp file ``.<name>.<random>.tmp<suffix>`` sits beside `path` (same filesystem,
    so the rename is atomic; same extension, so readers that go by it still work).
    `check` gets the written temp file and raises to refuse it. Raises what failed
    (``OSError`` for ENOSPC, EFBIG, EIO...); the old file is then never touched.
    """
    path = Path(path)
    clean_stale(path)
    fd, tmp = _locked_temp(path)
    try:
        _write_all(fd, data)
        os.fsync(fd)
        size = os.fstat(fd).st_size
        if size != len(data):
            raise OSError(errno.EIO, f"{size} of {len(data)} bytes reached the disk", str(tmp))
        if check is not None:
            check(tmp)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)  # releases the lock: only now may a cleaner judge the name
    _fsync_folder(path.parent)


def clean_stale(path: Path) -> None:
    """Remove the temp files of `path` that killed writers left (no live writer holds them)."""
    prefix, suffix = f".{path.name}.", f".tmp{path.suffix}"
    try:
        names = os.listdir(path.parent)
    except OSError:
        return  # the write itself will say what is wrong with the folder
    for name in names:
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix + suffix):
            _remove_if_unheld(path.parent / name)


def _remove_if_unheld(tmp: Path) -> None:
    """Unlink `tmp` if we can lock it; never through a symlink, never another's inode."""
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return  # vanished, a symlink, or not ours to open
    try:
        seen = os.fstat(fd)
        if stat.S_ISREG(seen.st_mode):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if a live writer holds it
            if os.path.samestat(seen, os.stat(tmp, follow_symlinks=False)):
                os.unlink(tmp)
    except OSError:
        pass  # held by a live writer, or gone meanwhile: either way not ours to remove
    finally:
        os.close(fd)


def _locked_temp(path: Path) -> tuple[int, Path]:
    """A new temp file beside `path`, opened and exclusively locked.

    Between creating and locking, another writer's `clean_stale` may take the file for a
    dead writer's and unlink it; then the name no longer leads to our file: make another.
    """
    while True:
        fd, name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.stat(name, follow_symlinks=False)):
                    return fd, Path(name)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until done: a short write is retried, so ENOSPC and EFBIG raise."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "the disk accepted no more bytes")
        view = view[n:]


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash right after still shows the new file)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
