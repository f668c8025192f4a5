"""Reading labelled datasets: the three layouts, label spellings, what is missing, and
several datasets merged (each photo once by its bytes; near-duplicates in one group)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.errors import DatasetError
from edged.labels import normalize_label
from edged.training.datasets import (
    DEFAULT_CLASSES,
    NEAR_DUPLICATE,
    Collection,
    RepeatedDataset,
    content_keys,
    fingerprint,
    group_people,
    load_dataset,
    load_datasets,
    merge,
    near_duplicates,
    parse_classes,
    person_of,
    photos_of,
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


# --- several datasets: merged by class name, each photo (by its bytes) once ------------------


def _lists(sample: Path, root: Path, classes: dict[str, int]) -> Path:
    """A lists-layout dataset with the first n sample photos of each class."""
    (root / "images").mkdir(parents=True)
    for cls, n in classes.items():
        names = (sample / f"{cls}.txt").read_text().split()[:n]
        for name in names:
            shutil.copy(sample / "images" / name, root / "images" / name)
        (root / f"{cls}.txt").write_text("\n".join(names) + "\n")
    return root


def _legend(sample: Path, root: Path, rows: list[tuple[str, str]]) -> Path:
    """A legend-layout dataset: (photo name in the sample, label as the legend spells it)."""
    (root / "images").mkdir(parents=True)
    (root / "data").mkdir()
    for name, _ in rows:
        shutil.copy(sample / "images" / name, root / "images" / name)
    text = "user.id,image,emotion\n" + "".join(f"1,{n},{e}\n" for n, e in rows)
    (root / "data" / "legend.csv").write_text(text)
    return root


def _merged(specs: list[tuple[Path, str]], classes: tuple[str, ...]) -> Collection:
    parts = load_datasets(specs, classes)
    return merge(parts, content_keys(photos_of(parts)), classes)


def _names(sample: Path, cls: str) -> list[str]:
    return (sample / f"{cls}.txt").read_text().split()


def test_three_datasets_in_three_layouts_merge_by_normalised_class_name(
    sample_dir: Path, tmp_path: Path
):
    lists = _lists(sample_dir, tmp_path / "a", {"anger": 3, "happy": 3})
    sad = _names(sample_dir, "sad")[:2]
    legend = _legend(sample_dir, tmp_path / "b", [(sad[0], "SADNESS"), (sad[1], "sadness")])
    folders = make_folders_dataset(sample_dir, tmp_path / "c", {"happy": "HAPPINESS"})
    classes = ("anger", "happy", "sad")
    photos = _merged([(lists, "auto"), (legend, "auto"), (folders, "auto")], classes)
    assert [ds.layout for ds in photos.parts] == ["lists", "legend", "folders"]
    assert [ds.classes for ds in photos.parts] == [("anger", "happy"), ("sad",), ("happy",)]
    by_class = {c: sorted(s.path.name for s in photos.samples if s.label == c) for c in classes}
    assert by_class == {
        "anger": sorted(_names(sample_dir, "anger")[:3]),
        "happy": sorted(_names(sample_dir, "happy")),  # 16 from the folders: 3 of them twice
        "sad": sorted(sad),
    }
    assert photos.duplicate[2] == {"happy": 3}  # the folders' copies of the lists' photos
    assert not photos.conflicts and not any(photos.two_labels)


def test_the_same_bytes_in_two_datasets_are_one_photo_counted_by_the_first(
    sample_dir: Path, tmp_path: Path
):
    a = _lists(sample_dir, tmp_path / "a", {"happy": 2, "sad": 2})
    b = _lists(sample_dir, tmp_path / "b", {"happy": 1})
    original = b / "images" / _names(sample_dir, "happy")[0]
    renamed = original.with_name("Someone_Else_0007.jpg")  # the same bytes, another name
    original.rename(renamed)
    (b / "happy.txt").write_text(renamed.name + "\n")
    photos = _merged([(a, "lists"), (b, "lists")], ("happy", "sad"))
    assert len(photos.samples) == 4
    first = next(s for s in photos.samples if s.path.name == original.name)
    assert first.sources == (0, 1) and first.path.parent == a / "images"
    assert photos.duplicate == [{}, {"happy": 1}]
    # The copy's name is another person's: that person and the original's are one group.
    assert photos.same_photo == [(first.person, "Someone_Else")]


def test_the_same_bytes_under_two_classes_in_two_datasets_are_left_out_of_both(
    sample_dir: Path, tmp_path: Path
):
    a = _lists(sample_dir, tmp_path / "a", {"happy": 3, "sad": 3})
    happy = _names(sample_dir, "happy")[0]
    b = _legend(sample_dir, tmp_path / "b", [(happy, "SADNESS")])
    photos = _merged([(a, "lists"), (b, "legend")], ("happy", "sad"))
    assert happy not in {s.path.name for s in photos.samples}
    assert len(photos.samples) == 5
    assert photos.conflicts == {str(a / "images" / happy): ("happy", "sad")}
    assert photos.two_labels == [{"happy": 1}, {"sad": 1}]


def test_a_photo_one_dataset_labels_twice_is_left_out_where_another_labels_it_once(
    sample_dir: Path, tmp_path: Path
):
    """The workshop dataset's Avinash_30.jpg: one class in a list, two in the legend."""
    a = _lists(sample_dir, tmp_path / "a", {"happy": 2, "sad": 2})
    happy = _names(sample_dir, "happy")[0]
    b = _legend(sample_dir, tmp_path / "b", [(happy, "HAPPINESS"), (happy, "SADNESS")])
    shutil.rmtree(b / "images")
    (b / "images").symlink_to(a / "images")  # the same files, as in the workshop dataset
    photos = _merged([(a, "lists"), (b, "legend")], ("happy", "sad"))
    assert happy not in {s.path.name for s in photos.samples}
    assert set(photos.conflicts.values()) == {("happy", "sad")}
    assert photos.two_labels == [{"happy": 1}, {"happy": 1, "sad": 1}]


