"""edged detect: annotated pictures and JSON lines, many images per call, workshop models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, sample_images

from edged.commands.detect import plan
from edged.errors import EdgedError, InputMissing
from edged.vision.detector import cascade_path
from edged.vision.model import WORKSHOP_CLASSES


def edged(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture(scope="module")
def workshop_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trainer/trainer.yml exactly as the workshop notebook made it: crops found with
    detectMultiScale(gray, 1.3, 5), faces re-detected in each crop with the defaults,
    plain LBPH with default parameters, ids 0 anger, 1 happy, 2 sad, 3 neutral, 4 surprise,
    and recognizer.write()."""
    cascade = cv2.CascadeClassifier(str(cascade_path()))
    faces, ids = [], []
    for label, cls in enumerate(("anger", "happy", "sad", "neutral", "surprise")):
        for path in sample_images(cls):
            gray = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
            for x, y, w, h in cascade.detectMultiScale(gray, 1.3, 5):
                crop = gray[y : y + h, x : x + w]
                for x2, y2, w2, h2 in cascade.detectMultiScale(crop):
                    faces.append(crop[y2 : y2 + h2, x2 : x2 + w2])
                    ids.append(label)
    assert set(ids) == {0, 1, 2, 3, 4}
    recognizer = cv2.face.LBPHFaceRecognizer_create()
    recognizer.train(faces, np.array(ids))
    out = tmp_path_factory.mktemp("workshop") / "trainer" / "trainer.yml"
    out.parent.mkdir()
    recognizer.write(str(out))
    return out


def test_workshop_model_is_read_with_workshop_ids_and_says_so(
    workshop_model: Path, sample_dir: Path
):
    photo = sample_dir / "elon.jpg"
    r = edged("detect", photo, "--model", workshop_model, "--json")
    assert r.returncode == 0, r.stderr
    note = r.stderr.strip().splitlines()
    assert len(note) == 1
    assert "no class names inside (a workshop model)" in note[0]
    assert "0 anger, 1 happy, 2 sad, 3 neutral, 4 surprise" in note[0]
    (line,) = json_lines(r.stdout)
    (face,) = line["faces"]
    assert line["image"] == str(photo) and line["output"] is None
    assert 0.0 <= face["confidence"] <= 1.0 and face["distance"] > 0
    # The same answer plain LBPH gives for the raw crop of that box, as the notebook did.
    x, y, w, h = face["box"]
    gray = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2GRAY)
    plain = cv2.face.LBPHFaceRecognizer_create()
    plain.read(str(workshop_model))
    label, distance = plain.predict(gray[y : y + h, x : x + w])
    assert face["expression"] == WORKSHOP_CLASSES[label]
    assert face["distance"] == pytest.approx(distance, abs=0.01)


def test_workshop_model_takes_class_names_from_labels_option_or_configuration(
    workshop_model: Path, sample_dir: Path, tmp_path: Path, clean_env: None
):
    photo = sample_images("happy", 1)[0]
    names = ["a0", "b1", "c2", "d3", "e4"]
    r = edged("detect", photo, "--model", workshop_model, "--json", "--labels", ",".join(names))
    assert r.returncode == 0, r.stderr
    assert "(from --labels)" in r.stderr and "0 a0, 1 b1" in r.stderr
    faces = json_lines(r.stdout)[0]["faces"]
    assert faces and all(f["expression"] in names for f in faces)
    config = tmp_path / "edged.toml"
    config.write_text(f'[model]\npath = "{workshop_model}"\nlabels = {json.dumps(names)}\n')
    r2 = edged("detect", photo, "--config", config, "--json")
    assert r2.returncode == 0, r2.stderr
    assert "(from model.labels of the configuration)" in r2.stderr
    assert json_lines(r2.stdout)[0]["faces"] == faces


@pytest.mark.slow
def test_several_images_and_a_folder_give_one_json_line_each_and_annotated_copies(
    sample_model: Path, sample_dir: Path, tmp_path: Path
):
    folder = tmp_path / "in" / "batch"
    (folder / "deeper").mkdir(parents=True)
    shots = sample_images("happy", 3) + sample_images("sad", 2)
    for p in shots[:3]:
        shutil.copy(p, folder / p.name)
    for p in shots[3:]:
        shutil.copy(p, folder / "deeper" / p.name)
    (folder / "readme.txt").write_text("not a picture: skipped when a folder is expanded")
    out = tmp_path / "out"
    elon = sample_dir / "elon.jpg"
    r = edged("detect", elon, folder, "--model", sample_model, "--json", "-o", out)
    assert r.returncode == 0, r.stderr
    lines = json_lines(r.stdout)
    assert len(lines) == 6
    assert lines[0]["image"] == str(elon)
    expected_outputs = (
        [out / "elon.jpg"]
        + [out / p.name for p in shots[:3]]
        + [out / "deeper" / p.name for p in shots[3:]]
    )
    assert sorted(Path(x["output"]) for x in lines) == sorted(expected_outputs)
    for x in lines:
        assert x["model_version"] and x["width"] > 0 and x["height"] > 0
        for f in x["faces"]:
            assert f["expression"] in CLASSES and 0.0 <= f["confidence"] <= 1.0
            assert f["distance"] >= 0 and len(f["box"]) == 4
        written = cv2.imread(x["output"])
        original = cv2.imread(x["image"])
        assert written.shape == original.shape
        if x["faces"]:
            assert np.abs(written.astype(int) - original).sum() > 0


