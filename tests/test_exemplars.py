"""Enrolled exemplars (issue 17, part B): the file, its validation, the gate, the fast path.

Real OpenCV and real files: the committed sample's model, its faces as crops.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, sample_images

from edged.enrollment.store import EnrollmentStore
from edged.errors import ModelError
from edged.training import fitting, trainer
from edged.vision.detector import DetectorConfig, FaceDetector, Gray, to_gray
from edged.vision.exemplars import CAP, PRIOR_WEIGHT, Crop, Exemplars, capped, compose
from edged.vision.model import ExpressionModel
from edged.vision.model_file import load_model, write_model
from edged.vision.pipeline import largest_face

DETECTOR = DetectorConfig(scale_factor=1.1, min_neighbors=4, min_size=0.2, pad=0.3)


@pytest.fixture(scope="module")
def base(sample_model: Path) -> ExpressionModel:
    return load_model(sample_model)


@pytest.fixture(scope="module")
def sample_faces(base: ExpressionModel) -> list[tuple[int, Path, Gray]]:
    """Every sample photo's prepared face: (class id, photo, face)."""
    det = FaceDetector(DETECTOR)
    out = []
    for i, cls in enumerate(CLASSES):
        for p in sample_images(cls):
            face = largest_face(
                to_gray(np.asarray(cv2.imread(str(p)), np.uint8)), det, base.preprocessor
            )
            if face is not None:
                out.append((i, p, face))
    return out


