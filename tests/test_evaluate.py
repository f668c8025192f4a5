"""The evaluation protocol is pinned, so the published figures cannot drift upward by accident.

The protocol tests drive `cross_validate` with small hand-written train/predict callables:
they test the bookkeeping (who is on which side, what counts as a miss, the arithmetic),
not a recognizer. The real pipeline is run through the same protocol further down.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.training.datasets import load_dataset, person_folds
from edged.training.evaluate import (
    EvalReport,
    Item,
    Labelled,
    Outcome,
    Trained,
    balanced_accuracy,
    cross_validate,
    edged_pipeline,
    expected_calibration_error,
    format_report,
    format_sources,
    recall_per_class,
    write_confusion_png,
)

CLASSES = ("anger", "happy", "sad", "neutral", "surprise")


def toy_items() -> list[Item]:
    """30 people with 1-6 photos each, one person with 40 (the dataset has such people)."""
    items = []
    for p in range(30):
        for k in range(1 + p % 6):
            items.append(Item(Path(f"/x/p{p}_{k:04d}.jpg"), CLASSES[(p + k) % 5], f"p{p}"))
    items += [Item(Path(f"/x/big_{k:04d}.jpg"), CLASSES[k % 5], "big") for k in range(40)]
    return items


def test_folds_keep_every_person_on_one_side_and_cover_every_image_once():
    items = toy_items()
    folds = person_folds([it.person for it in items], 5, seed=3)
    flat = [i for f in folds for i in f]
    assert sorted(flat) == list(range(len(items)))
    owner = {}
    for f, idx in enumerate(folds):
        for i in idx:
            assert owner.setdefault(items[i].person, f) == f
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 40  # dealt largest first: only "big" can unbalance


def test_folds_are_reproducible_for_a_seed():
    items = toy_items()
    people = [it.person for it in items]
    assert person_folds(people, 4, seed=1) == person_folds(people, 4, seed=1)


def test_cross_validation_refuses_fewer_people_than_folds():
    items = [Item(Path("a.jpg"), "happy", "ann"), Item(Path("b.jpg"), "sad", "bob")]
    with pytest.raises(ValueError, match="2 people cannot fill 3 folds"):
        cross_validate(items, lambda _: Trained(None, 0), lambda _s, _p: (None, 0.0), folds=3)
    assert person_folds(["ann", "bob"], 3) == [[0], [1]]  # as many folds as people


def test_no_person_is_ever_predicted_by_a_model_trained_on_them():
    items = toy_items()
    leaks: list[str] = []
    predicted: list[Path] = []
    by_path = {it.path: it for it in items}

    def train(train_items: Sequence[Labelled]) -> Trained:
        return Trained({it.person for it in train_items}, len(train_items))

    def predict(seen: set[str], path: Path) -> tuple[str | None, float]:
        predicted.append(path)
        if by_path[path].person in seen:
            leaks.append(by_path[path].person)
        return "happy", 0.5

    report = cross_validate(items, train, predict, folds=5, classes=CLASSES)
    assert not leaks
    assert sorted(predicted) == sorted(it.path for it in items)  # every image, exactly once
    assert len(report.outcomes) == len(items)
    assert report.train_images == 4 * len(items)  # each image trains in k-1 folds


def test_an_image_whose_face_is_not_found_counts_as_a_miss():
    items = [Item(Path(f"/x/p{i}_0001.jpg"), CLASSES[i % 2], f"p{i}") for i in range(10)]

    def train(train_items: Sequence[Labelled]) -> Trained:
        return Trained(None, len(train_items) - 1)  # one training image had no face

    def predict(_: object, path: Path) -> tuple[str | None, float]:
        i = int(path.stem[1:].split("_")[0])
        return (None, 0.0) if i < 4 else (CLASSES[i % 2], 0.9)  # right whenever found

    report = cross_validate(items, train, predict, folds=2, classes=CLASSES[:2])
    assert report.face_rate_test == pytest.approx(0.6)
    assert report.face_rate_train == pytest.approx((10 - 2) / 10)
    assert report.accuracy == pytest.approx(0.6)  # not 1.0: misses are counted
    assert report.balanced_accuracy == pytest.approx(0.6)
    m = report.confusion()
    assert m[:, -1].tolist() == [2, 2]  # the "no face" column
    assert report.ece == pytest.approx(0.1)  # over the 6 answered: 100% right at 0.9


def test_balanced_accuracy_is_the_mean_of_per_class_recall_on_a_hand_made_example():
    truth = ["a", "a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "a", None, "b", "a", "b"]
    assert recall_per_class(truth, pred, ["a", "b", "c"]) == {"a": 0.75, "b": 0.5, "c": 0.0}
    assert balanced_accuracy(truth, pred, ["a", "b", "c"]) == pytest.approx((0.75 + 0.5) / 3)
    # A class with no images is left out, not counted as 0 or 1.
    assert balanced_accuracy(truth, pred, ["a", "b", "c", "d"]) == pytest.approx(1.25 / 3)
    assert math.isnan(recall_per_class(truth, pred, ["d"])["d"])


def test_expected_calibration_error_on_a_hand_made_example():
    conf = np.array([0.95, 0.95, 0.65, 0.65, 0.25])
    ok = np.array([1, 0, 1, 1, 0])
    # bins (0.9,1]: acc .5 vs .95; (0.6,0.7]: acc 1 vs .65; (0.2,0.3]: acc 0 vs .25
    expected = 2 / 5 * 0.45 + 2 / 5 * 0.35 + 1 / 5 * 0.25
    assert expected_calibration_error(conf, ok) == pytest.approx(expected)
    assert expected_calibration_error(np.array([0.75] * 4), np.array([1, 1, 1, 0])) == 0.0
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0


def fake_report() -> EvalReport:
    rng = np.random.default_rng(0)
    outcomes = []
    for i in range(50):
        truth = CLASSES[i % 5]
        pred = None if i % 10 == 0 else (truth if rng.random() < 0.6 else CLASSES[(i + 1) % 5])
        outcomes.append(Outcome(Path(f"{i}.jpg"), truth, pred, float(rng.random()), i % 2))
    return EvalReport(list(CLASSES), outcomes, 2, 100, 96, "toy")


def test_report_table_shows_every_figure_the_issue_asks_for():
    report = fake_report()
    text = format_report(report)
    assert f"{report.balanced_accuracy:.1%}" in text
    assert "96.0% / 90.0%" in text  # face found, training / test
    assert "anger / happy / sad / neutral / surprise" in text
    assert f"{report.ece:.3f}" in text
    assert "accuracy by confidence" in text


def test_confusion_png_is_a_readable_image(tmp_path: Path):
    path = tmp_path / "out" / "confusion.png"
    write_confusion_png(fake_report(), path)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 400


@pytest.mark.slow
def test_edged_pipeline_runs_through_the_protocol_on_the_sample(sample_dir: Path):
    ds = load_dataset(sample_dir, CLASSES)
    train, predict = edged_pipeline()
    report = cross_validate(ds.samples, train, predict, folds=2, classes=list(ds.classes))
    assert len(report.outcomes) == len(ds.samples) == 80
    assert report.face_rate_test > 0.9 and report.face_rate_train > 0.9
    conf, _ = report.answered()
    assert ((conf >= 1 / 5 - 1e-9) & (conf <= 1.0)).all()


@pytest.mark.dataset
@pytest.mark.slow
def test_protocol_on_the_full_dataset_keeps_people_apart(shared_dataset: Path):
    """A 2-fold run on a subset: protocol properties only (figures come from the bench)."""
    ds = load_dataset(shared_dataset, CLASSES)
    people = sorted({s.person for s in ds.samples})[::4]  # a quarter of the people
    subset = [s for s in ds.samples if s.person in set(people)][:240]
    folds = person_folds([s.person for s in subset], 2)
    sides = [{subset[i].person for i in f} for f in folds]
    assert not sides[0] & sides[1]
    train, predict = edged_pipeline()
    report = cross_validate(subset, train, predict, folds=2, classes=CLASSES)
    assert sorted(o.path for o in report.outcomes) == sorted(s.path for s in subset)
    assert 0.0 <= report.balanced_accuracy <= 1.0


# --- groups, training-only items, the spread over folds, scores per source ----------------


def test_people_given_one_group_are_always_on_the_same_side():
    items = toy_items()
    # p1's and p2's photos are near-duplicates of each other's: one group.
    items = [Item(it.path, it.label, it.person, "p1" if it.person == "p2" else "") for it in items]
    sides: list[set[str]] = []

    def train(train_items: Sequence[Labelled]) -> Trained:
        sides.append({it.person for it in train_items})
        return Trained(None, len(train_items))

    report = cross_validate(items, train, lambda _s, _p: ("happy", 0.5), folds=5, classes=CLASSES)
    for fold, trained_on in enumerate(sides):
        tested = {o.path.stem.split("_")[0] for o in report.outcomes if o.fold == fold}
        assert ("p1" in tested) == ("p2" in tested)
        assert not tested & trained_on


def _spy(log: list[set[Path]]):
    def train(train_items: Sequence[Labelled]) -> Trained:
        log.append({it.path for it in train_items})
        return Trained(None, len(train_items))

    return train


def test_train_only_items_are_never_tested_and_never_train_beside_their_group_in_the_test_fold():
    items = toy_items()
    extra = [
        # Another dataset's photos: a tested person's, a near-duplicate of p3 under another
        # name (its group is p3's), the very file of a tested photo, and new people.
        Item(Path("/y/p0_0100.jpg"), "happy", "p0"),
        Item(Path("/y/Copy_0001.jpg"), "sad", "Copy", group="p3"),
        Item(items[0].path, items[0].label, "renamed"),
        *(Item(Path(f"/y/new{i}_0001.jpg"), CLASSES[i % 5], f"new{i}") for i in range(20)),
    ]
    trained: list[set[Path]] = []
    predicted: list[Path] = []

    def predict(_: object, path: Path) -> tuple[str | None, float]:
        predicted.append(path)
        return "happy", 0.5

    report = cross_validate(
        items, _spy(trained), predict, folds=5, classes=CLASSES, train_only=extra
    )
    assert sorted(predicted) == sorted(it.path for it in items)  # extras never tested
    for fold, paths in enumerate(trained):
        tested = [o.path for o in report.outcomes if o.fold == fold]
        groups = {it.group or it.person for it in items if it.path in tested}
        assert not paths & set(tested)
        for it in extra:
            beside = (it.group or it.person) in groups or it.path in tested
            assert (it.path in paths) != beside, (fold, it)
    assert all(any(it.path in paths for paths in trained) for it in extra[3:])


def test_train_only_items_leave_the_folds_as_they_were():
    items = toy_items()
    extra = [Item(Path(f"/y/new{i}_0001.jpg"), "sad", f"new{i}") for i in range(30)]
    alone = cross_validate(items, _spy([]), lambda _s, _p: ("happy", 0.5), folds=5)
    more = cross_validate(items, _spy([]), lambda _s, _p: ("happy", 0.5), folds=5, train_only=extra)
    assert {(o.path, o.fold) for o in alone.outcomes} == {(o.path, o.fold) for o in more.outcomes}
    assert more.train_images == alone.train_images + 5 * len(extra)


def test_a_model_of_another_dataset_alone_is_trained_on_its_photos_only():
    items = toy_items()
    extra = [Item(Path(f"/y/new{i}_0001.jpg"), "sad", f"new{i}") for i in range(10)]
    trained: list[set[Path]] = []
    cross_validate(
        items,
        _spy(trained),
        lambda _s, _p: ("happy", 0.5),
        folds=5,
        train_only=extra,
        train_on_items=False,
    )
    assert trained == [{it.path for it in extra}] * 5


def test_fold_spread_is_each_class_lowest_and_highest_recall_over_the_folds():
    outcomes = [
        Outcome(Path("a1"), "happy", "happy", 0.9, 0),
        Outcome(Path("a2"), "happy", "sad", 0.6, 0),
        Outcome(Path("a3"), "sad", "sad", 0.7, 0),
        Outcome(Path("b1"), "happy", "happy", 0.8, 1),
        Outcome(Path("b2"), "sad", None, 0.0, 1),
        Outcome(Path("c1"), "happy", "sad", 0.5, 2),  # no sad photo in fold 2
    ]
    report = EvalReport(["happy", "sad"], outcomes, 3)
    assert report.fold_recalls()["happy"] == [0.5, 1.0, 0.0]
    assert report.recall_spread() == {"happy": (0.0, 1.0), "sad": (0.0, 1.0)}
    assert math.isnan(report.fold_recalls()["sad"][2])
    assert "| recall over the folds, lowest-highest | 0-100 / 0-100 % |" in format_report(report)


def test_the_score_per_source_is_computed_on_that_sources_photos_alone():
    outcomes = [
        Outcome(Path("a"), "happy", "happy", 0.9, 0),
        Outcome(Path("b"), "sad", "happy", 0.6, 0),
        Outcome(Path("c"), "sad", "sad", 0.7, 1),
        Outcome(Path("d"), "happy", "happy", 0.8, 1),
    ]
    report = EvalReport(["happy", "sad"], outcomes, 2)
    table = format_sources(
        report, [("1: lists A", [Path("a"), Path("b")]), ("2: legend B", [Path("b"), Path("c")])]
    )
    lines = table.splitlines()
    assert lines[0] == "| source | images | balanced accuracy | recall: happy / sad |"
    assert lines[2] == "| 1: lists A | 2 | 50.0% | 100 / 0 % |"
    assert lines[3] == "| 2: legend B | 2 | 50.0% | - / 50 % |"  # no happy photo: no recall


@pytest.mark.slow
def test_the_layout_bench_prints_its_three_rows_on_the_sample(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """``python -m bench.layouts`` keeps running as the code it measures changes (its
    figures come from the full dataset; here only its shape is checked)."""
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from bench import layouts

    args = ["--dataset", str(sample_dir), "--cache", str(tmp_path), "--folds", "2"]
    assert layouts.main(args) == 0
    out = capsys.readouterr().out
    rows = [x for x in out.splitlines() if x.startswith("| ") and " s |" in x]
    names = [x.split(" | ")[0] for x in rows]
    assert names == ["| lists alone", "| legend (on the lists photos)", "| lists + legend"]
    assert "80 lists photos" in out
    assert len(list(tmp_path.glob("faces-*.npz"))) == 1  # a rerun reads the faces from here
