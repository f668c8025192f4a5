"""The enrollment store and its names: safe folders, private files, all or nothing."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.enrollment.names import check_expression, check_person
from edged.enrollment.store import (
    LOCK,
    MARKER,
    EnrollmentStore,
    PreparedDifferently,
    StoreBusy,
    StoreError,
    UnknownPerson,
    encode_crop,
)
from edged.vision.preprocess import PreprocessConfig

# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/",
        "a/b",
        "..",
        ".",
        "../alice",
        "alice/..",
        ".hidden",
        "al ice",
        " alice",
        "alice\n",
        "al\x00ice",
        "\x00",
        "\uff41lice",  # fullwidth a (a look-alike)
        "\u0430lice",  # Cyrillic a
        "alicé",
        "a" * 33,
        "alice.bob",
        "~alice",
        "$HOME",
        "al\\ice",
        "alice*",
    ],
)
def test_a_hostile_person_name_is_refused_naming_the_rule(name: str) -> None:
    with pytest.raises(ValueError, match=r"letters, digits, '-' and '_' only \(ASCII\), 1 to 32"):
        check_person(name)


@pytest.mark.parametrize("name", ["alice", "Bob_2", "x", "a" * 32, "anne-marie", "_", "0"])
def test_a_plain_person_name_passes_unchanged(name: str) -> None:
    assert check_person(name) == name


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_accepted_person_name_is_one_plain_ascii_folder_name(name: str) -> None:
    try:
        check_person(name)
    except ValueError as e:
        assert "\n" not in str(e)  # one line, whatever the name holds
        return
    assert name.isascii() and 1 <= len(name) <= 32
    assert Path(name).name == name and name not in (".", "..")
    assert not set(name) & set("/\\.\x00 \t\n")


@pytest.mark.parametrize(
    ("given", "expected"), [("happy", "happy"), ("Happiness", "happy"), (" SADNESS ", "sad")]
)
def test_an_expression_is_normalised_as_training_normalises_labels(
    given: str, expected: str
) -> None:
    assert check_expression(given) == expected


def test_an_unknown_expression_is_refused_listing_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="unknown expression 'bored': use one of anger, happy"):
        check_expression("bored")
    with pytest.raises(ValueError, match=r"use one of happy, sad$"):
        check_expression("anger", ["happy", "sad"])
    assert check_expression("Happiness", ["happy", "sad"]) == "happy"


def test_a_models_own_class_that_cannot_be_a_folder_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be a folder name"):
        check_expression("../up", ["../up"])


# --- the store -----------------------------------------------------------------------------


def crops(n: int, seed: int = 0, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size), np.uint8) for _ in range(n)]


def files_below(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


@pytest.fixture
def store(tmp_path: Path) -> EnrollmentStore:
    return EnrollmentStore(tmp_path / "enrolled", lock_timeout=0.3)


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o777], indirect=True)
def test_folders_are_0700_and_files_0600_whatever_the_umask(
    store: EnrollmentStore, umask: int
) -> None:
    store.add("alice", "happy", crops(2))
    root = store.root
    for folder in (root, root / "alice", root / "alice" / "happy"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, (folder, oct(umask))
    files = [root / MARKER, root / LOCK, *(root / "alice" / "happy").iterdir()]
    assert len(files) == 4
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f, oct(umask))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
def test_run_as_root_what_is_created_belongs_to_the_owner_of_the_folder_it_goes_in(
    tmp_path: Path,
) -> None:
    """The service (DynamicUser=yes) owns its state folder: a `sudo edged enroll` into it
    must leave files that user can read, and never take over the store's owner."""
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 4321, 4322)
    store = EnrollmentStore(state / "enrolled")
    store.add("alice", "happy", crops(2))
    created = [store.root, *store.root.rglob("*")]
    assert len(created) == 7  # the store, its marker and lock, two folders, two crops
    assert {(p.stat().st_uid, p.stat().st_gid) for p in created} == {(4321, 4322)}
    mine = EnrollmentStore(tmp_path / "mine")  # a folder root owns: files stay root's
    mine.add("alice", "happy", crops(1))
    assert {p.stat().st_uid for p in [mine.root, *mine.root.rglob("*")]} == {0}


def test_crops_are_stored_as_png_named_by_their_content(store: EnrollmentStore) -> None:
    faces = crops(3)
    written = store.add("alice", "happy", faces)
    assert len(written) == 3
    for face, path in zip(faces, written, strict=True):
        assert path.parent == store.root / "alice" / "happy"
        assert path.name == encode_crop(face, PreprocessConfig())[0]
        assert len(path.stem) >= 12 and int(path.stem, 16) >= 0
        back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert back is not None and np.array_equal(back, face)  # lossless
    marker = json.loads((store.root / MARKER).read_text())
    assert marker == {"format": 1, "preprocess": {"size": 64, "margin": 0.0, "equalize": "clahe"}}