def variants(face: Gray, count: int, seed: int) -> list[Gray]:
    """Near-copies of one face (a pixel's shift, a little light and noise): what a few
    frames of one person in one place look like."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        dx, dy = rng.integers(-1, 2, 2)
        moved = np.roll(np.roll(face.astype(np.int16), dx, 1), dy, 0)
        noisy = moved + rng.integers(-4, 5) + rng.normal(0, 2, face.shape)
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return out


def consistent_person(
    sample_faces: list[tuple[int, Path, Gray]], per_class: int = 3, seed: int = 0
) -> tuple[list[Crop], dict[int, Gray]]:
    """ "alice": one sample photo per class, enrolled as near-copies (consistent crops)."""
    sources: dict[int, Gray] = {}
    for c, _, face in sample_faces:
        sources.setdefault(c, face)
    crops = [
        Crop("alice", c, v) for c, f in sources.items() for v in variants(f, per_class, seed + c)
    ]
    return crops, sources


def attached(base: ExpressionModel, crops: list[Crop], path: Path) -> Path:
    fitted = fitting.attach_exemplars(fitting.fitted_of(base), crops)
    write_model(path, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta)
    return path


def test_a_model_with_exemplars_is_plain_lbph_0600_and_loads_back_the_same(
    base: ExpressionModel, sample_faces: list[tuple[int, Path, Gray]], tmp_path: Path
) -> None:
    crops, _ = consistent_person(sample_faces)
    crops += [Crop("bob_2", c, f) for c, _, f in sample_faces[:: len(sample_faces) // 4]]
    path = attached(base, crops, tmp_path / "family.yml")
    assert os.stat(path).st_mode & 0o777 == 0o600
    plain = cv2.face.LBPHFaceRecognizer.create()
    plain.read(str(path))
    assert len(plain.getHistograms()) == base.samples
    model = load_model(path)
    assert model.meta.format == 3
    assert model.samples == base.samples
    assert model.meta.exemplars is not None
    got = model.meta.exemplars.crops
    assert [(c.person, c.class_id) for c in got] == [(c.person, c.class_id) for c in crops]
    assert all(np.array_equal(a.face, b.face) for a, b in zip(got, crops, strict=True))
    assert model.enrolled is not None and model.enrolled.persons == ("alice", "bob_2")


def test_a_model_without_exemplars_is_written_as_before(
    base: ExpressionModel, tmp_path: Path
) -> None:
    path = attached(base, [], tmp_path / "plain.yml")
    assert os.stat(path).st_mode & 0o777 == 0o644
    model = load_model(path)
    assert model.meta.format in (1, 2) and model.enrolled is None
    assert model.meta.gate == base.meta.gate


def test_capped_keeps_the_newest_crops_of_each_person_and_expression() -> None:
    face = np.zeros((64, 64), np.uint8)
    crops = [Crop("a", 1, face + i) for i in range(CAP + 3)] + [Crop("a", 2, face)]
    kept = capped(crops)
    assert [int(c.face[0, 0]) for c in kept if c.class_id == 1] == list(range(3, CAP + 3))
    assert len(kept) == CAP + 1


def test_a_person_with_consistent_crops_is_classified_by_them(
    base: ExpressionModel, sample_faces: list[tuple[int, Path, Gray]]
) -> None:
    crops, sources = consistent_person(sample_faces)
    model = compose(base, Exemplars(tuple(crops)))
    assert model.enrolled is not None
    assert model.enrolled.weight[0] > PRIOR_WEIGHT  # leave-one-out trusts them
    # New frames of the same faces, never enrolled.
    tests = [(c, v) for c, f in sources.items() for v in variants(f, 4, seed=100 + c)]
    generic = [base.predict_face(v).label for _, v in tests]
    enrolled = [model.predict_face(v) for _, v in tests]
    assert any(g != c for g, (c, _) in zip(generic, tests, strict=True))
    assert all(p.person == "alice" for p in enrolled)
    assert [p.label for p in enrolled] == [c for c, _ in tests]


def test_a_face_of_nobody_enrolled_gets_exactly_the_generic_prediction(
    base: ExpressionModel, sample_faces: list[tuple[int, Path, Gray]]
) -> None:
    crops, sources = consistent_person(sample_faces)
    model = compose(base, Exemplars(tuple(crops)))
    own = {id(f) for f in sources.values()}
    strangers = [f for _, _, f in sample_faces if id(f) not in own]
    shut = 0
    for face in strangers:
        p = model.predict_face(face)
        if p.person is None:
            shut += 1
            assert p == base.predict_face(face)
    assert shut >= 0.9 * len(strangers)


def test_the_fast_path_adds_a_store_and_leaves_the_base_model_unchanged(
    sample_model: Path, sample_faces: list[tuple[int, Path, Gray]], tmp_path: Path
) -> None:
    store = EnrollmentStore(tmp_path / "enrolled")
    crops, _ = consistent_person(sample_faces)
    for c in sorted({c.class_id for c in crops}):
        store.add("alice", CLASSES[c], [x.face for x in crops if x.class_id == c])
    before = sample_model.read_bytes()
    out = tmp_path / "family.yml"
    status = trainer.main(
        ["--base-model", str(sample_model), str(tmp_path / "enrolled"), "-o", str(out), "-q"]
    )
    assert status == 0
    assert sample_model.read_bytes() == before
    assert os.stat(out).st_mode & 0o777 == 0o600
    model = load_model(out)
    assert model.meta.exemplars is not None
    assert model.meta.exemplars.persons == ("alice",)
    assert len(model.meta.exemplars.crops) == len(crops)


def test_the_fast_path_refuses_a_store_of_another_face_size(
    sample_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "enrolled" / "alice" / "happy"
    folder.mkdir(parents=True)
    (tmp_path / "enrolled" / "alice" / "sad").mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((32, 32), np.uint8))
    cv2.imwrite(
        str(tmp_path / "enrolled" / "alice" / "sad" / "b.png"), np.zeros((32, 32), np.uint8)
    )
    status = trainer.main(
        [
            "--base-model",
            str(sample_model),
            str(tmp_path / "enrolled"),
            "-o",
            str(tmp_path / "o.yml"),
        ]
    )
    assert status != 0
    assert not (tmp_path / "o.yml").exists()
    err = capsys.readouterr().err
    assert "photo" in err or "32x32" in err


def test_compose_refuses_crops_the_model_cannot_use(base: ExpressionModel) -> None:
    face = np.zeros((64, 64), np.uint8)
    with pytest.raises(ModelError, match="not the model's 64x64"):
        compose(base, Exemplars((Crop("alice", 1, np.zeros((32, 32), np.uint8)),)))
    with pytest.raises(ModelError, match="class ids"):
        compose(base, Exemplars((Crop("alice", 42, face),)))
    with pytest.raises(ModelError, match="not allowed"):
        compose(base, Exemplars((Crop("../alice", 1, face),)))


# --- hostile files: every field of edged.exemplars and edged.gate checked -------------------


def _yaml_block(key: str, write: object) -> list[str]:
    """``key``'s YAML (text, no base64) as OpenCV writes it, indented into the edged node."""
    fs = cv2.FileStorage("x.yml", cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY)
    write(fs)  # type: ignore[operator]
    text = fs.releaseAndGetString()
    lines = [ln for ln in text.splitlines()[1:] if ln.strip() and ln != "---"]
    return ["   " + ln for ln in lines]


