"""edged detect: annotated pictures and JSON lines, many images per call, workshop models."""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, SAMPLE, sample_images
from test_images import make_huge_png

from edged.commands.detect import OutputRefused, plan
from edged.errors import EdgedError, InputMissing
from edged.vision.detector import cascade_path
from edged.vision.model import WORKSHOP_CLASSES


def edged(
    *args: object,
    env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        preexec_fn=preexec,
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


# --- an output that is, or may become, an input: refused before any work ---------------


def _tree(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_folder_inside_an_input_folder_is_refused_and_its_old_copy_untouched(
    sample_model: Path, tmp_path: Path
):
    # edged detect x.jpg d -o d/sub, with d/sub/x.jpg left by an earlier run: that copy is
    # an input now (d is searched), and it was overwritten before being read.
    x = tmp_path / "x.jpg"
    shutil.copy(sample_images("happy", 1)[0], x)
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    shutil.copy(sample_images("sad", 1)[0], d / "y.jpg")
    shutil.copy(sample_images("neutral", 1)[0], d / "sub" / "x.jpg")
    before = _tree(tmp_path)
    r = edged("detect", x, d, "-o", d / "sub", "--model", sample_model, "--json")
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"edged: error: refusing to overwrite the input {d / 'sub' / 'x.jpg'} with its "
        f"annotated copy: {d / 'sub' / 'x.jpg'} is that file"
    ]
    assert _tree(tmp_path) == before
    # Without the earlier copy the folder is still refused: its copies would be inputs next time.
    (d / "sub" / "x.jpg").unlink()
    r2 = edged("detect", x, d, "-o", d / "sub", "--model", sample_model, "--json")
    assert r2.returncode == 2 and r2.stdout == ""
    assert r2.stderr.splitlines() == [
        f"edged: error: refusing to write {d / 'sub' / 'x.jpg'}: it is inside the input folder "
        f"{d}, so the annotated copies would be read as inputs (now or next time); "
        "give -o a place outside it"
    ]
    assert not (d / "sub" / "x.jpg").exists()


def test_output_that_is_a_hard_link_to_the_input_is_refused_and_the_input_untouched(
    sample_model: Path, tmp_path: Path
):
    a = tmp_path / "a.jpg"
    shutil.copy(sample_images("happy", 1)[0], a)
    os.link(a, tmp_path / "h.jpg")
    before = a.read_bytes()
    r = edged("detect", a, "-o", tmp_path / "h.jpg", "--model", sample_model)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"edged: error: refusing to overwrite the input {a} with its annotated copy: "
        f"{tmp_path / 'h.jpg'} is that file by another name"
    ]
    assert a.read_bytes() == before


def test_output_that_is_an_input_through_a_link_or_another_spelling_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    a = tmp_path / "a.jpg"
    a.write_bytes(b"x")
    (tmp_path / "link.jpg").symlink_to(a)
    monkeypatch.chdir(tmp_path)
    cases = [
        ([a], tmp_path / "link.jpg"),
        ([tmp_path / "link.jpg"], a),
        ([Path("./a.jpg")], Path("a.jpg")),
        ([Path("a.jpg")], tmp_path / "not-yet" / ".." / "a.jpg"),
    ]
    for inputs, output in cases:
        with pytest.raises(OutputRefused, match="refusing to overwrite the input"):
            plan(inputs, output)


