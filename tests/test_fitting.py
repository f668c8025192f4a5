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
from edged.vision import histograms
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
    ours = histograms.chi_square(histograms.lbph_histograms([faces[20]], params), refs)[0]
    np.testing.assert_allclose(ours, lbph, rtol=1e-5)


def test_histograms_per_class_do_not_grow_with_the_training_set(sample_faces):
    faces, labels, people = sample_faces
    # 8 cell rows in bands of 2: 4 region prototypes per class, and one readout per class.
    cfg = fitting.FitConfig(readout=True)
    small = fitting.fit(faces[::4], labels[::4], dict(enumerate(CLASSES)), cfg, people[::4])
    full = fitting.fit(faces, labels, dict(enumerate(CLASSES)), cfg, people)
    assert len(small.histograms) == len(full.histograms) == 5 * 4 + 5
    assert small.meta.readouts == full.meta.readouts == 5
    assert full.labels[-5:] == [0, 1, 2, 3, 4]  # class c's readout carries label c
    assert sorted(set(full.labels)) == [0, 1, 2, 3, 4]
    assert full.meta.trained_images == len(faces)


def test_a_region_prototype_is_zero_outside_its_band_and_lbph_adds_2_per_empty_cell(
    sample_faces,
):
    faces, labels, people = sample_faces
    fitted = fitting.fit(faces, labels, dict(enumerate(CLASSES)), groups=people)
    params = fitted.params
    cells = params.grid_x * params.grid_y
    q = histograms.lbph_histograms([faces[3]], params)[0]
    for proto in fitted.histograms[:4]:
        per_cell = proto.reshape(cells, -1)
        empty = per_cell.sum(1) == 0
        assert empty.sum() == cells - 2 * params.grid_x  # a band of 2 cell rows is kept
        inside = histograms.chi_square(
            q.reshape(cells, -1)[~empty].reshape(1, -1), per_cell[~empty].reshape(1, -1)
        )
        full = histograms.chi_square(q.reshape(1, -1), proto.reshape(1, -1))
        assert full[0, 0] == pytest.approx(inside[0, 0] + 2 * empty.sum(), rel=1e-5)


def test_the_model_file_is_read_by_plain_lbph_and_by_edged_with_the_same_answers(
    sample_faces, tmp_path: Path
):
    faces, labels, people = sample_faces
    cfg = fitting.FitConfig(readout=True)
    fitted = fitting.fit(faces, labels, dict(enumerate(CLASSES)), cfg, groups=people)
    path = tmp_path / "trainer.yml"
    save(fitted, path)
    plain = cv2.face.LBPHFaceRecognizer_create()
    plain.read(str(path))
    assert len(plain.getHistograms()) == 25
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
    hists = histograms.lbph_histograms(faces, LBPHParams())
    mirrored = histograms.lbph_histograms(
        [np.ascontiguousarray(f[:, ::-1]) for f in faces], LBPHParams()
    )
    classes = dict(enumerate(CLASSES))
    cfg = fitting.FitConfig(readout=True)  # readouts too, which the sample alone leaves out
    base = fitting.fit_histograms(hists, mirrored, labels, classes, cfg, groups=people)
    extra = [i for i, y in enumerate(labels) if y == cls] * 2
    rows = list(range(len(labels))) + extra
    tripled = fitting.fit_histograms(
        hists[rows], mirrored[rows], [labels[i] for i in rows], classes, cfg,
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


def test_a_face_gets_the_same_features_at_fit_time_and_from_the_loaded_model(
    sample_faces, tmp_path: Path
):
    """Training and prediction see a face alike: the same prepared pixels (the model's own
    Preprocessor, from its file), the same distances to every stored histogram (numpy's
    chi-square at fit time, LBPH's predict_collect once loaded; readouts included) and so
    the same scores and confidence."""
    faces, labels, people = sample_faces
    cfg = fitting.FitConfig(readout=True)
    fitted = fitting.fit(faces, labels, dict(enumerate(CLASSES)), cfg, groups=people)
    assert fitted.meta.readouts == 5
    path = tmp_path / "trainer.yml"
    save(fitted, path)
    model = load_model(path)
    detector = FaceDetector(IMAGE_DETECTOR)
    stored = np.array(fitted.histograms)
    w, b = fitted.meta.weights, fitted.meta.bias
    assert w is not None and b is not None
    for p in [p for c in CLASSES for p in sample_images(c, 2)]:
        gray = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2GRAY)
        box = detector.detect(gray)[0]
        train_face = fitting.extract_face(p, detector, Preprocessor(fitted.meta.preprocess))
        assert train_face is not None
        assert np.array_equal(model.preprocessor(gray, box), train_face)
        at_fit = histograms.chi_square(
            histograms.lbph_histograms([train_face], fitted.params), stored
        )
        loaded = model.class_distances(train_face)  # fills the model's distance buffer
        np.testing.assert_allclose(model._dist, at_fit[0], rtol=1e-6)
        scores = at_fit[0] @ w + b
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        answer = model.predict_face(train_face)
        assert answer.expression == CLASSES[int(np.argmax(scores))]
        assert answer.confidence == pytest.approx(float(probs.max()), abs=1e-6)
        # The reported distance: to the class's region prototypes, readouts left out.
        k = int(np.argmax(scores))
        own = [i for i, c in enumerate(fitted.labels[:-5]) if c == k]
        empty = [2.0 * np.count_nonzero(stored[i].reshape(64, -1).sum(1) == 0) for i in own]
        assert loaded[k] == pytest.approx(float(at_fit[0][own].sum() - sum(empty)))