def _splice(path: Path, key: str, block: list[str]) -> None:
    """Replace (or add) ``key`` in the edged node by ``block``."""
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("edged:"))
    top = re.compile(r"^   [A-Za-z_]+:")
    at = [i for i in range(start + 1, len(lines)) if lines[i].startswith(f"   {key}:")]
    if at:
        end = next((j for j in range(at[0] + 1, len(lines)) if top.match(lines[j])), len(lines))
        lines[at[0] : end] = block
    else:
        last = next(i for i in range(start, len(lines)) if lines[i].startswith("   trained_images"))
        lines[last:last] = block
    path.write_text("\n".join(lines) + "\n")


def _png(face: np.ndarray) -> np.ndarray:
    return cv2.imencode(".png", face)[1].reshape(1, -1)


def _exemplars(
    persons: list[str],
    person: list[int],
    label: list[int],
    crops: list[np.ndarray],
) -> list[str]:
    def write(fs: cv2.FileStorage) -> None:
        fs.startWriteStruct("exemplars", cv2.FileNode_MAP)
        fs.startWriteStruct("persons", cv2.FileNode_SEQ)
        for p in persons:
            fs.write("", p)
        fs.endWriteStruct()
        fs.write("person", np.array(person, np.int32).reshape(-1, 1))
        fs.write("label", np.array(label, np.int32).reshape(-1, 1))
        fs.startWriteStruct("crops", cv2.FileNode_SEQ)
        for c in crops:
            fs.write("", c)
        fs.endWriteStruct()
        fs.endWriteStruct()

    return _yaml_block("exemplars", write)


def _gate(values: list[float]) -> list[str]:
    return _yaml_block(
        "gate", lambda fs: fs.write("gate", np.array(values, np.float64).reshape(1, -1))
    )


FACE = np.full((64, 64), 128, np.uint8)
GOOD = _png(FACE)
HOSTILE = [
    ("person index", _exemplars(["alice"], [3], [1], [GOOD]), "edged.exemplars.person"),
    ("crops short", _exemplars(["alice"], [0, 0], [1, 1], [GOOD]), "edged.exemplars.crops"),
    (
        "not a png",
        _exemplars(["alice"], [0], [1], [np.arange(60, dtype=np.uint8)[None]]),
        "crops[0]",
    ),
    (
        "wrong size",
        _exemplars(["alice"], [0], [1], [_png(np.zeros((32, 32), np.uint8))]),
        "crops[0]",
    ),
    (
        "colour",
        _exemplars(["alice"], [0], [1], [_png(np.zeros((64, 64, 3), np.uint8))]),
        "crops[0]",
    ),
    ("float crop", _exemplars(["alice"], [0], [1], [np.zeros((1, 9), np.float32)]), "crops[0]"),
    ("slash", _exemplars(["a/b"], [0], [1], [GOOD]), "edged.exemplars.persons[0]"),
    ("dots", _exemplars([".."], [0], [1], [GOOD]), "edged.exemplars.persons[0]"),
    ("space", _exemplars(["a b"], [0], [1], [GOOD]), "edged.exemplars.persons[0]"),
    ("twice", _exemplars(["a", "a"], [0, 1], [1, 1], [GOOD, GOOD]), "edged.exemplars.persons"),
    ("nobody's", _exemplars(["a", "b"], [0], [1], [GOOD]), "edged.exemplars.persons"),
    ("class", _exemplars(["alice"], [0], [42], [GOOD]), "edged.exemplars.label"),
    (
        "too many",
        _exemplars(["a"], [0] * (CAP + 1), [1] * (CAP + 1), [GOOD] * (CAP + 1)),
        "more than",
    ),
    ("gate nan", _gate([float("nan")] * CAP), "edged.gate"),
    ("gate negative", _gate([-1.0] * CAP), "edged.gate"),
    ("gate length", _gate([100.0] * 17), "edged.gate"),
]