def test_one_image_with_output_file_gets_the_box_and_caption_drawn(
    sample_model: Path, sample_dir: Path, tmp_path: Path
):
    out = tmp_path / "labelled.png"
    r = edged("detect", sample_dir / "elon.jpg", "--model", sample_model, "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{sample_dir / 'elon.jpg'}: ")
    assert "distance" in r.stdout and " at " in r.stdout
    img = cv2.imread(str(out))
    line = r.stdout.split(" at ")[1].split()
    x, y = map(int, line[0].split(","))
    w, h = map(int, line[1].split("x"))
    assert tuple(img[y + h // 2, x]) == (0, 255, 0)  # the box's left edge, in the notebook's green
    caption = img[max(0, y - 60) : y - 2, x : x + w]
    assert (np.all(caption == (0, 255, 0), axis=2)).sum() > 50  # text above the box


def test_an_unreadable_image_is_reported_and_the_others_still_done(
    sample_model: Path, tmp_path: Path
):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    good = sample_images("neutral", 1)[0]
    r = edged("detect", good, bad, "--model", sample_model, "--json")
    assert r.returncode == 65
    first, second = json_lines(r.stdout)
    assert first["image"] == str(good) and "faces" in first
    assert second == {"image": str(bad), "error": f"{bad} cannot be read as an image"}
    assert "1 of 2 images could not be read" in r.stderr


def test_a_missing_input_fails_with_exit_66_before_anything_is_written(
    sample_model: Path, tmp_path: Path
):
    out = tmp_path / "out"
    r = edged(
        "detect",
        sample_images("happy", 1)[0],
        tmp_path / "nope.jpg",
        "-o",
        out,
        "--model",
        sample_model,
    )
    assert r.returncode == 66
    assert r.stderr.strip() == f"edged: error: no such file or folder: {tmp_path / 'nope.jpg'}"
    assert not out.exists() and r.stdout == ""


def test_a_missing_or_corrupt_model_fails_with_exit_66_naming_the_file(tmp_path: Path):
    photo = sample_images("happy", 1)[0]
    r = edged("detect", photo, "--model", tmp_path / "trainer.yml")
    assert r.returncode == 66 and "trainer.yml does not exist" in r.stderr
    junk = tmp_path / "junk.yml"
    junk.write_text("%YAML:1.0\nopencv_lbphfaces:\n  radius: 1\n")
    r2 = edged("detect", photo, "--model", junk)
    assert r2.returncode == 66 and str(junk) in r2.stderr
    assert len(r2.stderr.strip().splitlines()) == 1


def test_labels_given_for_a_model_that_names_its_classes_are_ignored_with_a_note(
    sample_model: Path,
):
    r = edged(
        "detect",
        sample_images("happy", 1)[0],
        "--model",
        sample_model,
        "--labels",
        "x,y,z",
        "--json",
    )
    assert r.returncode == 0
    assert "names its own classes" in r.stderr and "--labels is ignored" in r.stderr
    assert all(f["expression"] in CLASSES for f in json_lines(r.stdout)[0]["faces"])


def test_help_states_what_confidence_and_distance_mean():
    r = edged("detect", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "confidence is 0..1" in text and "chi-square distance" in text
    assert "--labels" in text and "exit status" in text


# --- planning outputs (no images read) -------------------------------------------------


def test_outputs_mirror_input_folders_and_single_files_keep_their_name(tmp_path: Path):
    src = tmp_path / "photos"
    (src / "a").mkdir(parents=True)
    for name in ("a/1.jpg", "2.png", "notes.txt"):
        (src / name).write_bytes(b"x")
    one = tmp_path / "one.jpg"
    one.write_bytes(b"x")
    jobs = plan([one, src], tmp_path / "out")
    assert [(j.source, j.output) for j in jobs] == [
        (one, tmp_path / "out" / "one.jpg"),
        (src / "2.png", tmp_path / "out" / "2.png"),
        (src / "a" / "1.jpg", tmp_path / "out" / "a" / "1.jpg"),
    ]
    assert plan([one], tmp_path / "x.png")[0].output == tmp_path / "x.png"
    assert plan([one], tmp_path / "new")[0].output == tmp_path / "new" / "one.jpg"
    assert [j.output for j in plan([one, src], None)] == [None, None, None]


def test_two_inputs_that_would_share_an_output_file_are_refused(tmp_path: Path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "face.jpg").write_bytes(b"x")
    with pytest.raises(EdgedError, match="would both be written to"):
        plan([tmp_path / "a" / "face.jpg", tmp_path / "b" / "face.jpg"], tmp_path / "out")


def test_output_never_overwrites_its_input_and_needs_a_writable_image_type(tmp_path: Path):
    img = tmp_path / "face.jpg"
    img.write_bytes(b"x")
    with pytest.raises(EdgedError, match="refusing to overwrite the input"):
        plan([img], img)
    with pytest.raises(EdgedError, match=r"not \.txt"):
        plan([img], tmp_path / "face.txt")
    with pytest.raises(InputMissing, match="holds no image files"):
        (tmp_path / "empty").mkdir()
        plan([tmp_path / "empty"], None)