def test_the_same_crop_twice_is_stored_once(store: EnrollmentStore) -> None:
    a, b = crops(2)
    assert len(store.add("alice", "happy", [a, a, b])) == 2
    assert store.add("alice", "happy", [a]) == []  # already there: nothing written
    assert store.summary() == {"alice": {"happy": 2}}


def test_a_crop_unlike_the_preparation_is_refused_before_anything_is_written(
    store: EnrollmentStore,
) -> None:
    with pytest.raises(ValueError, match="48x48 is not what 64x64"):
        store.add("alice", "happy", crops(1, size=48))
    with pytest.raises(ValueError, match="8-bit grey"):
        store.add("alice", "happy", [np.zeros((64, 64, 3), np.uint8)])
    assert not store.root.exists()


def test_a_later_add_prepared_otherwise_is_refused_clearly(store: EnrollmentStore) -> None:
    store.add("alice", "happy", crops(1))
    other = PreprocessConfig(size=48, equalize="hist")
    with pytest.raises(PreparedDifferently, match=r"prepared as 64x64.*but these are prepared as"):
        store.add("bob", "sad", crops(1, size=48), other)
    assert store.summary() == {"alice": {"happy": 1}}
    assert store.prepared_with() == PreprocessConfig()


def test_bad_names_are_refused_by_the_store_itself(store: EnrollmentStore) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        store.add("../evil", "happy", crops(1))
    with pytest.raises(ValueError, match="folder name"):
        store.add("alice", "../happy", crops(1))
    with pytest.raises(ValueError, match="not allowed"):
        store.forget("..")
    assert not store.root.exists()


def test_summary_faces_and_version_follow_every_add_and_forget(store: EnrollmentStore) -> None:
    assert store.summary() == {} and store.faces() == []  # no store yet: empty, not an error
    empty = store.version()
    store.add("bob", "sad", crops(1, seed=1))
    one = store.version()
    store.add("alice", "happy", crops(2))
    two = store.version()
    store.add("alice", "happy", crops(1))  # the same crop again: nothing changes
    assert store.version() == two
    (store.root / "alice" / "happy" / "notes.txt").write_text("stray")
    assert store.version() == two  # strays are not crops
    assert len({empty, one, two}) == 3
    assert store.summary() == {"alice": {"happy": 2}, "bob": {"sad": 1}}
    assert [(f.person, f.expression) for f in store.faces()] == [
        ("alice", "happy"),
        ("alice", "happy"),
        ("bob", "sad"),
    ]
    assert store.faces() == sorted(store.faces())
    store.forget("alice")
    assert store.version() == one


def test_forget_removes_everything_of_the_person_and_nothing_of_others(
    store: EnrollmentStore,
) -> None:
    store.add("alice", "happy", crops(2))
    store.add("alice", "sad", crops(1, seed=2))
    store.add("alice2", "happy", crops(1, seed=3))
    store.add("bob", "happy", crops(1, seed=4))
    (store.root / "alice" / "sad" / ".tmp.dead.png").write_bytes(b"half")  # a killed writer's
    for name in ("alice.histograms", "alice.model.yml", "alice2.histograms", "bob.histograms"):
        store.cache_path(name.split(".")[0], name.split(".", 1)[1]).parent.mkdir(exist_ok=True)
        store.cache_path(name.split(".")[0], name.split(".", 1)[1]).write_bytes(b"x")
    others = {f for f in files_below(store.root) if "alice/" not in f and "/alice." not in f}

    assert store.forget("alice") == 2 + 1 + 1 + 2  # crops, the temp file, two cache files
    assert not (store.root / "alice").exists()
    assert files_below(store.root) == others
    assert store.summary() == {"alice2": {"happy": 1}, "bob": {"happy": 1}}
    with pytest.raises(UnknownPerson, match=r"alice is not enrolled in .* \(enrolled: alice2, bob"):
        store.forget("alice")


def test_forget_of_someone_never_enrolled_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UnknownPerson, match="does not exist"):
        EnrollmentStore(tmp_path / "nowhere").forget("alice")
    assert not (tmp_path / "nowhere").exists()


# --- links ---------------------------------------------------------------------------------


