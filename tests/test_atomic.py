"""write_atomic: all or nothing, on real files, with real locks, full disks and killed writers."""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edged.atomic import write_atomic

OLD = b"old model\n" * 1000


def temps(folder: Path, name: str = "trainer.yml") -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp*"))


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A folder holding an existing trainer.yml whose bytes every failure must keep."""
    path = tmp_path / "trainer.yml"
    path.write_bytes(OLD)
    return path


def child(code: str, *args: object) -> subprocess.Popen[str]:
    """A Python process running ``code``, talking over pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# A writer that stops inside its check (its temp file written and locked) until told to go on.
PAUSED_WRITER = """
import sys
from pathlib import Path
from edged.atomic import write_atomic

def check(tmp):
    print(tmp, flush=True)
    sys.stdin.readline()

write_atomic(Path(sys.argv[1]), b"from the other writer", check=check)
print("done", flush=True)
"""


def test_the_check_sees_the_whole_temp_file_beside_the_target_with_its_extension(target: Path):
    seen: list[tuple[Path, bytes]] = []
    write_atomic(target, b"new", check=lambda tmp: seen.append((tmp, tmp.read_bytes())))
    [(tmp, data)] = seen
    assert tmp.parent == target.parent and data == b"new"
    assert tmp.name.startswith(".trainer.yml.") and tmp.name.endswith(".tmp.yml")
    assert target.read_bytes() == b"new" and not tmp.exists()


@pytest.mark.parametrize("error", [ValueError("does not parse"), KeyboardInterrupt()])
def test_a_failing_check_leaves_the_old_file_byte_for_byte_and_no_temp_file(
    target: Path, error: BaseException
):
    def refuse(tmp: Path) -> None:
        raise error

    with pytest.raises(type(error)):
        write_atomic(target, b"half a model", check=refuse)
    assert target.read_bytes() == OLD
    assert temps(target.parent) == []


def test_a_full_disk_raises_efbig_and_leaves_the_old_file_and_no_temp_file(target: Path):
    """RLIMIT_FSIZE below the data: our os.write gets EFBIG (CPython ignores SIGXFSZ)."""
    code = """
import sys
from pathlib import Path
from edged.atomic import write_atomic
try:
    write_atomic(Path(sys.argv[1]), b"x" * (1 << 20))
except OSError as e:
    print(e.errno, e.strerror)
"""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    r = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == str(errno.EFBIG), r.stdout
    assert "File too large" in r.stdout
    assert target.read_bytes() == OLD
    assert temps(target.parent) == []


def test_a_stale_temp_file_of_a_killed_writer_is_removed_by_the_next_write(target: Path):
    folder = target.parent
    made = folder / ".trainer.yml.deadbeef.tmp.yml"
    made.write_bytes(b"left by a writer killed long ago")
    other = folder / ".other.yml.deadbeef.tmp.yml"  # another target's: not ours to judge
    other.write_bytes(b"x")
    with child(PAUSED_WRITER, target) as p:
        assert p.stdout is not None
        killed = Path(p.stdout.readline().strip())  # inside its check: written and locked
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    assert killed.exists() and target.read_bytes() == OLD
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert temps(folder) == []
    assert other.exists()


def test_a_temp_file_held_by_a_live_writer_is_kept_and_its_write_still_completes(target: Path):
    with child(PAUSED_WRITER, target) as p:
        assert p.stdin is not None and p.stdout is not None
        try:
            held = Path(p.stdout.readline().strip())  # inside its check: written and locked
            assert held.exists()
            write_atomic(target, b"ours")
            assert held.exists(), "a live writer's temp file was removed"
            assert target.read_bytes() == b"ours"
            p.stdin.write("go on\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "done"
        finally:
            p.kill()
            p.wait(timeout=30)
    assert target.read_bytes() == b"from the other writer"
    assert temps(target.parent) == []


def test_a_symlink_named_like_a_temp_file_is_neither_followed_nor_removed(
    target: Path, tmp_path: Path
):
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    link = target.parent / ".trainer.yml.link.tmp.yml"
    link.symlink_to(victim)
    write_atomic(target, b"new")
    assert link.is_symlink() and victim.read_bytes() == b"precious"
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o444], ids=oct)
def test_the_new_file_has_exactly_the_given_permission_bits_whatever_the_umask(
    target: Path, mode: int
):
    old_umask = os.umask(0o077)
    try:
        write_atomic(target, b"new", mode=mode)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_readers_see_the_old_or_the_new_bytes_never_a_mix(target: Path):
    a, b = b"a" * (3 << 20), b"b" * (2 << 20) + b"end"
    target.write_bytes(a)
    stop = threading.Event()
    reads: list[int] = []
    mixed: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            if data not in (a, b):
                mixed.append(f"{len(data)} bytes starting {data[:4]!r} ending {data[-4:]!r}")
            reads.append(len(data))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(20):
            write_atomic(target, b if i % 2 == 0 else a)
    finally:
        stop.set()
        t.join(timeout=30)
    assert not mixed, mixed[:3]
    assert len(reads) >= 5
    assert temps(target.parent) == []