def test_content_keys_read_only_files_whose_size_another_file_shares(tmp_path: Path):
    one, twin, other, alone = (tmp_path / n for n in ("one", "twin", "other", "alone"))
    one.write_bytes(b"abcd")
    twin.write_bytes(b"abcd")
    other.write_bytes(b"abce")  # same size, other bytes
    alone.write_bytes(b"a longer file")
    os.link(alone, tmp_path / "hard")
    keys = content_keys([one, twin, other, alone, tmp_path / "hard", tmp_path / "gone"])
    assert keys[one] == keys[twin] != keys[other]
    assert keys[one].startswith("sha256:")
    assert keys[alone] == keys[tmp_path / "hard"] and keys[alone].startswith("file:")
    assert keys[tmp_path / "gone"] == f"path:{tmp_path / 'gone'}"


def test_a_dataset_may_have_only_some_classes_but_each_class_must_be_in_one(
    sample_dir: Path, tmp_path: Path
):
    a = _lists(sample_dir, tmp_path / "a", {"happy": 2})
    b = _lists(sample_dir, tmp_path / "b", {"sad": 2})
    parts = load_datasets([(a, "auto"), (b, "auto")], ("happy", "sad"))
    assert [p.classes for p in parts] == [("happy",), ("sad",)]
    with pytest.raises(DatasetError, match=r"unknown class 'fear': no dataset has it \(1: lists"):
        load_datasets([(a, "auto"), (b, "auto")], ("happy", "sad", "fear"))
    with pytest.raises(DatasetError, match=r"dataset 2: .* has none of the classes happy"):
        load_datasets([(a, "auto"), (b, "auto")], ("happy",))


def test_a_missing_dataset_among_several_is_refused_naming_its_number(
    sample_dir: Path, tmp_path: Path
):
    with pytest.raises(DatasetError, match=r"^dataset 2: dataset folder .*nope does not exist$"):
        load_datasets([(sample_dir, "auto"), (tmp_path / "nope", "auto")])


def test_one_folder_given_twice_with_one_layout_is_refused_but_two_layouts_are_read(
    sample_dir: Path,
):
    again = r"dataset 2 \(.*\) is dataset 1 again, with the same layout \(lists\)"
    with pytest.raises(RepeatedDataset, match=again):
        load_datasets([(sample_dir, "auto"), (sample_dir / "images" / "..", "lists")])
    lists, legend = load_datasets([(sample_dir, "lists"), (sample_dir, "legend")])
    assert (lists.layout, legend.layout) == ("lists", "legend")


# --- near-duplicates: re-encoded or resized copies share an evaluation group -----------------


