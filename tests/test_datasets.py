"""Reading labelled datasets: the three layouts, label spellings, and what is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edged.errors import DatasetError
from edged.training.datasets import (
    DEFAULT_CLASSES,
    load_dataset,
    normalize_label,
    parse_classes,
    person_of,
)


def pairs(ds) -> set[tuple[str, str]]:
    return {(s.path.name, s.label) for s in ds.samples}


def make_legend_dataset(sample: Path, root: Path) -> Path:
    """The sample's images and legend only (no list files), with CRLF line ends."""
    shutil.copytree(sample / "images", root / "images")
    (root / "data").mkdir()
    text = (sample / "data" / "legend.csv").read_text()
    (root / "data" / "legend.csv").write_bytes(text.replace("\n", "\r\n").encode())
    return root


def make_folders_dataset(sample: Path, root: Path, spellings: dict[str, str]) -> Path:
    """One folder per class (named with the given spelling), from the sample's lists."""
    for cls, folder in spellings.items():
        d = root / folder / "batch1"
        d.mkdir(parents=True)
        for name in (sample / f"{cls}.txt").read_text().split():
            shutil.copy(sample / "images" / name, d / name)
        (root / folder / "notes.txt").write_text("not an image")
        (root / folder / ".DS_Store").write_bytes(b"\0\1")
    return root


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("happiness", "happy"),
        ("HAPPINESS", "happy"),
        ("SADNESS", "sad"),
        (" Surprise ", "surprise"),
        ("ANGER", "anger"),
        ("neutral", "neutral"),
        ("DISGUST", "disgust"),
        ("Fear", "fear"),
        ("contempt", "contempt"),
        ("Sleepy", "sleepy"),
    ],
)
def test_dataset_label_spellings_normalise_to_class_names(raw: str, expected: str):
    assert normalize_label(raw) == expected


def test_classes_option_normalises_and_refuses_duplicates_and_blanks():
    assert parse_classes("Anger,happiness,SAD") == ("anger", "happy", "sad")
    with pytest.raises(DatasetError, match="twice"):
        parse_classes("happy,happiness")
    with pytest.raises(DatasetError, match="empty"):
        parse_classes("happy,,sad")


@pytest.mark.parametrize(
    ("name", "person"),
    [
        ("George_W_Bush_0012.jpg", "George_W_Bush"),
        ("HrithikRoshan_37.jpg", "HrithikRoshan"),
        ("Avinash_30.jpg", "Avinash"),
        ("facial-expressions_2868585k.jpg", "facial-expressions_2868585k"),
        ("selfie.png", "selfie"),
    ],
)
def test_person_is_the_file_name_before_its_last_digits(name: str, person: str):
    assert person_of(Path(name)) == person


def test_workshop_lists_layout_reads_every_listed_image_in_workshop_id_order(sample_dir: Path):
    ds = load_dataset(sample_dir)
    assert ds.layout == "lists"
    assert ds.classes == DEFAULT_CLASSES == ("anger", "happy", "sad", "neutral", "surprise")
    assert ds.listed == dict.fromkeys(DEFAULT_CLASSES, 16)
    assert len(ds.samples) == 80 and not ds.missing and not ds.conflicts
    assert all(s.path.is_file() for s in ds.samples)


def test_legend_layout_with_dataset_spellings_gives_the_same_samples_as_the_lists(
    sample_dir: Path, tmp_path: Path
):
    root = make_legend_dataset(sample_dir, tmp_path / "legend")
    ds = load_dataset(root)
    assert ds.layout == "legend"
    assert pairs(ds) == pairs(load_dataset(sample_dir, layout="lists"))


def test_legend_offers_classes_the_lists_lack_and_auto_layout_picks_it(sample_dir: Path):
    ds = load_dataset(sample_dir, ("happy", "disgust", "fear", "contempt"))
    assert ds.layout == "legend"
    assert ds.listed == {"happy": 16, "disgust": 1, "fear": 3, "contempt": 2}


def test_folder_per_class_layout_recurses_and_ignores_non_image_files(
    sample_dir: Path, tmp_path: Path
):
    spellings = {"happy": "Happiness", "sad": "SADNESS", "surprise": "surprise"}
    root = make_folders_dataset(sample_dir, tmp_path / "folders", spellings)
    ds = load_dataset(root, ("happy", "sad", "surprise"))
    assert ds.layout == "folders"
    assert ds.listed == {"happy": 16, "sad": 16, "surprise": 16}
    expected = {p for p in pairs(load_dataset(sample_dir)) if p[1] in spellings}
    assert pairs(ds) == expected


def test_listed_files_absent_on_disk_are_reported_per_class_not_dropped_silently(
    sample_dir: Path, tmp_path: Path
):
    root = tmp_path / "ds"
    shutil.copytree(sample_dir, root)
    names = (root / "happy.txt").read_text().split()
    (root / "images" / names[0]).unlink()
    (root / "happy.txt").write_text("\n".join([*names, "Ghost_0001.jpg", ""]) + "\n")
    ds = load_dataset(root)
    assert ds.missing == {"happy": [names[0], "Ghost_0001.jpg"]}
    assert ds.listed["happy"] == 17 and ds.missing_count == 2
    assert len([s for s in ds.samples if s.label == "happy"]) == 15


def test_an_image_given_two_classes_is_left_out_and_a_repeated_one_counted_once(
    sample_dir: Path, tmp_path: Path
):
    root = tmp_path / "ds"
    shutil.copytree(sample_dir, root)
    happy = (root / "happy.txt").read_text().split()
    sad = (root / "sad.txt").read_text().split()
    (root / "sad.txt").write_text("\n".join([*sad, happy[0]]))
    (root / "happy.txt").write_text("\n".join([*happy, happy[1]]))
    ds = load_dataset(root)
    assert ds.conflicts == {f"images/{happy[0]}": ("happy", "sad")}
    assert happy[0] not in {s.path.name for s in ds.samples}
    assert ds.listed["happy"] == 16
    assert sum(s.path.name == happy[1] for s in ds.samples) == 1


def test_unknown_class_is_refused_naming_the_classes_the_dataset_has(sample_dir: Path):
    with pytest.raises(DatasetError, match=r"unknown class 'bored'.*anger.*surprise"):
        load_dataset(sample_dir, ("happy", "bored"))


def test_layout_asked_for_but_absent_is_refused(sample_dir: Path):
    with pytest.raises(DatasetError, match="no folders layout"):
        load_dataset(sample_dir, layout="folders")


def test_missing_or_empty_dataset_folder_is_refused(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="holds no dataset"):
        load_dataset(tmp_path)
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="is not a folder"):
        load_dataset(tmp_path / "file.jpg")


def test_legend_without_image_and_emotion_columns_is_refused(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "legend.csv").write_text("name,label\na.jpg,happy\n")
    with pytest.raises(DatasetError, match="no 'image' and 'emotion' columns"):
        load_dataset(tmp_path, layout="legend")


@pytest.mark.dataset
def test_full_workshop_dataset_reads_in_both_layouts_and_flags_its_contradicting_row(
    shared_dataset: Path,
):
    lists = load_dataset(shared_dataset)
    assert lists.layout == "lists" and not lists.missing
    assert sum(lists.listed.values()) == len(lists.samples) > 900
    legend = load_dataset(shared_dataset, layout="legend")
    # Avinash_30.jpg is both SURPRISE and SADNESS in legend.csv: neither class gets it.
    assert legend.conflicts.get("images/Avinash_30.jpg") == ("sad", "surprise")
    assert len(legend.samples) > len(lists.samples)