def test_output_reached_from_an_input_folder_by_a_link_is_refused(tmp_path: Path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.jpg").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (d / "to-out").symlink_to(out)  # d is searched through this link: out's copies are inputs
    with pytest.raises(OutputRefused, match=f"inside the input folder {re.escape(str(d))}"):
        plan([d], out)
    (tmp_path / "into-d").symlink_to(d / "sub")  # -o spelled as a link into the input folder
    with pytest.raises(OutputRefused, match="inside the input folder"):
        plan([d], tmp_path / "into-d")
    with pytest.raises(OutputRefused, match="refusing to overwrite the input"):
        plan([d], d)  # its copies would land on the inputs themselves
    (d / "to-out").unlink()
    assert plan([d], out)[0].output == out / "a.jpg"
    assert plan([d / "a.jpg"], d / "b.jpg")[0].output == d / "b.jpg"  # a file, not a folder


# --- closed stdout ------------------------------------------------------------------------


def test_detect_json_piped_to_head_exits_quietly_with_141(sample_model: Path, tmp_path: Path):
    folder = tmp_path / "many"
    folder.mkdir()
    for p in sorted((SAMPLE / "images").glob("*.jpg"))[:40]:
        (folder / p.name).symlink_to(p)
    cmd = shlex.join([sys.executable, "-m", "edged", "detect", str(folder)])
    cmd += " " + shlex.join(["--model", str(sample_model), "--json"])
    err = tmp_path / "stderr"
    r = subprocess.run(
        ["bash", "-c", f'{cmd} 2>"$1" | head -1; exit "${{PIPESTATUS[0]}}"', "bash", str(err)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert err.read_text() == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert r.returncode == 141  # 128 + SIGPIPE, as a shell shows for a tool SIGPIPE ended
    (line,) = r.stdout.splitlines()
    assert json.loads(line)["image"].startswith(str(folder))


# --- a 12000x12000 PNG under a memory limit ------------------------------------------------


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_huge_png(tmp_path_factory.mktemp("huge") / "huge.png")


PEAK = """\
import sys
from edged.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print(next(l for l in status.splitlines() if l.startswith("VmPeak")), file=sys.stderr)
raise SystemExit(code)
"""


def _address_space(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before it runs: what ulimit -v does
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmPeak from /proc")
def test_a_12000x12000_png_under_a_memory_limit_is_one_error_line_and_the_rest_are_done(
    huge_png: Path, sample_model: Path
):
    good = sample_images("happy", 2)
    model = ["--model", str(sample_model), "--json"]
    # What a normal run needs here (threads and libraries differ between machines), plus
    # room to spare; the 12000x12000 picture alone decodes to 432 MB.
    probe = subprocess.run(
        [sys.executable, "-c", PEAK, "detect", *map(str, good), *model],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    peak = int(re.search(r"VmPeak:\s+(\d+) kB", probe.stderr).group(1)) * 1024
    limited = _address_space(peak + (256 << 20))
    normal = edged("detect", *good, *model, preexec=limited)
    assert normal.returncode == 0, normal.stderr
    for extra, why in [
        (
            [],
            "12000x12000 is 144 megapixels, above the limit of 50 megapixels; --max-pixels "
            "raises it",
        ),
        (["--max-pixels", "200000000"], "out of memory decoding 12000x12000"),
    ]:
        r = edged("detect", good[0], huge_png, good[1], *model, *extra, preexec=limited)
        assert r.returncode == 65, r.stderr
        assert "Traceback" not in r.stderr
        first, huge, last = json_lines(r.stdout)
        assert huge == {
            "image": str(huge_png),
            "error": f"{huge_png} cannot be read as an image: {why}",
        }
        assert first["image"] == str(good[0]) and first["faces"]
        assert last["image"] == str(good[1]) and last["faces"]
        assert "1 of 3 images could not be read" in r.stderr


# --- annotated copies are written whole or not at all ------------------------------------


def test_an_annotated_copy_that_cannot_be_written_fails_alone_and_leaves_no_partial_file(
    sample_model: Path, tmp_path: Path
):
    small, big = tmp_path / "small.png", tmp_path / "noise.png"
    cv2.imwrite(str(small), cv2.imread(str(sample_images("happy", 1)[0])))
    cv2.imwrite(str(big), np.random.default_rng(1).integers(0, 256, (1500, 1500, 3), np.uint8))
    # Every file the child writes must stay under the limit but the big annotated copy
    # (the model is read through a file too): the small copy fits, the big one cannot.
    limit = 2 * max(small.stat().st_size, sample_model.stat().st_size)
    assert big.stat().st_size > limit

    def file_size_limit() -> None:  # in the child: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    r = edged(
        "detect", small, big, "-o", out, "--model", sample_model, "--json", preexec=file_size_limit
    )
    assert r.returncode == 1, r.stderr
    done, failed = json_lines(r.stdout)
    assert done["image"] == str(small) and done["output"] == str(out / "small.png")
    assert failed == {
        "image": str(big),
        "error": f"cannot write {out / 'noise.png'}: File too large",
    }
    assert "1 of 2 annotated copies could not be written" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["small.png"]  # no partial file, no temp file
    assert cv2.imread(str(out / "small.png")).shape == cv2.imread(str(small)).shape


def test_max_pixels_is_documented_and_checked_like_every_number():
    r = edged("detect", "--help")
    text = " ".join(r.stdout.split())
    assert "--max-pixels N" in text and "default: 50000000, 50 megapixels" in text
    bad = edged("detect", "x.jpg", "--max-pixels", "0")
    assert bad.returncode == 2 and "'0' must be in 1..1073741824" in bad.stderr
