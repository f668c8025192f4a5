"""The vision core: cascade present, shared preprocessing, model file round trip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, sample_images, train_sample_model

from edged.errors import ModelError
from edged.vision.detector import Box, DetectorConfig, FaceDetector, cascade_path, to_gray
from edged.vision.model_file import load_model
from edged.vision.preprocess import PreprocessConfig, Preprocessor


def test_installed_opencv_ships_the_frontal_haar_cascade_and_finds_a_face(sample_dir: Path):
    # Fails on an OpenCV 5.0 wheel, whose cv2.data.haarcascades is empty.
    assert cascade_path().is_file()
    gray = to_gray(cv2.imread(str(sample_dir / "elon.jpg")))
    assert FaceDetector(DetectorConfig()).detect(gray)


def test_padded_scan_finds_faces_that_fill_a_tight_crop():
    plain = FaceDetector(DetectorConfig(scale_factor=1.3, min_neighbors=5))
    padded = FaceDetector(DetectorConfig(scale_factor=1.1, min_neighbors=4, min_size=0.2, pad=0.3))
    paths = [p for c in CLASSES for p in sample_images(c, 6)]
    grays = [to_gray(cv2.imread(str(p))) for p in paths]
    found_plain = sum(bool(plain.detect(g)) for g in grays)
    found_padded = sum(bool(padded.detect(g)) for g in grays)
    assert found_padded >= 0.95 * len(grays)
    assert found_padded > found_plain


def test_detected_boxes_lie_inside_the_frame_in_its_own_coordinates():
    det = FaceDetector(DetectorConfig(max_width=160, pad=0.3, min_size=0.2, scale_factor=1.1))
    img = to_gray(cv2.imread(str(sample_images("happy", 1)[0])))
    big = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2))
    for b in det.detect(big):
        assert 0 <= b.x < b.x + b.w <= big.shape[1] and 0 <= b.y < b.y + b.h <= big.shape[0]


def test_preprocessing_gives_a_fixed_size_face_whatever_the_box():
    pre = Preprocessor(PreprocessConfig(size=48, margin=0.1, equalize="clahe"))
    gray = np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)
    for box in (Box(0, 0, 300, 300), Box(10, 20, 50, 80), Box(250, 250, 50, 50)):
        assert pre(gray, box).shape == (48, 48)


def test_model_file_round_trips_class_names_and_is_readable_by_plain_lbph(tmp_path: Path):
    path = tmp_path / "trainer.yml"
    version = train_sample_model(path, ("happy", "sad"), per_class=4)
    model = load_model(path)
    assert model.class_names() == ["happy", "sad"]
    assert model.version == version and model.source == "edged"
    plain = cv2.face.LBPHFaceRecognizer_create()
    plain.read(str(path))
    assert plain.getLabelInfo(0) == "happy" and plain.getLabelInfo(1) == "sad"


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_model_file_is_refused_not_half_loaded(tmp_path: Path, fraction: float):
    good = tmp_path / "good.yml"
    train_sample_model(good, ("happy", "sad"), per_class=3)
    data = good.read_bytes()
    cut = tmp_path / "cut.yml"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelError):
        load_model(cut)


def test_garbage_and_missing_model_files_are_refused_with_the_path_named(tmp_path: Path):
    junk = tmp_path / "junk.yml"
    junk.write_bytes(b"\x00\xffnot a model at all")
    with pytest.raises(ModelError, match=r"junk\.yml"):
        load_model(junk)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "absent.yml")