def test_a_model_without_readouts_is_written_as_format_1(sample_faces, tmp_path: Path):
    """readout=False gives edged's first kind of file (format 1, no edged.readouts), which an
    edged that knows format 1 only still reads; readouts give format 2."""
    faces, labels, people = sample_faces
    classes = dict(enumerate(CLASSES))
    old = fitting.fit(faces, labels, classes, fitting.FitConfig(readout=False), people)
    assert len(old.histograms) == 20 and old.meta.readouts == 0
    save(old, tmp_path / "old.yml")
    fs = cv2.FileStorage(str(tmp_path / "old.yml"), cv2.FILE_STORAGE_READ)
    assert int(fs.getNode("edged").getNode("format").real()) == 1
    assert fs.getNode("edged").getNode("readouts").empty()
    fs.release()
    assert load_model(tmp_path / "old.yml").meta.format == 1
    new_cfg = fitting.FitConfig(readout=True)
    save(fitting.fit(faces, labels, classes, new_cfg, groups=people), tmp_path / "new.yml")
    new = load_model(tmp_path / "new.yml")
    assert new.meta.format == 2 and new.meta.readouts == 5 and new.samples == 25


def test_on_the_80_face_sample_the_default_is_the_model_before_readouts(sample_faces):
    """Readouts are kept only where they lower the scorer's held-out log-loss, and inner
    folds hold 30 people or more (else 3): on the committed sample neither holds, so the
    default fits exactly the model issue 7 shipped (format 1, 3 inner folds), whose
    confidence the daemon's smoothing threshold was set for."""
    faces, labels, people = sample_faces
    classes = dict(enumerate(CLASSES))
    assert fitting.inner_folds(people, 10) == 3
    default = fitting.fit(faces, labels, classes, groups=people)
    before = fitting.fit(
        faces, labels, classes, fitting.FitConfig(readout=False, inner_folds=3), people
    )
    assert default.meta.readouts == 0 and len(default.histograms) == 20
    np.testing.assert_array_equal(np.array(default.histograms), np.array(before.histograms))
    assert default.meta.weights is not None and before.meta.weights is not None
    np.testing.assert_allclose(default.meta.weights, before.meta.weights)
    assert fitting.inner_folds([f"p{i}" for i in range(300)], 10) == 10


def test_the_readouts_ridge_is_fitted_on_at_most_its_cap_of_faces_class_balanced():
    # Its matrices grow with the square of the faces: above the cap a sample bounds the
    # memory, and the sample is class-balanced so class counts still do not steer it.
    target = np.array([0] * 50 + [1] * 10 + [2] * 300)
    n = len(target)
    assert np.array_equal(fitting.ridge_rows(target, 2 * n, n, 0), np.arange(2 * n))
    rows = fitting.ridge_rows(target, 2 * n, 100, 0)
    faces = rows[rows < n]
    assert len(faces) == 100 and len(np.unique(faces)) == 100
    assert np.array_equal(rows[rows >= n], faces + n)  # each face with its mirror image
    # The small class is taken whole; the other two share the rest equally.
    assert np.bincount(target[faces]).tolist() == [45, 10, 45]
    assert np.array_equal(rows, fitting.ridge_rows(target, 2 * n, 100, 0))  # deterministic
    # Without mirror images the rows are the faces alone.
    assert np.array_equal(fitting.ridge_rows(target, n, 100, 0), faces)


def test_a_model_trained_above_the_readout_cap_still_has_readouts_that_load(sample_faces, tmp_path):
    faces, labels, people = sample_faces
    cfg = fitting.FitConfig(readout=True, readout_max_faces=len(faces) // 2)
    fitted = fitting.fit(faces, labels, dict(enumerate(CLASSES)), cfg, groups=people)
    assert fitted.meta.readouts == len(CLASSES)
    readouts = np.array(fitted.histograms[-len(CLASSES) :])
    assert np.isfinite(readouts).all() and (readouts >= 0).all() and readouts.max() > 0
    save(fitted, tmp_path / "m.yml")
    model = load_model(tmp_path / "m.yml")
    assert model.classes == dict(enumerate(CLASSES))