def _gray(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def _reencoded(path: Path, quality: int, scale: float = 1.0) -> np.ndarray:
    """The photo as another site would serve it: resized, JPEG at another quality, decoded."""
    img = cv2.imread(str(path))
    if scale != 1.0:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def test_a_reencoded_and_a_resized_copy_are_near_duplicates_and_no_two_sample_photos_are(
    sample_dir: Path,
):
    photos = sorted((sample_dir / "images").glob("*.jpg"))
    prints = [fingerprint(_gray(p)) for p in photos]
    # 86 photos, several people with two or more: no pair is near-identical.
    assert near_duplicates(prints) == []
    same_person = [
        float(prints[i] @ prints[j])
        for i in range(len(photos))
        for j in range(i + 1, len(photos))
        if person_of(photos[i]) == person_of(photos[j])
    ]
    assert len(same_person) >= 5 and max(same_person) < NEAR_DUPLICATE - 0.02
    for p in photos[::9]:
        copies = [_reencoded(p, 30), _reencoded(p, 95, 0.5), _reencoded(p, 75, 0.3)]
        sims = [float(fingerprint(c) @ prints[photos.index(p)]) for c in copies]
        assert min(sims) >= NEAR_DUPLICATE, (p.name, sims)
        found = near_duplicates([*prints, *(fingerprint(c) for c in copies)])
        n, i = len(photos), photos.index(p)
        # Each copy with the photo and the copies with each other; nothing else.
        assert set(found) == {(a, b) for a in (i, n, n + 1) for b in (n, n + 1, n + 2) if a < b}


def test_linked_people_share_one_group_through_any_chain_and_the_rest_keep_their_own():
    group = group_people(["Ann", "Bob", "Cid", "Dee", "Eve"], [("Cid", "Bob"), ("Dee", "Cid")])
    assert group == {"Ann": "Ann", "Bob": "Bob", "Cid": "Bob", "Dee": "Bob", "Eve": "Eve"}
    assert group_people(["Ann"], [("Zed", "Ann")]) == {"Ann": "Ann", "Zed": "Ann"}


@pytest.mark.dataset
@pytest.mark.slow
def test_workshop_fingerprints_join_no_two_people_and_find_every_copy(shared_dataset: Path):
    """The threshold on the full dataset's 2363 photos: no two different people's photos
    are near-duplicates; re-encoded and resized copies of every 25th photo all are."""
    photos = sorted(p for p in (shared_dataset / "images").iterdir() if p.suffix == ".jpg")
    prints = [fingerprint(_gray(p)) for p in photos]
    pairs = near_duplicates(prints)
    assert all(person_of(photos[i]) == person_of(photos[j]) for i, j in pairs), [
        (photos[i].name, photos[j].name) for i, j in pairs
    ]
    for p in photos[::25]:
        img = _gray(p)
        if min(img.shape) < 200:
            continue  # a copy shrunk below 64 px is not what this is about
        for copy in (_reencoded(p, 20), _reencoded(p, 75, 0.25), _reencoded(p, 90, 2.0)):
            assert float(fingerprint(copy) @ prints[photos.index(p)]) >= NEAR_DUPLICATE, p.name


def test_the_same_bytes_twice_in_one_dataset_are_one_photo_and_under_two_classes_none(
    sample_dir: Path, tmp_path: Path
):
    root = _lists(sample_dir, tmp_path / "a", {"happy": 3, "sad": 3})
    happy, sad = _names(sample_dir, "happy")[:3], _names(sample_dir, "sad")[:3]
    shutil.copy(root / "images" / happy[0], root / "images" / "Copy_0001.jpg")
    shutil.copy(root / "images" / happy[1], root / "images" / "Copy_0002.jpg")
    (root / "happy.txt").write_text("\n".join([*happy, "Copy_0001.jpg"]))
    (root / "sad.txt").write_text("\n".join([*sad, "Copy_0002.jpg"]))
    photos = _merged([(root, "lists")], ("happy", "sad"))
    assert sorted(s.path.name for s in photos.samples) == sorted([*happy[::2], *sad])
    assert photos.duplicate == [{"happy": 1}]
    assert photos.conflicts == {f"images/{happy[1]}": ("happy", "sad")}
    assert photos.two_labels == [{"happy": 1, "sad": 1}]
