"""``edged enroll`` end to end on the committed sample photos, the enrolled dataset
layout, and the ``[enroll]`` setting."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import sample_images

from edged import cli
from edged.enrollment.store import LOCK, MARKER, EnrollmentStore
from edged.errors import DatasetError
from edged.training.datasets import available_layouts, load_dataset, load_datasets, merge
from edged.vision.preprocess import PreprocessConfig


def edged(*args: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``edged ARGS`` in this process (fast: OpenCV is loaded once): status, out, err."""
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def edged_process(
    *args: object, preexec: Callable[[], object] | None = None, wait: bool = True
) -> subprocess.Popen[str]:
    p: subprocess.Popen[str] = subprocess.Popen(
        [sys.executable, "-m", "edged", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,  # noqa: PLW1509 (no threads in the test process that matter)
    )
    if wait:
        p.wait(120)
    return p


def read(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    assert image is not None, path
    return image


@pytest.fixture
def photos() -> list[Path]:
    return sample_images("happy", 3)


@pytest.fixture
def blank(tmp_path: Path) -> Path:
    path = tmp_path / "blank.png"
    cv2.imwrite(str(path), np.full((240, 320, 3), 128, np.uint8))
    return path


@pytest.fixture
def two_faces(tmp_path: Path) -> Path:
    """Two sample faces side by side, the left one larger."""
    a = read(sample_images("happy", 1)[0])
    b = read(sample_images("sad", 1)[0])
    b = cv2.resize(b, (a.shape[1] * 3 // 4, a.shape[0] * 3 // 4))
    canvas = np.full((a.shape[0], a.shape[1] + b.shape[1], 3), 255, np.uint8)
    canvas[:, : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] :] = b
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), canvas)
    return path


# --- --from ----------------------------------------------------------------------------------


def test_enroll_stores_the_face_of_each_photo_and_says_so(
    tmp_path: Path, photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "enrolled"
    status, out, err = edged(
        "enroll", "--from", *photos, "--person", "alice", "--expression", "Happiness",
        "--store", store, capsys=capsys,
    )  # fmt: skip
    assert status == 0, err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [str(p) for p in photos]
    assert all(": face (" in line for line in lines[:3])
    assert lines[3] == f"stored 3 faces of alice / happy in {store} (alice: happy 3)"
    assert EnrollmentStore(store).summary() == {"alice": {"happy": 3}}
    for f in EnrollmentStore(store).faces():
        crop = read(f.path, cv2.IMREAD_UNCHANGED)
        assert crop.shape == (64, 64) and crop.dtype == np.uint8

    status, out, _ = edged(
        "enroll", "--from", photos[0], "--person", "alice", "--expression", "sad",
        "--store", store, capsys=capsys,
    )  # fmt: skip
    assert status == 0
    assert out.splitlines()[-1].endswith("(alice: happy 3, sad 1)")
    status, out, _ = edged(
        "enroll", "--from", photos[0], "--person", "alice", "--expression", "sad",
        "--store", store, capsys=capsys,
    )  # fmt: skip
    assert status == 0
    assert "stored 0 faces of alice / sad" in out and "1 already there" in out


def test_a_photo_without_a_face_is_named_and_the_others_are_stored(
    tmp_path: Path, photos: list[Path], blank: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "enrolled"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    status, out, err = edged(
        "enroll", "--from", photos[0], blank, broken, tmp_path / "missing.jpg",
        "--person", "bob", "--expression", "happy", "--store", store, capsys=capsys,
    )  # fmt: skip
    assert status == 65
    assert f"edged enroll: {blank}: no face found: not stored" in err
    assert f"edged enroll: {broken}: cannot be read (" in err
    assert f"{tmp_path / 'missing.jpg'}: cannot be read (no such file or directory)" in err
    assert "3 of 4 photos were not stored" in err
    assert "stored 1 face of bob / happy" in out
    assert EnrollmentStore(store).summary() == {"bob": {"happy": 1}}


def test_no_face_in_any_photo_exits_65_and_stores_nothing(
    tmp_path: Path, blank: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "enrolled"
    status, out, err = edged(
        "enroll", "--from", blank, "--person", "bob", "--expression", "happy",
        "--store", store, capsys=capsys,
    )  # fmt: skip
    assert status == 65
    assert "no face in any of the 1 photos: nothing stored" in err
    assert out == ""
    assert not store.exists()


def test_a_photo_with_two_faces_stores_the_largest_and_says_so(
    tmp_path: Path, two_faces: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "enrolled"
    status, out, err = edged(
        "enroll", "--from", two_faces, "--person", "carol", "--expression", "happy",
        "--store", store, capsys=capsys,
    )  # fmt: skip
    assert status == 0, err
    assert f"{two_faces}: 2 faces, using the largest (" in out
    x = int(out.split(" at ")[1].split(",")[0])
    assert x < read(sample_images("happy", 1)[0]).shape[1]  # the left, larger one
    assert EnrollmentStore(store).summary() == {"carol": {"happy": 1}}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--person", "../x", "--expression", "happy"], "person name '../x' is not allowed"),
        (["--person", "a b", "--expression", "happy"], "person name 'a b' is not allowed"),
        (["--person", "a" * 33, "--expression", "happy"], "1 to 32 characters"),
        (["--person", "alice", "--expression", "bored"], "unknown expression 'bored': use one"),
        (["--expression", "happy"], "--from needs --person and --expression"),
        (["--person", "alice"], "--from needs --person and --expression"),
    ],
)
def test_bad_names_are_one_line_usage_errors_and_store_nothing(
    tmp_path: Path,
    photos: list[Path],
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "enrolled"
    status, out, err = edged("enroll", "--from", photos[0], *args, "--store", store, capsys=capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("edged enroll: error: ") and message in err
    assert out == ""
    assert not store.exists()


def test_with_a_model_its_classes_and_preparation_are_used(
    tmp_path: Path, photos: list[Path], sample_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "enrolled"
    status, _, err = edged(
        "enroll", "--from", photos[0], "--person", "alice", "--expression", "disgust",
        "--model", sample_model, "--store", store, capsys=capsys,
    )  # fmt: skip
    assert status == 2
    assert "use one of anger, happy, sad, neutral, surprise" in err
    status, _, err = edged(
        "enroll", "--from", photos[0], "--person", "alice", "--expression", "happy",
        "--model", sample_model, "--store", store, capsys=capsys,
    )  # fmt: skip
    assert status == 0, err
    assert EnrollmentStore(store).prepared_with() == PreprocessConfig()


def test_a_store_prepared_otherwise_is_refused(
    tmp_path: Path, photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = EnrollmentStore(tmp_path / "enrolled")
    other = PreprocessConfig(size=32, equalize="hist")
    store.add("bob", "sad", [np.zeros((32, 32), np.uint8)], other)
    # Without --model the store's own preparation is used: it fits.
    status, _, err = edged(
        "enroll", "--from", photos[0], "--person", "alice", "--expression", "happy",
        "--store", store.root, capsys=capsys,
    )  # fmt: skip
    assert status == 0, err
    assert {f.path.stat().st_size > 0 for f in store.faces()} == {True}
    assert read(store.faces()[0].path, cv2.IMREAD_UNCHANGED).shape == (32, 32)


# --- --list and --forget ---------------------------------------------------------------------


def test_list_shows_persons_expressions_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "enrolled"
    status, out, _ = edged("enroll", "--list", "--store", root, capsys=capsys)
    assert (status, out) == (0, f"nobody is enrolled in {root}\n")
    store = EnrollmentStore(root)
    rng = np.random.default_rng(0)
    for person, expression, n in [
        ("bob", "sad", 1),
        ("alice", "surprise", 2),
        ("alice", "happy", 3),
    ]:
        store.add(person, expression, [rng.integers(0, 256, (64, 64), np.uint8) for _ in range(n)])

    status, out, _ = edged("enroll", "--list", "--store", root, capsys=capsys)
    assert status == 0
    assert out.splitlines() == [
        "person  happy  sad  surprise  total",
        "alice       3    0         2      5",
        "bob         0    1         0      1",
        f"2 persons, 6 faces in {root}",
    ]
    status, out, _ = edged("enroll", "--list", "--json", "--store", root, capsys=capsys)
    assert status == 0
    assert json.loads(out) == {
        "store": str(root),
        "version": store.version(),
        "prepared": {"size": 64, "margin": 0.0, "equalize": "clahe"},
        "persons": {"alice": {"happy": 3, "surprise": 2}, "bob": {"sad": 1}},
    }


def test_forget_removes_the_person_and_warns_that_flash_may_keep_the_bytes(
    tmp_path: Path, photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "enrolled"
    for person in ("alice", "bob"):
        edged(
            "enroll", "--from", *photos[:2], "--person", person, "--expression", "happy",
            "--store", root, capsys=capsys,
        )  # fmt: skip
    status, out, err = edged("enroll", "--forget", "alice", "--store", root, capsys=capsys)
    assert status == 0
    assert out == f"forgot alice: removed 2 files from {root} (happy 2)\n"
    assert "wear levelling" in err
    assert EnrollmentStore(root).summary() == {"bob": {"happy": 2}}
    status, _, err = edged("enroll", "--forget", "alice", "--store", root, capsys=capsys)
    assert status == 66
    assert "alice is not enrolled" in err and "(enrolled: bob)" in err
    status, _, err = edged("enroll", "--forget", "../bob", "--store", root, capsys=capsys)
    assert status == 2 and "not allowed" in err
    assert EnrollmentStore(root).summary() == {"bob": {"happy": 2}}


# --- the disk, and two at once ---------------------------------------------------------------


def test_a_full_disk_exits_1_and_stores_nothing(tmp_path: Path, photos: list[Path]) -> None:
    root = tmp_path / "enrolled"

    def limit() -> None:  # the marker fits, a face crop does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    p = edged_process(
        "enroll", "--from", *photos, "--person", "alice", "--expression", "happy",
        "--store", root, preexec=limit,
    )  # fmt: skip
    _, err = p.communicate()
    assert p.returncode == 1, err
    assert "File too large; nothing was stored" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in root.rglob("*")) == [LOCK]


def test_two_enrolls_at_once_take_turns_and_both_are_stored(
    tmp_path: Path, photos: list[Path]
) -> None:
    root = tmp_path / "enrolled"
    enroll_args = ["enroll", "--from", *photos, "--expression", "happy"]
    procs = [
        edged_process(*enroll_args, "--person", person, "--store", root, wait=False)
        for person in ("alice", "bob")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert EnrollmentStore(root).summary() == {"alice": {"happy": 3}, "bob": {"happy": 3}}
    assert not [p for p in root.rglob(".tmp*")]


def test_an_enroll_waits_for_the_one_holding_the_store(tmp_path: Path, photos: list[Path]) -> None:
    root = tmp_path / "enrolled"
    EnrollmentStore(root).add("bob", "sad", [np.zeros((64, 64), np.uint8)])
    fd = os.open(root / LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        p = edged_process(
            "enroll", "--from", photos[0], "--person", "alice", "--expression", "happy",
            "--store", root, wait=False,
        )  # fmt: skip
        time.sleep(2.0)  # it starts, finds the face, then waits for the lock
        assert p.poll() is None
        assert EnrollmentStore(root).summary() == {"bob": {"sad": 1}}
    finally:
        os.close(fd)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert EnrollmentStore(root).summary() == {"alice": {"happy": 1}, "bob": {"sad": 1}}


# --- the enrolled layout ---------------------------------------------------------------------


def test_a_store_is_read_as_the_enrolled_layout_with_its_people(tmp_path: Path) -> None:
    store = EnrollmentStore(tmp_path / "enrolled")
    rng = np.random.default_rng(0)
    store.add("alice", "happy", [rng.integers(0, 256, (64, 64), np.uint8) for _ in range(2)])
    store.add("happy", "sad", [rng.integers(0, 256, (64, 64), np.uint8)])  # a person "happy"
    assert available_layouts(store.root) == {"enrolled": ("happy", "sad")}  # no folders layout

    ds = load_dataset(store.root, ("happy", "sad"))
    assert ds.layout == "enrolled"
    assert ds.prepared_with == PreprocessConfig()
    assert sorted((s.person, s.label) for s in ds.samples) == [
        ("alice", "happy"),
        ("alice", "happy"),
        ("happy", "sad"),
    ]
    assert all(s.prepared for s in ds.samples)
    assert load_dataset(store.root, ("happy",), "enrolled").layout == "enrolled"


def test_a_person_level_above_known_class_folders_is_enrolled_without_a_marker(
    tmp_path: Path,
) -> None:
    """Photos laid out by person (not crops): the enrolled layout, faces still to find."""
    photo = sample_images("happy", 1)[0]
    for person, cls in [("alice", "Happiness"), ("alice", "sad"), ("bob", "happy")]:
        (tmp_path / person / cls).mkdir(parents=True)
        (tmp_path / person / cls / f"{person}_{cls}.jpg").write_bytes(photo.read_bytes())
    (tmp_path / "README.txt").write_text("my family")
    ds = load_dataset(tmp_path, ("happy", "sad"))
    assert ds.layout == "enrolled"
    assert ds.prepared_with is None
    assert sorted((s.person, s.label, s.prepared) for s in ds.samples) == [
        ("alice", "happy", False),
        ("alice", "sad", False),
        ("bob", "happy", False),
    ]


@pytest.mark.parametrize(
    "files",
    [
        ["happy/a.jpg", "sad/b.jpg"],  # plain class folders
        ["happy/2020/a.jpg", "sad/2021/b.jpg"],  # class folders with sub-folders
        ["happy/sad/a.jpg", "sad/b.jpg"],  # a class folder holding a class-named folder
        ["alice/happy/a.jpg", "happy/b.jpg"],  # one class at the top: not people
        ["alice/happy/a.jpg", "alice/b.jpg"],  # a photo beside the class folders
    ],
)
def test_class_folders_are_never_taken_for_people(tmp_path: Path, files: list[str]) -> None:
    photo = sample_images("happy", 1)[0].read_bytes()
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(photo)
    assert "enrolled" not in available_layouts(tmp_path)
    with pytest.raises(DatasetError, match="has no enrolled layout"):
        load_dataset(tmp_path, ("happy",), "enrolled")


def test_merging_keeps_the_enrolled_people_and_the_prepared_flag(
    tmp_path: Path, sample_dir: Path
) -> None:
    store = EnrollmentStore(tmp_path / "enrolled")
    store.add("alice", "happy", [np.full((64, 64), 9, np.uint8)])
    parts = load_datasets([(sample_dir, "lists"), (store.root, "auto")], ("happy", "sad"))
    assert [ds.layout for ds in parts] == ["lists", "enrolled"]
    merged = merge(parts, {}, ("happy", "sad"))
    mine = [s for s in merged.samples if s.prepared]
    assert [(s.person, s.label, s.sources) for s in mine] == [("alice", "happy", (1,))]
    assert not any(s.prepared for s in merged.samples if s.sources == (0,))


def test_a_damaged_marker_is_a_dataset_error(tmp_path: Path) -> None:
    store = EnrollmentStore(tmp_path / "enrolled")
    store.add("alice", "happy", [np.full((64, 64), 9, np.uint8)])
    (store.root / MARKER).write_text("garbage")
    with pytest.raises(DatasetError, match="damaged"):
        load_dataset(store.root, ("happy",))


# --- the setting ----------------------------------------------------------------------------


def test_config_check_shows_the_store_beside_the_model(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edged.toml"
    config.write_text('[model]\npath = "/var/lib/edged/trainer.yml"\n')
    status, out, _ = edged("config", "check", "--config", config, capsys=capsys)
    assert status == 0
    assert '[enroll]\nstore = "/var/lib/edged/enrolled"\n' in out
    config.write_text('[enroll]\nstore = "/srv/faces"\n')
    status, out, _ = edged("config", "check", "--config", config, capsys=capsys)
    assert '[enroll]\nstore = "/srv/faces"\n' in out
    status, out, _ = edged("config", "example", capsys=capsys)
    assert "[enroll]\n" in out and "# store = (not set)" in out


def test_enroll_uses_the_configured_store(
    tmp_path: Path, photos: list[Path], clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edged.toml"
    config.write_text(f'[model]\npath = "{tmp_path / "state" / "trainer.yml"}"\n')
    status, out, err = edged(
        "enroll", "--from", photos[0], "--person", "alice", "--expression", "happy",
        "--config", config, capsys=capsys,
    )  # fmt: skip
    assert status == 0, err
    assert f"in {tmp_path / 'state' / 'enrolled'} " in out
    status, out, _ = edged("enroll", "--list", "--config", config, capsys=capsys)
    assert "alice" in out
