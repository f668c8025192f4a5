"""Reading labelled datasets: the three layouts, label spellings, and what is missing."""

from __future__ import annotations

import os
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


# --- links: a photo is never trained under two labels -------------------------------------

TWO = ("happy", "sad")


def _two_classes(sample: Path, root: Path) -> Path:
    return make_folders_dataset(sample, root, {"happy": "happy", "sad": "sad"})


def _photos(root: Path) -> dict[str, set[str]]:
    """Each real photo of the happy/ and sad/ folders, by class: what must be trained."""
    return {c: {p.name for p in (root / c).rglob("*.jpg")} for c in TWO}


def _by_class(ds) -> dict[str, list[str]]:
    return {c: sorted(s.path.name for s in ds.samples if s.label == c) for c in ds.classes}


@pytest.mark.parametrize(
    ("target", "why"),
    [
        (".", "fear/ is a link to the dataset folder itself (fear -> .)"),
        ("..", "fear/ is a link to a folder that holds the dataset (fear -> ..)"),
        ("happy", "fear/ is a link to the same folder as happy/ (fear -> happy)"),
        ("sad/batch1", "fear/ is a link into sad/ (fear -> sad/batch1)"),
    ],
    ids=["to-the-dataset", "to-a-folder-above", "to-another-class", "into-another-class"],
)
def test_a_class_folder_that_links_to_the_dataset_or_another_class_is_left_out_with_a_warning(
    sample_dir: Path, tmp_path: Path, target: str, why: str
):
    root = _two_classes(sample_dir, tmp_path / "ds")
    (root / "fear").symlink_to(target)
    ds = load_dataset(root, TWO)
    assert ds.layout == "folders" and ds.available == TWO
    assert ds.warnings == (f"{why}: left out, or its photos would be trained under two labels",)
    photos = _photos(root)
    assert _by_class(ds) == {c: sorted(photos[c]) for c in TWO}  # each photo once, its own label
    assert not ds.conflicts
    with pytest.raises(DatasetError) as e:  # asked for by name, it is refused, saying why
        load_dataset(root, ("happy", "fear"))
    assert str(e.value).endswith(f"; {why.replace('/ is', '/ was left out: it is', 1)}")


def test_a_class_folder_linking_to_another_class_leaves_that_class_untouched(
    sample_dir: Path, tmp_path: Path
):
    root = _two_classes(sample_dir, tmp_path / "ds")
    (root / "anger").symlink_to("happy")
    ds = load_dataset(root, TWO, layout="folders")
    assert len(ds.warnings) == 1 and ds.warnings[0].startswith("anger/ is a link to the same")
    assert ds.listed == {"happy": 16, "sad": 16}


def test_a_photo_reached_under_two_classes_through_a_link_or_hard_link_is_left_out_of_both(
    sample_dir: Path, tmp_path: Path
):
    root = _two_classes(sample_dir, tmp_path / "ds")
    sad = sorted((root / "sad" / "batch1").glob("*.jpg"))
    (root / "happy" / "Linked_0001.jpg").symlink_to(root / "sad" / "batch1" / sad[0].name)
    os.link(sad[1], root / "happy" / "batch1" / "Hardlinked_0001.jpg")
    ds = load_dataset(root, TWO)
    assert set(ds.conflicts.values()) == {TWO}
    assert len(ds.conflicts) == 2
    trained = {s.path.resolve() for s in ds.samples}
    assert sad[0].resolve() not in trained and sad[1].resolve() not in trained
    assert ds.listed == {"happy": 18, "sad": 16}


def test_listing_class_folders_never_follows_a_link_loop(sample_dir: Path, tmp_path: Path):
    root = _two_classes(sample_dir, tmp_path / "ds")
    (root / "happy" / "batch1" / "up").symlink_to("../..")  # the dataset again, from inside
    (root / "sad" / "again").symlink_to(".")
    ds = load_dataset(root, TWO)
    assert ds.listed == {"happy": 16, "sad": 16}
    assert ds.warnings == (
        "happy/batch1/up -> ../.. leads back to a folder above it or already searched: "
        "not followed",
        "sad/again -> . leads back to a folder above it or already searched: not followed",
    )


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