def test_links_are_never_followed_out_of_the_store(store: EnrollmentStore, tmp_path: Path) -> None:
    store.add("alice", "happy", crops(1))
    outside = tmp_path / "outside"
    (outside / "happy").mkdir(parents=True)
    secret = outside / "happy" / "0123456789abcdef.png"
    secret.write_bytes((store.root / "alice" / "happy").iterdir().__next__().read_bytes())
    (store.root / "eve").symlink_to(outside)  # a linked person
    (store.root / "alice" / "sad").symlink_to(outside / "happy")  # a linked expression
    (store.root / "alice" / "happy" / "fedcba9876543210.png").symlink_to(secret)  # a linked file

    found = store.scan()
    assert [(f.person, f.expression) for f in found.faces] == [("alice", "happy")]
    assert len(found.warnings) == 3
    assert all("is a link" in w and "not followed" in w for w in found.warnings)
    assert store.summary() == {"alice": {"happy": 1}}

    with pytest.raises(StoreError, match="is a link: refusing to write through it"):
        store.add("eve", "happy", crops(1, seed=5))
    assert store.forget("eve") == 1  # the link itself goes, never what it points to
    assert secret.exists() and (outside / "happy").is_dir()
    store.forget("alice")  # its linked sad/ goes as a link
    assert secret.exists()


def test_stray_files_and_folders_are_ignored_when_reading(store: EnrollmentStore) -> None:
    store.add("alice", "happy", crops(1))
    (store.root / "README.txt").write_text("hi")
    (store.root / "not a person").mkdir()
    (store.root / "alice" / "happy" / "photo.jpg").write_bytes(b"jpeg")
    (store.root / "alice" / "happy" / ".tmp.abc.png").write_bytes(b"half")
    (store.root / "alice" / "stray.png").write_bytes(b"png")
    found = store.scan()
    assert len(found.faces) == 1
    assert found.warnings == ["not a person: person name 'not a person' is not allowed: "
                              "letters, digits, '-' and '_' only (ASCII), 1 to 32 characters: "
                              "skipped"]  # fmt: skip


# --- all or nothing; one writer at a time ----------------------------------------------------

_ADD_UNDER_A_LIMIT = """
import sys
import numpy as np
from pathlib import Path
from edged.enrollment.store import EnrollmentStore, StoreError
flat = np.full((64, 64), 7, np.uint8)  # a tiny PNG, under the limit
noise = np.random.default_rng(int(sys.argv[2])).integers(0, 256, (64, 64), np.uint8)
try:
    EnrollmentStore(Path(sys.argv[1])).add("alice", "happy", [flat, noise])
except StoreError as e:
    print(e)
"""


def _file_size_limit() -> None:  # in the child: writes past 1 KB fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


def add_under_a_file_size_limit(root: Path, seed: int) -> str:
    r = subprocess.run(
        [sys.executable, "-c", _ADD_UNDER_A_LIMIT, str(root), str(seed)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_file_size_limit,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_write_failure_stores_nothing_of_the_call_and_leaves_no_temp_file(
    store: EnrollmentStore,
) -> None:
    """EFBIG (RLIMIT_FSIZE; CPython ignores SIGXFSZ) on the second crop: the first crop,
    the new folders and the new marker are all removed again."""
    out = add_under_a_file_size_limit(store.root, seed=1)
    assert "cannot write to the enrollment store" in out
    assert "File too large; nothing was stored" in out
    assert files_below(store.root) == {LOCK}
    assert list(store.root.iterdir()) == [store.root / LOCK]


def test_a_write_failure_leaves_an_existing_store_exactly_as_it_was(store: EnrollmentStore) -> None:
    store.add("alice", "happy", crops(2))
    store.add("bob", "sad", crops(1, seed=3))
    before = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    version = store.version()
    out = add_under_a_file_size_limit(store.root, seed=9)
    assert "File too large; nothing was stored" in out
    after = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    assert after == before
    assert store.version() == version


def test_a_second_writer_waits_a_bounded_time_then_says_another_is_running(
    store: EnrollmentStore,
) -> None:
    store.add("alice", "happy", crops(1))
    fd = os.open(store.root / LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another edged enroll, mid-add
        with pytest.raises(StoreBusy, match=r"another edged enroll is running .* \(waited 0.3 s"):
            store.add("bob", "sad", crops(1, seed=2))
        with pytest.raises(StoreBusy):
            store.forget("alice")
        assert store.summary() == {"alice": {"happy": 1}}  # reading needs no lock
    finally:
        os.close(fd)
    store.add("bob", "sad", crops(1, seed=2))
    assert store.summary() == {"alice": {"happy": 1}, "bob": {"sad": 1}}


def test_a_damaged_or_newer_marker_is_refused_clearly(store: EnrollmentStore) -> None:
    store.add("alice", "happy", crops(1))
    marker = store.root / MARKER
    marker.write_text("{not json")
    with pytest.raises(StoreError, match="damaged"):
        store.add("alice", "happy", crops(1, seed=2))
    marker.write_text(json.dumps({"format": 99, "preprocess": {}}))
    with pytest.raises(StoreError, match="newer edged"):
        store.prepared_with()
