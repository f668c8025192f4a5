"""edged-train: every layout trains, bad input never touches the model, the write is atomic."""

from __future__ import annotations

import io
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, sample_images
from test_datasets import make_folders_dataset, make_legend_dataset
from test_images import make_huge_png

from edged.errors import DatasetError, EdgedError
from edged.training import fitting, trainer
from edged.training.datasets import load_dataset
from edged.training.evaluate import Trained, cross_validate
from edged.training.trainer import ClassCounts, Progress, format_table, save, train
from edged.vision.model import LBPHParams
from edged.vision.model_file import load_model

TRAIN = [sys.executable, "-c", "from edged.cli import train_main; raise SystemExit(train_main())"]


def edged_train(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRAIN, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )


def small_lists(root: Path, per_class: dict[str, list[Path]]) -> Path:
    """A workshop-layout dataset with the given image files per class."""
    (root / "images").mkdir(parents=True)
    for cls, files in per_class.items():
        for f in files:
            if f.exists():
                shutil.copy(f, root / "images" / f.name)
        (root / f"{cls}.txt").write_text("".join(f"{f.name}\n" for f in files))
    return root


def faceless(path: Path) -> Path:
    """A real JPEG with nothing face-like in it, its own bytes for each name (photos with
    the same bytes are one photo)."""
    img = np.full((200, 200, 3), 128, np.uint8)
    grey = 60 + zlib.crc32(path.name.encode()) % 60
    cv2.rectangle(img, (40, 40), (160, 160), (grey, grey, grey), -1)
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def existing_model(tmp_path: Path, sample_model: Path) -> tuple[Path, bytes]:
    """A working trainer.yml that every failed run must leave byte-identical."""
    path = tmp_path / "out" / "trainer.yml"
    path.parent.mkdir()
    shutil.copy(sample_model, path)
    return path, path.read_bytes()


