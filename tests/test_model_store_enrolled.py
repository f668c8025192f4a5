"""The model store with an enrollment store (issue 17, part C): the model in use is the
model file plus the store's crops, made in memory on the loader thread.

Real model files, real crops written by `EnrollmentStore.add`, a real polling thread
(most tests drive `poll_once` instead, to count what one check does).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, sample_images, train_sample_model
from test_model_store import until

from edged.daemon import model_store as model_store_module
from edged.daemon.enrolled import CropUnusable, read_crop, read_enrollments
from edged.daemon.model_store import ModelStore
from edged.enrollment.store import MARKER, EnrollmentStore
from edged.training import fitting
from edged.vision.detector import DetectorConfig, FaceDetector, Gray, to_gray
from edged.vision.exemplars import CAP, Crop, Exemplars, compose
from edged.vision.model_file import load_model, write_model
from edged.vision.pipeline import largest_face

POLL = 0.05
DETECTOR = DetectorConfig(scale_factor=1.1, min_neighbors=4, min_size=0.2, pad=0.3)


@pytest.fixture(scope="module")
def faces(sample_model: Path) -> dict[str, list[Gray]]:
    """Prepared faces of the committed sample, per expression, as the model prepares them."""
    pre = load_model(sample_model).preprocessor
    det = FaceDetector(DETECTOR)
    out: dict[str, list[Gray]] = {}
    for cls in CLASSES:
        for p in sample_images(cls, 4):
            face = largest_face(to_gray(cv2.imread(str(p))), det, pre)
            if face is not None:
                out.setdefault(cls, []).append(face)
    return out


@pytest.fixture
def model(tmp_path: Path, sample_model: Path) -> Path:
    path = tmp_path / "trainer.yml"
    shutil.copyfile(sample_model, path)
    return path


@pytest.fixture
def enrolled(tmp_path: Path) -> EnrollmentStore:
    return EnrollmentStore(tmp_path / "enrolled")


@pytest.fixture
def make_store(model: Path, enrolled: EnrollmentStore) -> Iterator[Callable[..., ModelStore]]:
    made: list[ModelStore] = []

    def make(start: bool = False, **kw: object) -> ModelStore:
        s = ModelStore(model, poll_interval=POLL, enrolled=enrolled, **kw)  # type: ignore[arg-type]
        made.append(s)
        s.load_now()
        if start:
            s.start()
        return s

    yield make
    for s in made:
        s.stop()


def enroll(store: EnrollmentStore, faces: dict[str, list[Gray]], person: str = "alice") -> None:
    for cls in ("happy", "sad"):
        store.add(person, cls, faces[cls][:3])


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_an_empty_or_missing_store_gives_exactly_the_model_file(model, make_store) -> None:
    store = make_store()
    assert store.current is not None
    assert store.current.version == load_model(model).version
    assert store.current.enrolled is None
    assert store.status.enrolled_people == 0


def test_enrolled_faces_make_a_new_model_in_memory_and_the_model_file_is_never_written(
    model, make_store, enrolled, faces, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.daemon.model_store")
    before, stat = model.read_bytes(), os.stat(model)
    base = make_store()
    base_version = base.status.version
    enroll(enrolled, faces)
    status = base.poll_once()
    assert status.version != base_version
    assert status.enrolled_people == 1 and status.enrolled_faces == 6
    assert status.reloads == 1
    assert base.current is not None and base.current.enrolled is not None
    assert base.current.enrolled.persons == ("alice",)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info[-1].startswith(
        f"enrolled faces changed: model {status.version} (was {base_version})"
    )
    assert "with 1 enrolled person (6 faces)" in info[-1]
    assert not any("alice" in m for m in info), "names are for the debug log only"
    assert any("alice (6 faces)" in r.getMessage() for r in caplog.records)

    enrolled.forget("alice")
    status = base.poll_once()
    assert status.version == base_version
    assert status.enrolled_people == 0
    last = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO][-1]
    assert f"is trainer.yml version {base_version} without enrolled people" in last
    assert model.read_bytes() == before
    after = os.stat(model)
    assert (after.st_mtime_ns, after.st_ino, after.st_size) == (
        stat.st_mtime_ns,
        stat.st_ino,
        stat.st_size,
    )


def test_the_polling_thread_picks_up_enrollments_by_itself(make_store, enrolled, faces) -> None:
    store = make_store(start=True)
    old = store.current
    enroll(enrolled, faces)
    until(lambda: store.current is not old)
    assert store.status.enrolled_people == 1
    assert store.running


def test_an_unchanged_store_reads_no_crop(make_store, enrolled, faces, monkeypatch) -> None:
    enroll(enrolled, faces)
    store = make_store()
    reads: list[Path] = []
    real = model_store_module.read_enrollments

    def counting(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        reads.append(Path())
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(model_store_module, "read_enrollments", counting)
    for _ in range(5):
        store.poll_once()
    assert reads == []


def test_a_new_model_file_is_combined_with_the_store(
    model, make_store, enrolled, faces, tmp_path
) -> None:
    enroll(enrolled, faces)
    store = make_store()
    first = store.status.version
    # Another valid model, trained on more photos (a new version).
    other = tmp_path / "other.yml"
    train_sample_model(other, ("happy", "sad", "surprise"), per_class=3)
    tmp = model.with_name("trainer.yml.tmp")
    shutil.copyfile(other, tmp)
    os.replace(tmp, model)
    status = store.poll_once()
    assert status.version not in (first, load_model(model).version)
    assert status.enrolled_people == 1


def test_bad_crops_and_links_are_skipped_with_one_warning_each(
    make_store, enrolled, faces, tmp_path, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.daemon.model_store")
    enroll(enrolled, faces)
    folder = enrolled.root / "alice" / "happy"
    (folder / "0000corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    cv2.imwrite(str(folder / "0001small.png"), np.zeros((32, 32), np.uint8))
    cv2.imwrite(str(folder / "0002colour.png"), np.zeros((64, 64, 3), np.uint8))
    outside = tmp_path / "outside.png"
    cv2.imwrite(str(outside), faces["sad"][0])
    (folder / "0003link.png").symlink_to(outside)
    store = make_store()
    assert store.status.enrolled_people == 1
    assert store.status.enrolled_faces == 6  # the good crops, all of them
    enroll(enrolled, faces, person="bob")  # a change: everything is read again
    assert store.poll_once().enrolled_people == 2
    warned = warnings_of(caplog)
    for name, why in [
        ("0000corrupt.png", "damaged"),
        ("0001small.png", "32x32"),
        ("0002colour.png", "not an 8-bit grey"),
        ("0003link.png", "link"),
    ]:
        hits = [w for w in warned if name in w]
        assert len(hits) == 1, (name, warned)
        assert why in hits[0]
    assert not [r for r in caplog.records if r.exc_info]


def test_faces_of_an_expression_the_model_lacks_get_one_warning_per_expression(
    make_store, enrolled, faces, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.daemon.model_store")
    enroll(enrolled, faces)
    enrolled.add("alice", "disgust", faces["anger"][:2])
    enrolled.add("bob", "disgust", faces["anger"][2:3])
    store = make_store()
    assert store.status.enrolled_people == 1
    warned = [w for w in warnings_of(caplog) if "disgust" in w]
    assert warned == [
        "3 enrolled faces of the expression 'disgust', which the model does not have "
        f"({', '.join(CLASSES)}): not used"
    ]


def test_a_store_prepared_differently_is_ignored_with_one_warning(
    model, make_store, enrolled, faces, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.daemon.model_store")
    enroll(enrolled, faces)
    marker = enrolled.root / MARKER
    body = json.loads(marker.read_text())
    body["preprocess"]["equalize"] = "none"
    marker.write_text(json.dumps(body))
    store = make_store()
    assert store.status.version == load_model(model).version
    assert store.status.enrolled_people == 0
    store.request_reload()
    store.poll_once()
    warned = [w for w in warnings_of(caplog) if "prepared as" in w]
    assert len(warned) == 1
    assert "none equalisation" in warned[0] and "clahe equalisation" in warned[0]


def test_a_removed_store_gives_the_model_file_alone(model, make_store, enrolled, faces) -> None:
    enroll(enrolled, faces)
    store = make_store()
    assert store.status.enrolled_people == 1
    shutil.rmtree(enrolled.root)
    status = store.poll_once()
    assert status.version == load_model(model).version
    assert status.enrolled_people == 0
    assert status.state == "loaded" and status.error is None


def test_an_error_in_compose_is_logged_once_and_the_model_in_use_stays(
    model, make_store, enrolled, faces, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="edged.daemon")
    store = make_store(start=True)
    kept = store.current
    assert kept is not None

    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(model_store_module, "compose", broken)
    enroll(enrolled, faces)
    store.poll_once()
    enroll(enrolled, faces, person="bob")  # a second change: the same error again
    for _ in range(3):
        store.poll_once()
    assert store.current is kept
    assert store.status.state == "loaded" and store.status.version == kept.version
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "injected" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert store.running

    monkeypatch.setattr(model_store_module, "compose", compose)
    enrolled.forget("bob")  # the next change: the store is used again
    assert store.poll_once().enrolled_people == 1
    assert store.running


def test_only_the_newest_crops_of_each_person_and_expression_are_read(
    enrolled, faces, sample_model
) -> None:
    base = load_model(sample_model)
    rng = np.random.default_rng(0)
    crops = [
        np.clip(faces["happy"][0] + rng.integers(-5, 6, faces["happy"][0].shape), 0, 255)
        for _ in range(CAP + 3)
    ]
    paths = []
    for i, c in enumerate(crops):
        (p,) = enrolled.add("alice", "happy", [c.astype(np.uint8)])
        os.utime(p, ns=(10**18 + i, 10**18 + i))  # oldest first
        paths.append(p)
    paths[-1].write_bytes(b"damaged")  # the newest is unreadable: the next older one counts
    got = read_enrollments(enrolled, base)
    assert got.exemplars is not None
    want = [read_crop(p, 64) for p in paths[-1 - CAP : -1]]
    assert [c.face.tobytes() for c in got.exemplars.crops] == [w.tobytes() for w in want]
    assert len(got.warnings) == 1 and paths[-1].name in got.warnings[0]
    # The same exemplars as compose would make of them: the daemon adds nothing of its own.
    assert (
        compose(base, got.exemplars).version
        == compose(base, Exemplars(tuple(Crop("alice", 1, w) for w in want))).version
    )


def test_a_crop_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path) -> None:
    fifo = tmp_path / "a.png"
    os.mkfifo(fifo)
    with pytest.raises(CropUnusable, match="named pipe"):
        read_crop(fifo, 64)
    big = tmp_path / "b.png"
    cv2.imwrite(str(big), np.zeros((4000, 4000), np.uint8))
    with pytest.raises(CropUnusable, match="4000x4000"):
        read_crop(big, 64)


def test_a_model_file_made_with_exemplars_keeps_them_until_the_store_has_some(
    model, make_store, enrolled, faces
) -> None:
    base = load_model(model)
    ids = {name: i for i, name in base.classes.items()}
    crops = [Crop("carol", ids["happy"], f) for f in faces["happy"][:2]]
    fitted = fitting.attach_exemplars(fitting.fitted_of(base), crops)
    version = write_model(
        model, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta
    )
    store = make_store()
    assert store.status.version == version
    assert store.status.enrolled_people == 1 and store.status.enrolled_faces == 2
    enroll(enrolled, faces, person="bob")  # the store's exemplars replace the file's
    status = store.poll_once()
    assert status.version != version
    assert store.current is not None and store.current.enrolled is not None
    assert store.current.enrolled.persons == ("bob",)
