"""The model builder: few histograms, distances LBPH itself computes, a confidence that
does not overstate, and files any LBPH reader accepts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, sample_images

from edged.errors import ModelError
from edged.training import fitting
from edged.training.datasets import person_folds
from edged.vision.detector import IMAGE_DETECTOR, FaceDetector
from edged.vision.model import LBPHParams
from edged.vision.model_file import load_model, model_bytes, write_model
from edged.vision.preprocess import PreprocessConfig, Preprocessor


@pytest.fixture(scope="module")
def sample_faces() -> tuple[list[np.ndarray], list[int], list[str]]:
    """Every sample face, prepared the way training does, with its class id and person."""
    detector = FaceDetector(IMAGE_DETECTOR)
    pre = Preprocessor(PreprocessConfig())
    faces, labels, people = [], [], []
    for i, cls in enumerate(CLASSES):
        for p in sample_images(cls):
            face = fitting.extract_face(p, detector, pre)
            if face is not None:
                faces.append(face)
                labels.append(i)
                people.append(p.stem.rsplit("_", 1)[0])
    return faces, labels, people


def save(fitted: fitting.FittedModel, path: Path) -> str:
    return write_model(
        path, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta
    )


def test_chi_square_matches_the_distances_lbph_itself_computes(sample_faces):
    faces, labels, _ = sample_faces
    params = LBPHParams()
    recognizer = params.create()
    recognizer.train(faces[:10], np.array(labels[:10], np.int32))
    refs = np.vstack([h.reshape(1, -1) for h in recognizer.getHistograms()])
    collector = cv2.face.StandardCollector_create()
    recognizer.predict_collect(faces[20], collector)
    lbph = np.array([d for _, d in collector.getResults(False)])
    ours = fitting.chi_square(fitting.lbph_histograms([faces[20]], params), refs)[0]
    np.testing.assert_allclose(ours, lbph, rtol=1e-5)


def test_histograms_per_class_do_not_grow_with_the_training_set(sample_faces):
    faces, labels, people = sample_faces
    cfg = fitting.FitConfig()  # 8 cell rows in bands of 2: 4 region prototypes per class
    small = fitting.fit(faces[::4], labels[::4], dict(enumerate(CLASSES)), cfg, people[::4])
    full = fitting.fit(faces, labels, dict(enumerate(CLASSES)), cfg, people)
    assert len(small.histograms) == len(full.histograms) == 5 * 4
    assert sorted(set(full.labels)) == [0, 1, 2, 3, 4]
    assert full.meta.trained_images == len(faces)


def test_a_region_prototype_is_zero_outside_its_band_and_lbph_adds_2_per_empty_cell(
    sample_faces,
):
    faces, labels, people = sample_faces
    fitted = fitting.fit(faces, labels, dict(enumerate(CLASSES)), groups=people)
    params = fitted.params
    cells = params.grid_x * params.grid_y
    q = fitting.lbph_histograms([faces[3]], params)[0]
    for proto in fitted.histograms[:4]:
        per_cell = proto.reshape(cells, -1)
        empty = per_cell.sum(1) == 0
        assert empty.sum() == cells - 2 * params.grid_x  # a band of 2 cell rows is kept
        inside = fitting.chi_square(
            q.reshape(cells, -1)[~empty].reshape(1, -1), per_cell[~empty].reshape(1, -1)
        )
        full = fitting.chi_square(q.reshape(1, -1), proto.reshape(1, -1))
        assert full[0, 0] == pytest.approx(inside[0, 0] + 2 * empty.sum(), rel=1e-5)


def test_the_model_file_is_read_by_plain_lbph_and_by_edged_with_the_same_answers(
    sample_faces, tmp_path: Path
):
    faces, labels, people = sample_faces
    fitted = fitting.fit(faces, labels, dict(enumerate(CLASSES)), groups=people)
    path = tmp_path / "trainer.yml"
    save(fitted, path)
    plain = cv2.face.LBPHFaceRecognizer_create()
    plain.read(str(path))
    assert len(plain.getHistograms()) == 20
    assert [plain.getLabelInfo(i) for i in range(5)] == list(CLASSES)
    label, _ = plain.predict(faces[0])
    assert 0 <= label < 5
    model = load_model(path)
    assert model.meta.calibrated and model.meta.weights is not None
    memory = fitting.to_model(fitted)
    for face in faces[:10]:
        a, b = model.predict_face(face), memory.predict_face(face)
        assert (a.expression, a.confidence) == (b.expression, pytest.approx(b.confidence))
        assert 1 / 5 <= a.confidence <= 1.0
        # The reported distance: chi-square to the answered class's prototype.
        d = model.class_distances(face)
        assert a.distance == pytest.approx(float(d[model.class_names().index(a.expression)]))


def test_confidence_does_not_overstate_when_labels_carry_no_signal(sample_faces):
    """Shuffled labels: nothing to learn, so the penalty chosen on held-out people keeps
    the confidence near chance instead of claiming certainty."""
    faces, labels, people = sample_faces
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(labels).tolist()
    fitted = fitting.fit(faces, shuffled, dict(enumerate(CLASSES)), groups=people)
    model = fitting.to_model(fitted)
    conf = [model.predict_face(f).confidence for f in faces]
    assert float(np.mean(conf)) < 0.35


def test_inner_folds_never_split_a_person():
    groups = ["a"] * 7 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["e"]
    folds = person_folds(groups, 3, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(len(groups)))
    for f in folds:
        inside = {groups[i] for i in f}
        assert all(groups[i] not in inside for g in folds if g is not f for i in g)


def test_a_single_class_or_a_single_person_still_gives_a_usable_model(sample_faces):
    faces, _, _ = sample_faces
    one_class = fitting.fit(faces[:6], [2] * 6, {2: "sad"})
    assert fitting.to_model(one_class).predict_face(faces[0]).expression == "sad"
    one_person = fitting.fit(faces[:6], [0, 1] * 3, {0: "anger", 1: "happy"}, groups=["x"] * 6)
    assert not one_person.meta.calibrated  # no held-out person to calibrate on
    p = fitting.to_model(one_person).predict_face(faces[0])
    assert p.expression in ("anger", "happy")


def test_fit_refuses_mismatched_inputs(sample_faces):
    faces, _, _ = sample_faces
    with pytest.raises(ValueError, match="one label"):
        fitting.fit(faces[:3], [0, 1], {0: "a", 1: "b"})
    with pytest.raises(ValueError, match="no faces"):
        fitting.fit([], [], {0: "a"})


def test_a_model_whose_scorer_does_not_fit_its_histograms_is_refused(sample_faces, tmp_path: Path):
    faces, labels, people = sample_faces
    fitted = fitting.fit(faces, labels, dict(enumerate(CLASSES)), groups=people)
    path = tmp_path / "bad.yml"
    meta = fitted.meta
    bad = type(meta)(
        preprocess=meta.preprocess,
        trained_images=meta.trained_images,
        weights=meta.weights[:-1],  # one row short
        bias=meta.bias,
    )
    args = (fitted.histograms, fitted.labels, fitted.classes, fitted.params, bad)
    with pytest.raises(OSError, match="weights"):
        write_model(path, *args)  # edged-train never writes what the daemon would refuse
    assert not path.exists()
    path.write_bytes(model_bytes(*args))  # written by something else
    with pytest.raises(ModelError, match="weights"):
        load_model(path)


@pytest.mark.parametrize("cls", range(len(CLASSES)), ids=CLASSES)
def test_repeating_one_class_three_times_leaves_prototypes_and_scorer_unchanged(sample_faces, cls):
    # Class counts must not steer the model: three copies of every face of one class (in
    # memory, same people) give the same prototypes, the same scorer and calibration.
    faces, labels, people = sample_faces
    hists = fitting.lbph_histograms(faces, LBPHParams())
    mirrored = fitting.lbph_histograms(
        [np.ascontiguousarray(f[:, ::-1]) for f in faces], LBPHParams()
    )
    classes = dict(enumerate(CLASSES))
    base = fitting.fit_histograms(hists, mirrored, labels, classes, groups=people)
    extra = [i for i, y in enumerate(labels) if y == cls] * 2
    rows = list(range(len(labels))) + extra
    tripled = fitting.fit_histograms(
        hists[rows], mirrored[rows], [labels[i] for i in rows], classes,
        groups=[people[i] for i in rows],
    )  # fmt: skip
    assert base.labels == tripled.labels
    np.testing.assert_allclose(np.array(tripled.histograms), np.array(base.histograms), rtol=1e-5)
    assert base.meta.weights is not None and tripled.meta.weights is not None
    # Float tolerance: the optimiser sums the same weighted terms in another order.
    scale = np.abs(base.meta.weights).max()
    np.testing.assert_allclose(tripled.meta.weights, base.meta.weights, atol=1e-5 * scale)
    assert base.meta.bias is not None and tripled.meta.bias is not None
    scale = np.abs(base.meta.bias).max()
    np.testing.assert_allclose(tripled.meta.bias, base.meta.bias, atol=1e-5 * scale)


def test_people_are_dealt_into_the_same_folds_however_many_photos_a_class_has():
    people = [f"p{i % 7}" for i in range(40)]
    labels = [i % 3 for i in range(40)]
    base = person_folds(people, 3, 0, labels=labels)
    rows = list(range(40)) + [i for i in range(40) if labels[i] == 1] * 4
    grown = person_folds([people[i] for i in rows], 3, 0, labels=[labels[i] for i in rows])
    as_people = [{people[i] for i in f} for f in base]
    assert [{people[rows[i]] for i in f} for f in grown] == as_people