def assert_refused(r: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    """Exit status, exactly one stderr line (run with -q), and the words that name the problem."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == status, r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("edged-train: error: ")
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# --- pure pieces -----------------------------------------------------------------------


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_is_one_plain_line_per_tenth():
    out = io.StringIO()
    p = Progress("finding faces", 1000, out, clock=lambda: 0.0)
    for i in range(1, 1001):
        p.update(i)
    p.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    assert lines[0] == "finding faces: 100/1000 (10%), 0 s"
    assert lines[-1] == "finding faces: 1000/1000 (100%), 0 s"


def test_progress_with_fewer_steps_than_tenths_prints_each_step_once():
    out = io.StringIO()
    p = Progress("evaluating", 3, out, clock=lambda: 0.0)
    for i in (1, 2, 3):
        p.update(i)
    assert out.getvalue().splitlines() == [
        "evaluating: 1/3 (33%), 0 s",
        "evaluating: 2/3 (66%), 0 s",
        "evaluating: 3/3 (100%), 0 s",
    ]


def test_progress_on_a_terminal_redraws_one_line_and_quiet_prints_nothing():
    tty = TTY()
    t = iter(range(100))
    p = Progress("finding faces", 50, tty, clock=lambda: float(next(t)))
    for i in range(1, 51):
        p.update(i)
    p.finish()
    assert tty.getvalue().count("\n") == 1 and tty.getvalue().count("\r") >= 10
    quiet = io.StringIO()
    q = Progress("finding faces", 50, quiet, enabled=False)
    q.update(50)
    q.finish()
    assert quiet.getvalue() == ""


def test_table_has_a_row_per_class_and_totals():
    table = format_table(
        {
            "happy": ClassCounts(listed=10, missing=1, unreadable=2, no_face=3, trained=4),
            "sad": ClassCounts(listed=5, trained=5),
        }
    )
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["class", "listed", "missing", "read", "unreadable", "no", "face", "trained"]
    assert rows[1] == ["happy", "10", "1", "7", "2", "3", "4"]
    assert rows[2] == ["sad", "5", "0", "5", "0", "0", "5"]
    assert rows[3] == ["total", "15", "1", "12", "2", "3", "9"]


# --- training in-process ---------------------------------------------------------------


def test_trained_model_keeps_class_names_in_the_file_for_any_reader(
    sample_dir: Path, tmp_path: Path
):
    out = tmp_path / "trainer.yml"
    ds = load_dataset(sample_dir, ("surprise", "happy", "neutral"))
    result = train(ds, out, lbph=LBPHParams(radius=2, neighbors=8, grid_x=6, grid_y=6))
    model = load_model(out)
    assert model.class_names() == ["surprise", "happy", "neutral"]
    assert model.version == result.version and model.source == "edged"
    assert (
        model.meta.trained_images
        == len(result.faces.faces)
        == 48 - sum(c.no_face for c in result.faces.counts.values())
    )
    plain = cv2.face.LBPHFaceRecognizer_create()
    plain.read(str(out))
    assert [plain.getLabelInfo(i) for i in range(3)] == ["surprise", "happy", "neutral"]
    assert (plain.getRadius(), plain.getGridX(), plain.getGridY()) == (2, 6, 6)


@pytest.mark.slow
def test_a_reader_never_sees_a_partial_model_while_the_trainer_rewrites_it(
    sample_dir: Path, tmp_path: Path
):
    """Two different models written in turn over one path while a thread loads it."""
    ds = load_dataset(sample_dir, ("happy", "sad"))
    path = tmp_path / "trainer.yml"
    first = train(ds, tmp_path / "a.yml", progress=False)
    a = first.fitted
    b = fitting.fit(
        [np.flipud(f) for f in first.faces.faces], first.faces.labels[::-1], {0: "sad", 1: "happy"}
    )
    expect = {save(a, path): ["happy", "sad"], save(b, path): ["sad", "happy"]}
    assert len(expect) == 2
    stop = threading.Event()
    seen: list[str] = []
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                m = load_model(path)
            except Exception as e:
                problems.append(repr(e))
                continue
            if expect.get(m.version) != m.class_names():
                problems.append(f"version {m.version} with classes {m.class_names()}")
            seen.append(m.version)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(60):
            save(a if i % 2 else b, path)
    finally:
        stop.set()
        t.join(timeout=30)
    assert not problems, problems[:3]
    assert len(seen) >= 5 and set(seen) <= set(expect)
    assert not list(tmp_path.glob(".trainer.yml.*")), "temporary files left behind"


def test_train_refuses_listed_files_that_do_not_exist_unless_told_to_skip(
    sample_dir: Path, tmp_path: Path
):
    happy = sample_images("happy", 4)
    root = small_lists(
        tmp_path / "ds",
        {"happy": [*happy, tmp_path / "Gone_0001.jpg"], "sad": sample_images("sad", 4)},
    )
    ds = load_dataset(root, ("happy", "sad"))
    with pytest.raises(
        DatasetError, match=r"1 listed images do not exist.*happy.txt: Gone_0001.jpg"
    ):
        train(ds, tmp_path / "m.yml", progress=False)
    assert not (tmp_path / "m.yml").exists()
    result = train(ds, tmp_path / "m.yml", progress=False, skip_missing=True)
    assert result.faces.counts["happy"].missing == 1
    assert result.faces.counts["happy"].listed == 5


# --- the command -----------------------------------------------------------------------


@pytest.mark.slow
def test_edged_train_on_the_workshop_layout_prints_a_table_and_writes_the_model(
    sample_dir: Path, tmp_path: Path
):
    out = tmp_path / "models" / "trainer.yml"
    r = edged_train(sample_dir, "-o", out)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.strip()}
    for cls in CLASSES:
        listed, missing, read, unreadable, no_face, trained = map(int, rows[cls])
        assert (listed, missing, read, unreadable) == (16, 0, 16, 0)
        assert no_face + trained == 16 and trained >= 14
    assert "lists layout" in r.stderr and "finding faces: 80/80 (100%)" in r.stderr
    assert load_model(out).class_names() == list(CLASSES)


@pytest.mark.slow
def test_edged_train_reads_the_legend_layout_with_its_spellings(sample_dir: Path, tmp_path: Path):
    root = make_legend_dataset(sample_dir, tmp_path / "legend")
    out = tmp_path / "trainer.yml"
    r = edged_train(root, "-o", out, "--classes", "happiness,SADNESS", "-q")
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr
    assert load_model(out).class_names() == ["happy", "sad"]


@pytest.mark.slow
def test_edged_train_reads_one_folder_per_class(sample_dir: Path, tmp_path: Path):
    root = make_folders_dataset(
        sample_dir, tmp_path / "folders", {"happy": "Happy", "surprise": "surprised"}
    )
    out = tmp_path / "trainer.yml"
    r = edged_train(root, "-o", out, "--classes", "surprise,happy")
    assert r.returncode == 0, r.stderr
    assert "folders layout" in r.stderr
    assert load_model(out).class_names() == ["surprise", "happy"]


def test_missing_dataset_folder_is_one_line_exit_65_and_model_untouched(tmp_path, existing_model):
    out, before = existing_model
    r = edged_train(tmp_path / "nowhere", "-o", out, "-q")
    assert_refused(r, 65, "nowhere", "does not exist")
    assert out.read_bytes() == before


def test_list_naming_missing_files_is_refused_naming_them_and_model_untouched(
    tmp_path, existing_model
):
    out, before = existing_model
    happy = sample_images("happy", 3)
    ghosts = [tmp_path / f"Ghost_{i:04d}.jpg" for i in range(7)]
    root = small_lists(
        tmp_path / "ds", {"happy": [*happy, *ghosts], "sad": sample_images("sad", 3)}
    )
    r = edged_train(root, "-o", out, "--classes", "happy,sad", "-q")
    line = assert_refused(
        r,
        65,
        "7 listed images do not exist",
        "happy.txt: Ghost_0000.jpg",
        "and 2 more",
        "--skip-missing",
    )
    assert "Ghost_0006" not in line
    assert out.read_bytes() == before
    ok = edged_train(root, "-o", out, "--classes", "happy,sad", "--skip-missing")
    assert ok.returncode == 0, ok.stderr
    happy_row = next(x.split() for x in ok.stdout.splitlines() if x.startswith("happy"))
    assert happy_row[1:3] == ["10", "7"]
    assert "skipping 7 listed images" in ok.stderr


def test_a_class_of_only_non_image_files_is_refused_and_model_untouched(tmp_path, existing_model):
    out, before = existing_model
    junk = []
    for i in range(3):
        p = tmp_path / f"Junk_{i:04d}.jpg"
        p.write_text(f"this is not a picture ({i})")
        junk.append(p)
    root = small_lists(tmp_path / "ds", {"happy": sample_images("happy", 3), "sad": junk})
    r = edged_train(root, "-o", out, "--classes", "happy,sad", "-q")
    assert_refused(
        r, 65, "class sad has no usable face", "3 unreadable (Junk_0000.jpg", "--classes"
    )
    assert out.read_bytes() == before


def test_one_unreadable_image_is_counted_and_named_but_training_goes_on(tmp_path: Path):
    bad = tmp_path / "Broken_0001.jpg"
    bad.write_bytes(cv2.imencode(".jpg", np.zeros((50, 50, 3), np.uint8))[1].tobytes()[:40])
    root = small_lists(
        tmp_path / "ds",
        {"happy": [*sample_images("happy", 4), bad], "sad": sample_images("sad", 4)},
    )
    out = tmp_path / "trainer.yml"
    r = edged_train(root, "-o", out, "--classes", "happy,sad")
    assert r.returncode == 0, r.stderr
    assert "1 images could not be read as pictures" in r.stderr and "Broken_0001.jpg" in r.stderr
    happy_row = next(x.split() for x in r.stdout.splitlines() if x.startswith("happy"))
    assert happy_row[1:5] == ["5", "0", "4", "1"]
    assert out.exists()


def test_a_class_whose_images_show_no_face_is_refused_and_model_untouched(tmp_path, existing_model):
    out, before = existing_model
    blanks = [faceless(tmp_path / f"Wall_{i:04d}.jpg") for i in range(3)]
    root = small_lists(tmp_path / "ds", {"happy": sample_images("happy", 3), "sad": blanks})
    r = edged_train(root, "-o", out, "--classes", "happy,sad", "-q")
    assert_refused(r, 65, "class sad has no usable face", "3 without a face")
    assert out.read_bytes() == before


def test_a_dataset_with_no_face_at_all_is_refused_and_model_untouched(tmp_path, existing_model):
    out, before = existing_model
    root = small_lists(
        tmp_path / "ds",
        {"happy": [faceless(tmp_path / "A_0001.jpg")], "sad": [faceless(tmp_path / "B_0001.jpg")]},
    )
    r = edged_train(root, "-o", out, "--classes", "happy,sad", "-q")
    assert_refused(r, 65, "no face found in any of the 2 readable images")
    assert out.read_bytes() == before


def test_unknown_class_name_is_refused_and_model_untouched(sample_dir, existing_model):
    out, before = existing_model
    r = edged_train(sample_dir, "-o", out, "--classes", "happy,bored", "-q")
    assert_refused(r, 65, "unknown class 'bored'", "happy")
    assert out.read_bytes() == before


def test_lbph_parameters_out_of_range_are_a_usage_error(sample_dir, existing_model):
    out, before = existing_model
    r = edged_train(sample_dir, "-o", out, "--neighbors", "40")
    assert r.returncode == 2 and "--neighbors" in r.stderr and "must be in 1..12" in r.stderr
    assert out.read_bytes() == before


def test_output_that_is_a_folder_is_refused_before_any_work(sample_dir: Path, tmp_path: Path):
    r = edged_train(sample_dir, "-o", tmp_path, "-q")
    assert r.returncode == 1 and "is a folder" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_eval_reports_held_out_accuracy_recall_confusion_and_writes_the_png(
    sample_dir: Path, tmp_path: Path
):
    png = tmp_path / "cm" / "confusion.png"
    r = edged_train(
        sample_dir,
        "-o",
        tmp_path / "trainer.yml",
        "--eval",
        "--folds",
        "3",
        "--eval-png",
        png,
        "--classes",
        "happy,neutral,surprise",
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "3-fold CV, people never on both sides" in out
    assert "balanced accuracy" in out and "| accuracy |" in out
    assert "recall: happy / neutral / surprise" in out
    matrix = out[out.index("confusion matrix (rows") :].splitlines()[2:5]
    counts = [[int(v) for v in line.split()[1:]] for line in matrix]
    assert [line.split()[0] for line in matrix] == ["happy", "neutral", "surprise"]
    assert [sum(row) for row in counts] == [16, 16, 16]  # every image judged exactly once
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def test_eval_with_more_folds_than_people_is_refused(tmp_path: Path):
    root = small_lists(
        tmp_path / "ds", {"happy": sample_images("happy", 2), "sad": sample_images("sad", 2)}
    )
    r = edged_train(
        root, "-o", tmp_path / "t.yml", "--classes", "happy,sad", "--eval", "--folds", "5", "-q"
    )
    assert r.returncode == 65 and "needs at least 5 different people" in r.stderr
    assert "use --folds 4" in r.stderr
    assert not (tmp_path / "t.yml").exists()  # refused before any work


def test_help_explains_layouts_outputs_exit_codes_with_an_example():
    r = edged_train("--help")
    assert r.returncode == 0
    for words in (
        "lists",
        "legend.csv",
        "folders",
        "--skip-missing",
        "exit status",
        "65",
        "example:",
        "edged-train ~/facial_expressions",
        "atomically",
        "several datasets",
        "--layout lists --layout legend",
        "--eval-on",
        "duplicate",
        "2 labels",
    ):
        assert words in r.stdout, words


# --- links, huge images, a closed stdout ---------------------------------------------------


def test_class_folders_linking_to_the_dataset_or_a_class_are_left_out_and_the_rest_trained(
    sample_dir: Path, tmp_path: Path
):
    root = make_folders_dataset(sample_dir, tmp_path / "ds", {"happy": "happy", "sad": "sad"})
    (root / "fear").symlink_to(".")
    (root / "disgust").symlink_to("happy")
    out = tmp_path / "trainer.yml"
    r = edged_train(root, "-o", out, "--classes", "happy,sad")
    assert r.returncode == 0, r.stderr
    warnings = [x for x in r.stderr.splitlines() if x.startswith("edged-train: warning: ")]
    assert warnings == [
        "edged-train: warning: disgust/ is a link to the same folder as happy/ (disgust -> "
        "happy): left out, or its photos would be trained under two labels",
        "edged-train: warning: fear/ is a link to the dataset folder itself (fear -> .): left "
        "out, or its photos would be trained under two labels",
    ]
    rows = {x.split()[0]: x.split()[1:] for x in r.stdout.splitlines()[1:4]}
    assert rows["happy"][0] == rows["sad"][0] == "16"  # listed: each photo once
    assert load_model(out).class_names() == ["happy", "sad"]
    before = out.read_bytes()
    refused = edged_train(root, "-o", out, "--classes", "happy,sad,fear", "-q")
    assert_refused(refused, 65, "unknown class 'fear'", "fear/ was left out: it is a link to")
    assert out.read_bytes() == before


def test_an_image_above_the_pixel_limit_is_counted_unreadable_with_the_reason(tmp_path: Path):
    huge = make_huge_png(tmp_path / "Huge_0001.png")
    root = small_lists(
        tmp_path / "ds",
        {"happy": [*sample_images("happy", 4), huge], "sad": sample_images("sad", 4)},
    )
    out = tmp_path / "trainer.yml"
    r = edged_train(root, "-o", out, "--classes", "happy,sad")
    assert r.returncode == 0, r.stderr
    assert (
        "edged-train: warning: 1 images could not be read as pictures and were left out: "
        "Huge_0001.png (12000x12000 is 144 megapixels, above the limit of 50 megapixels; "
        "--max-pixels raises it)"
    ) in r.stderr.splitlines()
    happy_row = next(x.split() for x in r.stdout.splitlines() if x.startswith("happy"))
    assert happy_row[1:5] == ["5", "0", "4", "1"]  # listed, missing, read, unreadable
    small = edged_train(root, "-o", out, "--classes", "happy,sad", "--max-pixels", "100000", "-q")
    assert_refused(
        small,
        65,
        "none of the images could be read as a picture",
        "350x350 is 0.122 megapixels, above the limit of 0.1 megapixels; --max-pixels raises it",
    )


def test_edged_train_piped_to_head_exits_quietly_with_141(sample_dir: Path, tmp_path: Path):
    """head takes the table's first line and exits; the --eval report written seconds
    later meets the closed pipe."""
    cmd = shlex.join([*TRAIN, str(sample_dir), "-o", str(tmp_path / "t.yml"), "--eval"])
    cmd += " " + shlex.join(["--folds", "2", "--eval-png", str(tmp_path / "c.png")])
    err = tmp_path / "stderr"
    r = subprocess.run(
        ["bash", "-c", f'{cmd} 2>"$1" | head -1; exit "${{PIPESTATUS[0]}}"', "bash", str(err)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.stdout.split() == [
        "class",
        "listed",
        "missing",
        "read",
        "unreadable",
        "no",
        "face",
        "trained",
    ]
    # Progress and notes only: no traceback, no "Exception ignored ... BrokenPipeError".
    assert all(
        x.startswith(("edged-train: ", "finding faces: ", "evaluating: "))
        for x in err.read_text().splitlines()
    ), err.read_text()
    assert "warning" not in err.read_text() and "error" not in err.read_text()
    assert r.returncode == 141  # 128 + SIGPIPE, as a shell shows for a tool SIGPIPE ended


def test_max_pixels_is_an_option_of_edged_train_checked_like_every_number():
    assert "--max-pixels N" in edged_train("--help").stdout
    r = edged_train("ds", "--max-pixels", "-5")
    assert r.returncode == 2 and "'-5' must be in 1..1073741824" in r.stderr


# --- a full disk and a killed writer: the old model survives, nothing is left behind ------


@dataclass(frozen=True)
class FullDisk:
    """A folder holding a good model and no room for a new one, and how to run there."""

    folder: Path
    preexec: Callable[[], None] | None
    error: str  # the strerror edged-train must report


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child: its write() past ``limit`` fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _mount_tmpfs(folder: Path) -> bool:
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as e:
        print(f"tmpfs: cannot run mount ({e}): using RLIMIT_FSIZE instead")
        return False
    if r.returncode != 0:
        print(f"tmpfs: mounting is not permitted ({r.stderr.strip()}): using RLIMIT_FSIZE instead")
    return r.returncode == 0


@pytest.fixture(params=["tmpfs", "rlimit"])
def full_disk(
    request: pytest.FixtureRequest, tmp_path: Path, sample_model: Path
) -> Iterator[FullDisk]:
    """A 3 MB tmpfs filled so a new model cannot fit (where mounting is permitted), or a
    file-size limit (RLIMIT_FSIZE) below the model's size: never skipped."""
    good = sample_model.read_bytes()
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = request.param == "tmpfs" and _mount_tmpfs(folder)
    try:
        (folder / "trainer.yml").write_bytes(good)
        if mounted:
            free = shutil.disk_usage(folder).free
            if free > len(good) // 2:
                (folder / "filler").write_bytes(bytes(free - len(good) // 2))
            yield FullDisk(folder, None, "No space left on device")
        else:
            yield FullDisk(folder, _file_size_limit(len(good) // 2), "File too large")
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_clear_error_and_the_old_model_stays_byte_for_byte(
    full_disk: FullDisk, sample_dir: Path
):
    out = full_disk.folder / "trainer.yml"
    before = out.read_bytes()
    r = subprocess.run(
        [*TRAIN, str(sample_dir), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=full_disk.preexec,
        check=False,
    )
    assert_refused(r, 1, f"cannot write the model to {out}: {full_disk.error}")
    assert out.read_bytes() == before
    assert list(full_disk.folder.glob(".trainer.yml.*")) == [], "temp file left behind"
    assert load_model(out).class_names() == list(CLASSES)


def _kill_once_the_temp_file_appears(args: list[str], folder: Path) -> bool:
    """Run edged-train, SIGKILL it as soon as its temp file exists; True if the kill hit."""
    with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as p:
        try:
            while p.poll() is None:
                if any(n.startswith(".trainer.yml.") for n in os.listdir(folder)):
                    p.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.0005)
        finally:
            p.kill()
    return p.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_a_killed_trainer_leaves_no_temp_file_once_the_next_write_succeeds(
    sample_dir: Path, existing_model: tuple[Path, bytes]
):
    out, _ = existing_model
    folder = out.parent
    args = [*TRAIN, str(sample_dir), "-o", str(out), "-q", "--classes", "happy,sad"]
    hits = 0
    for _ in range(3):
        before = out.read_bytes()
        hit = _kill_once_the_temp_file_appears(args, folder)
        stale = list(folder.glob(".trainer.yml.*.tmp.yml"))
        # Each write first removes the temp files of earlier killed writers: never more than one.
        assert len(stale) <= 1, stale
        if stale:
            assert out.read_bytes() == before, "a killed writer touched the model"
        hits += hit and bool(stale)
    assert hits >= 1, "no kill landed while the temp file existed"
    r = edged_train(*args[len(TRAIN) :])
    assert r.returncode == 0, r.stderr
    assert list(folder.glob(".trainer.yml.*")) == [], "a killed writer's temp file is still there"
    assert load_model(out).class_names() == ["happy", "sad"]


@pytest.mark.slow
def test_a_model_that_does_not_load_back_is_not_written_and_the_error_says_why(
    sample_dir: Path, existing_model: tuple[Path, bytes]
):
    """The write checks the temp file by loading it: a model the daemon would refuse
    (here a scorer one row short) never replaces the old one."""
    out, before = existing_model
    fitted = train(load_dataset(sample_dir, ("happy", "sad")), out.parent / "a.yml", progress=False)
    meta = fitted.fitted.meta
    assert meta.weights is not None
    broken = replace(fitted.fitted, meta=replace(meta, weights=meta.weights[:-1]))
    expected = rf"cannot write the model to {re.escape(str(out))}: the written file does not load"
    with pytest.raises(EdgedError, match=expected + r" back \(.*weights"):
        save(broken, out)
    assert out.read_bytes() == before
    assert list(out.parent.glob(".trainer.yml.*")) == [], "temp file left behind"


# --- several datasets --------------------------------------------------------------------


WIDE_HEAD = ["listed", "missing", "duplicate", "2 labels", "read", "unreadable", "no face"]
WIDE_HEAD += ["trained"]


def test_table_with_several_datasets_has_the_merging_columns_and_a_row_per_dataset():
    first = {
        "happy": ClassCounts(listed=4, no_face=1, trained=3),
        "sad": ClassCounts(listed=4, trained=4),
    }
    second = {
        "happy": ClassCounts(listed=3, duplicate=2, two_labels=1),
        "sad": ClassCounts(listed=5, missing=1, two_labels=1, unreadable=1, trained=2),
    }
    total = {c: first[c] + second[c] for c in first}
    table = format_table(total, [("dataset 1 (lists)", first), ("dataset 2 (legend)", second)])
    rows = [line.split("  ") for line in table.splitlines()]
    rows = [[cell.strip() for cell in row if cell.strip()] for row in rows]
    assert rows == [
        ["class", *WIDE_HEAD],
        ["happy", "7", "0", "2", "1", "4", "0", "1", "3"],
        ["sad", "9", "1", "0", "1", "6", "1", "0", "6"],
        ["total", "16", "1", "2", "2", "10", "1", "1", "9"],
        ["dataset 1 (lists)", "8", "0", "0", "0", "8", "0", "1", "7"],
        ["dataset 2 (legend)", "8", "1", "2", "2", "2", "1", "0", "2"],
    ]


def test_table_of_one_dataset_shows_the_merging_columns_only_when_a_photo_needs_them():
    plain = format_table({"happy": ClassCounts(listed=2, trained=2)})
    assert plain.splitlines()[0].split() == [
        "class", "listed", "missing", "read", "unreadable", "no", "face", "trained"
    ]  # fmt: skip
    doubled = format_table({"happy": ClassCounts(listed=2, two_labels=1, trained=1)})
    assert doubled.splitlines()[0].split("  ")[1:] == [
        "listed", "missing", "2 labels", "read", "unreadable", "no face", "trained"
    ]  # fmt: skip


def _three_layouts(sample: Path, root: Path) -> list[Path]:
    """A lists dataset (anger, happy), a legend one with the dataset's spellings (sad, and
    happy photos of which 2 are the lists' own), and class folders (surprise)."""
    anger, happy = sample_images("anger", 4), sample_images("happy", 6)
    lists = small_lists(root / "lists", {"anger": anger, "happy": happy[:4]})
    rows = [(p, "SADNESS") for p in sample_images("sad", 4)]
    rows += [(p, "Happiness") for p in happy[2:]]
    legend = root / "legend"
    (legend / "images").mkdir(parents=True)
    (legend / "data").mkdir()
    for p, _ in rows:
        shutil.copy(p, legend / "images" / p.name)
    (legend / "data" / "legend.csv").write_text(
        "user.id,image,emotion\n" + "".join(f"1,{p.name},{e}\n" for p, e in rows)
    )
    folders = make_folders_dataset(SAMPLE_DIR, root / "folders", {"surprise": "surprised"})
    return [lists, legend, folders]


SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "facial_expressions"


def _rows(stdout: str) -> dict[str, list[int]]:
    """The table's rows by their name (a dataset row's name is 'dataset N (layout)')."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^(\w+|dataset \d+ \(\w+\))\s+((?:\d+\s*)+)$", line)
        if m:
            out[m.group(1)] = [int(v) for v in m.group(2).split()]
    return out


@pytest.mark.slow
def test_edged_train_merges_three_layouts_by_class_name_with_a_row_per_dataset(
    sample_dir: Path, tmp_path: Path
):
    roots = _three_layouts(sample_dir, tmp_path)
    out = tmp_path / "trainer.yml"
    r = edged_train(*roots, "-o", out, "--classes", "anger,happy,sad,surprise")
    assert r.returncode == 0, r.stderr
    notes = [x for x in r.stderr.splitlines() if x.startswith("edged-train: dataset")]
    assert notes == [
        f"edged-train: dataset 1: {roots[0]}: lists layout, 8 images in 2 classes (anger, happy)",
        f"edged-train: dataset 2: {roots[1]}: legend layout, 8 images in 2 classes (happy, sad)",
        f"edged-train: dataset 3: {roots[2]}: folders layout, 16 images in 1 class (surprise)",
    ]
    rows = _rows(r.stdout)
    # listed, missing, duplicate, 2 labels, read, unreadable, no face, trained
    assert rows["happy"][:5] == [8, 0, 2, 0, 6]  # 2 of the legend's happy are the lists'
    assert rows["total"][:5] == [32, 0, 2, 0, 30]
    assert rows["dataset 1 (lists)"][:5] == [8, 0, 0, 0, 8]
    assert rows["dataset 2 (legend)"][:5] == [8, 0, 2, 0, 6]
    assert rows["dataset 3 (folders)"][:5] == [16, 0, 0, 0, 16]
    assert sum(v[-1] for k, v in rows.items() if k.startswith("dataset")) == rows["total"][-1]
    assert load_model(out).class_names() == ["anger", "happy", "sad", "surprise"]


def test_the_same_photo_under_two_classes_in_two_datasets_is_left_out_with_a_warning(
    tmp_path: Path,
):
    happy, sad = sample_images("happy", 3), sample_images("sad", 3)
    a = small_lists(tmp_path / "a", {"happy": happy, "sad": sad})
    b = small_lists(tmp_path / "b", {"sad": [happy[0]]})  # the same bytes, called sad
    r = edged_train(a, b, "-o", tmp_path / "t.yml", "--classes", "happy,sad")
    assert r.returncode == 0, r.stderr
    assert (
        f"edged-train: warning: leaving out 1 images labelled with two classes: "
        f"{a / 'images' / happy[0].name} (happy/sad)"
    ) in r.stderr.splitlines()
    rows = _rows(r.stdout)
    assert rows["happy"][:5] == [3, 0, 0, 1, 2]  # listed, missing, duplicate, 2 labels, read
    assert rows["sad"][:5] == [4, 0, 0, 1, 3]
    assert rows["dataset 2 (lists)"][:5] == [1, 0, 0, 1, 0]


def _copy_as(src: Path, dest: Path, quality: int, scale: float = 1.0) -> Path:
    img = cv2.imread(str(src))
    if scale != 1.0:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    dest.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dest), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return dest


def test_a_reencoded_and_a_resized_copy_in_another_dataset_share_a_cv_group_with_the_original(
    tmp_path: Path,
):
    happy, sad = sample_images("happy", 5), sample_images("sad", 5)
    a = small_lists(tmp_path / "a", {"happy": happy, "sad": sad})
    b = tmp_path / "b"
    # Another site's copies of happy[0], under other people's names: one re-encoded, one resized.
    _copy_as(happy[0], b / "happy" / "Stranger_0001.jpg", 40)
    _copy_as(happy[0], b / "happy" / "Passerby_0003.jpg", 90, 0.6)
    _copy_as(sad[1], b / "happy" / "Passerby_0004.jpg", 90)  # so Passerby joins sad[1] too
    result = train(
        [load_dataset(a, ("happy", "sad")), load_dataset(b, ("happy",), "folders")],
        tmp_path / "t.yml",
        classes=("happy", "sad"),
        progress=False,
    )
    group = {s.path.name: s.fold_group for s in result.faces.readable}
    original, other = group[happy[0].name], group[sad[1].name]
    assert group["Stranger_0001.jpg"] == group["Passerby_0003.jpg"] == original == other
    assert len({g for g in group.values()}) == len(group) - 4  # nobody else joined
    assert {(x.name, y.name) for x, y in result.faces.linked} >= {
        (happy[0].name, "Stranger_0001.jpg"),
        (happy[0].name, "Passerby_0003.jpg"),
    }
    # The model's inner folds see the same groups.
    face_groups = dict(zip(result.faces.persons, result.faces.groups, strict=True))
    assert face_groups["Stranger"] == face_groups[result.faces.readable[0].person] == original
    # Every split, with or without the copies tested: never on both sides.
    items = result.faces.readable
    for tested, extra in ((items, []), ([s for s in items if 0 in s.sources], items)):
        sides: list[set[str]] = []

        def spy(train_items, sides=sides):
            sides.append({s.path.name for s in train_items})
            return Trained(None, len(train_items))

        report = cross_validate(
            tested, spy, lambda _s, _p: ("happy", 0.5), folds=3, train_only=extra
        )
        for fold, trained_on in enumerate(sides):
            held = {o.path.name for o in report.outcomes if o.fold == fold}
            family = {happy[0].name, sad[1].name, "Stranger_0001.jpg", "Passerby_0003.jpg"}
            assert not (held & family and trained_on & family), fold


@pytest.mark.slow
def test_eval_with_several_datasets_reports_the_fold_spread_and_a_score_per_source(
    sample_dir: Path, tmp_path: Path
):
    a = small_lists(
        tmp_path / "a", {"happy": sample_images("happy", 8), "sad": sample_images("sad", 8)}
    )
    b = make_legend_dataset(sample_dir, tmp_path / "b")
    r = edged_train(
        a, b, "-o", tmp_path / "t.yml", "--classes", "happy,sad", "--eval", "--folds", "2",
        "--eval-png", tmp_path / "c.png",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert re.search(
        r"^\| recall over the folds, lowest-highest \| \d+-\d+ / \d+-\d+ % \|$", r.stdout, re.M
    ), r.stdout
    assert "| source | images | balanced accuracy | recall: happy / sad |" in r.stdout
    # Every photo is tested: dataset 2's 32, of which dataset 1's 16 are a copy.
    lines = [x for x in r.stdout.splitlines() if re.match(r"^\| [12]: ", x)]
    assert [x.split(" | ")[0:2] for x in lines] == [
        [f"| 1: lists {a}", "16"],
        [f"| 2: legend {b}", "32"],
    ]


@pytest.mark.slow
def test_eval_on_tests_only_that_datasets_photos_and_trains_on_the_others_too(
    sample_dir: Path, tmp_path: Path
):
    a = small_lists(
        tmp_path / "a", {"happy": sample_images("happy", 8), "sad": sample_images("sad", 8)}
    )
    b = make_legend_dataset(sample_dir, tmp_path / "b")
    r = edged_train(
        a, b, "-o", tmp_path / "t.yml", "--classes", "happy,sad", "--eval-on", "1",
        "--folds", "2", "--eval-png", tmp_path / "c.png",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| edged | 16 images, 2-fold CV, people never on both sides |" in r.stdout
    assert "tested on dataset 1's photos only; the other 16 photos train only" in r.stdout
    matrix = r.stdout[r.stdout.index("confusion matrix (rows") :].splitlines()[2:4]
    assert [sum(int(v) for v in line.split()[1:]) for line in matrix] == [8, 8]


def test_a_missing_dataset_among_several_is_one_line_exit_65_naming_it(
    sample_dir: Path, tmp_path: Path, existing_model: tuple[Path, bytes]
):
    out, before = existing_model
    r = edged_train(sample_dir, tmp_path / "nowhere", "-o", out, "-q")
    assert_refused(r, 65, "dataset 2: dataset folder", "nowhere does not exist")
    assert out.read_bytes() == before


def test_layouts_given_neither_once_nor_once_per_dataset_is_one_line_exit_2(
    sample_dir: Path, existing_model: tuple[Path, bytes]
):
    out, before = existing_model
    r = edged_train(
        sample_dir, sample_dir, sample_dir, "--layout", "lists", "--layout", "legend", "-o", out
    )
    assert_refused(r, 2, "--layout is given 2 times for 3 datasets", "once per dataset")
    assert out.read_bytes() == before


def test_one_folder_twice_with_one_layout_is_one_line_exit_2(
    sample_dir: Path, existing_model: tuple[Path, bytes]
):
    out, before = existing_model
    r = edged_train(sample_dir, sample_dir, "-o", out)  # auto: lists both times
    assert_refused(r, 2, "dataset 2", "is dataset 1 again, with the same layout (lists)")
    assert out.read_bytes() == before


def test_eval_on_a_dataset_that_was_not_given_is_one_line_exit_2(
    sample_dir: Path, existing_model: tuple[Path, bytes]
):
    out, before = existing_model
    r = edged_train(sample_dir, "--eval-on", "2", "-o", out)
    assert_refused(r, 2, "--eval-on 2: there is only 1 dataset")
    assert out.read_bytes() == before


def test_a_step_past_its_long_work_count_shows_progress_and_a_short_one_prints_nothing():
    out = io.StringIO()
    short = trainer._progress("comparing photos", 100, True, out)
    assert short is not None
    for i in range(1, 51):
        short(i, 50)
    assert out.getvalue() == ""
    long = trainer._progress("comparing photos", 100, True, out)
    assert long is not None
    for i in range(1, 201):
        long(i, 200)
    assert out.getvalue().splitlines()[-1].startswith("comparing photos: 200/200 (100%)")
    assert trainer._progress("comparing photos", 100, False, out) is None  # -q