@pytest.mark.parametrize(("case", "block", "field"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_exemplar_nodes_are_refused_naming_the_field(
    base: ExpressionModel,
    sample_faces: list[tuple[int, Path, Gray]],
    tmp_path: Path,
    case: str,
    block: list[str],
    field: str,
) -> None:
    crops, _ = consistent_person(sample_faces, per_class=1)
    path = attached(base, crops, tmp_path / "family.yml")
    _splice(path, "gate" if case.startswith("gate") else "exemplars", block)
    with pytest.raises(ModelError) as e:
        load_model(path)
    assert "\n" not in str(e.value)
    assert field in str(e.value)


def test_exemplars_in_an_older_format_are_refused(
    base: ExpressionModel, sample_faces: list[tuple[int, Path, Gray]], tmp_path: Path
) -> None:
    crops, _ = consistent_person(sample_faces, per_class=1)
    path = attached(base, crops, tmp_path / "family.yml")
    path.write_text(path.read_text().replace("   format: 3", "   format: 2"))
    with pytest.raises(ModelError, match=r"edged\.format = 2: exemplars need format 3"):
        load_model(path)


def test_the_spliced_good_block_still_loads(
    base: ExpressionModel, sample_faces: list[tuple[int, Path, Gray]], tmp_path: Path
) -> None:
    """The hostile cases differ from a loadable file only in what they name."""
    crops, _ = consistent_person(sample_faces, per_class=1)
    path = attached(base, crops, tmp_path / "family.yml")
    _splice(path, "exemplars", _exemplars(["alice"], [0, 0], [1, 3], [GOOD, GOOD]))
    model = load_model(path)
    assert model.meta.exemplars is not None and len(model.meta.exemplars.crops) == 2
    assert replace(model.meta, format=1) == replace(base.meta, format=1)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_model_with_faces_written_by_root_into_the_services_folder_is_the_services(
    base: ExpressionModel, sample_faces: list[tuple[int, Path, Gray]], tmp_path: Path
) -> None:
    # `sudo edged-train ... -o /var/lib/edged/family.yml`: the folder belongs to the
    # service's (dynamic) user; a 0600 root-owned file would be unreadable to it.
    crops, _ = consistent_person(sample_faces)
    service = tmp_path / "service"
    service.mkdir()
    os.chown(service, 61234, 61234)
    path = attached(base, crops, service / "family.yml")
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (61234, 61234, 0o600)
    # Into root's own folder it stays root's; a model without faces is never given away.
    mine = attached(base, crops, tmp_path / "family.yml")
    assert os.stat(mine).st_uid == 0
    plain = attached(base, [], service / "plain.yml")
    assert (os.stat(plain).st_uid, os.stat(plain).st_mode & 0o777) == (0, 0o644)


def test_making_a_model_with_exemplars_never_disturbs_the_model_classifying_frames(
    base: ExpressionModel, sample_faces: list[tuple[int, Path, Gray]]
) -> None:
    # The daemon makes the model with a store's exemplars on its loader thread from the
    # model the frame loop is classifying with: the two must not share per-face buffers.
    faces = [f for _, _, f in sample_faces]
    expected = [(p.label, p.confidence, p.distance) for p in map(base.predict_face, faces)]
    crops, _ = consistent_person(sample_faces)
    alone = compose(base, Exemplars(tuple(crops)))
    wanted = [(p.label, p.confidence) for p in map(alone.predict_face, faces)]
    stop, seen, errors = threading.Event(), [], []

    def classify() -> None:
        try:
            while not stop.is_set():
                for i, f in enumerate(faces):
                    p = base.predict_face(f)
                    seen.append((i, (p.label, p.confidence, p.distance)))
        except Exception as e:  # the test's own thread: report, never die silently
            errors.append(e)

    loop = threading.Thread(target=classify, daemon=True)
    loop.start()
    try:
        made = [compose(base, Exemplars(tuple(crops))) for _ in range(3)]
    finally:
        stop.set()
        loop.join(10)
    assert errors == []
    assert len(seen) > len(faces)
    assert [got for i, got in seen if got != expected[i]] == []
    for m in made:
        assert [(p.label, p.confidence) for p in map(m.predict_face, faces)] == wanted
