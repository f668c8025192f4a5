"""Enrolled people's exemplars, measured: ``python -m bench.enrollment`` (issue 17).

Protocol (the issue's): the people of the workshop dataset (lists + legend, as
``bench.layouts`` reads them) with at least two photos in at least two classes are
dealt into 5 person-grouped folds (largest first, snake-wise); every other person goes
to the smallest fold. Per fold, the *generic* model is `fitting.fit_histograms` on the
other folds (default `FitConfig`, its gate thresholds from those people), so it never
sees a tested person. Each eligible person of the fold is enrolled, all at once (the
household case: a face may be taken for another enrolled person), with k random photos
of each class they have 2+ photos of (at most n - 1, so each keeps a test photo), and
tested on their other photos minus near-duplicates (fingerprint correlation >= 0.98) of
the enrolled ones. Generic vs enrolled (`exemplars.compose`, `predict_face`: the code the
daemon runs) on the same photos, per-person balanced accuracy averaged over draws, then
macro over persons, with a 95% bootstrap interval over persons of the difference. The
fold's other people (never enrolled, never trained on) are scored before and after.

Also: the time of ``edged-train --base-model`` adding one person's 5 expressions to a
model file (the fast path, the real command), and predict time and file size with 10
persons x 5 expressions x `exemplars.CAP` crops. ``--gate`` prints `gate_table` on the
whole dataset (`exemplars.DEFAULT_GATE`).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench import layouts
from edged.enrollment.store import EnrollmentStore
from edged.training import fitting, trainer
from edged.training.datasets import load_dataset
from edged.vision import histograms
from edged.vision.detector import Gray
from edged.vision.exemplars import CAP, Crop, Exemplars, compose, gate_table
from edged.vision.model import ExpressionModel
from edged.vision.model_file import load_model, write_model

NFOLDS = 5
NEAR_DUPLICATE = 0.98
Floats = npt.NDArray[np.float64]


def note(msg: str) -> None:
    print(f"bench.enrollment: {msg}", file=sys.stderr, flush=True)


class Data:
    """Every photo with a face: prepared faces, class index, person, fingerprint."""

    def __init__(self, cache: Path) -> None:
        cfg = fitting.FitConfig()
        lists = load_dataset(layouts.FULL, layouts.CLASSES, "lists")
        legend = load_dataset(layouts.FULL, layouts.CLASSES, "legend")
        photos = trainer.collect([lists, legend], layouts.CLASSES)
        faces = layouts.faces_of(photos, cfg, cache)
        trainer.assign_groups(faces, photos)
        items = [s for s in faces.readable if faces.by_path.get(s.path) is not None]
        keep = [i for i, s in enumerate(faces.readable) if faces.by_path.get(s.path) is not None]
        ids = {c: i for i, c in enumerate(layouts.CLASSES)}
        self.faces: list[Gray] = [f for s in items if (f := faces.by_path[s.path]) is not None]
        self.y = np.array([ids[s.label] for s in items])
        self.person = np.array([s.person for s in items])
        self.group = np.array([s.fold_group for s in items])
        prints = np.array(faces.prints, np.float32)[keep]
        self.prints = prints / np.maximum(np.linalg.norm(prints, axis=1, keepdims=True), 1e-9)
        t = time.monotonic()
        self.h = histograms.lbph_histograms(self.faces, cfg.lbph)
        mirrored = [np.ascontiguousarray(f[:, ::-1]) for f in self.faces]
        self.m = histograms.lbph_histograms(mirrored, cfg.lbph)
        note(f"{len(self.faces)} faces, histograms in {time.monotonic() - t:.0f} s")
        self.key = hashlib.sha256(self.h.tobytes()).hexdigest()[:12]


def eligible(person: Sequence[str], y: Sequence[int]) -> list[str]:
    """People with at least two photos in at least two classes."""
    count = collections.Counter(zip(person, y, strict=True))
    classes = collections.Counter(p for (p, _), n in count.items() if n >= 2)
    return sorted(p for p, n in classes.items() if n >= 2)


def folds(person: npt.NDArray[np.str_], el: Sequence[str], seed: int = 0) -> npt.NDArray[np.int64]:
    """Fold of each face: eligible people snake-wise by size, the others to the smallest."""
    cnt = collections.Counter(person.tolist())
    fold_of: dict[str, int] = {}
    for i, p in enumerate(sorted(el, key=lambda p: (-cnt[p], p))):
        r = i % (2 * NFOLDS)
        fold_of[p] = r if r < NFOLDS else 2 * NFOLDS - 1 - r
    load = [0] * NFOLDS
    for p in el:
        load[fold_of[p]] += cnt[p]
    others = sorted(set(cnt) - set(el))
    np.random.default_rng(seed).shuffle(others)
    others.sort(key=lambda p: -cnt[p])
    for p in others:
        j = load.index(min(load))
        fold_of[p] = j
        load[j] += cnt[p]
    return np.array([fold_of[p] for p in person])


def generic_model(data: Data, fold: npt.NDArray[np.int64], f: int, cache: Path) -> ExpressionModel:
    """The fold's generic model (cached as a model file: ~2 min each to fit here)."""
    path = cache / f"enroll-{data.key}-fold{f}.yml"
    if not path.exists():
        t = time.monotonic()
        tr = fold != f
        fitted = fitting.fit_histograms(
            data.h[tr],
            data.m[tr],
            data.y[tr].tolist(),
            dict(enumerate(layouts.CLASSES)),
            groups=data.group[tr].tolist(),
        )
        write_model(
            path, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta
        )
        note(f"fold {f}: generic model in {time.monotonic() - t:.0f} s, gate {fitted.meta.gate}")
    return load_model(path)


def balanced(y: npt.NDArray[np.int64], pred: npt.NDArray[np.int64]) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def bootstrap(delta: Floats, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [delta[rng.integers(0, len(delta), len(delta))].mean() for _ in range(reps)]
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def enrolled_sets(
    data: Data, people: Sequence[str], k: int, rng: np.random.Generator
) -> dict[str, tuple[list[int], list[int]]]:
    """person -> (enrolled rows, test rows) for everyone who can be enrolled at k."""
    out = {}
    for p in people:
        mine = np.flatnonzero(data.person == p)
        chosen: list[int] = []
        for c in np.unique(data.y[mine]):
            rows = mine[data.y[mine] == c]
            if len(rows) >= 2:
                chosen += rng.permutation(rows)[: min(k, len(rows) - 1)].tolist()
        per = collections.Counter(data.y[chosen].tolist())
        if len(per) < 2 or (k > 1 and max(per.values()) < k):
            continue  # nobody has k photos to spare in any class
        rest = np.setdiff1d(mine, chosen)
        near = (data.prints[rest] @ data.prints[chosen].T).max(1) >= NEAR_DUPLICATE
        test = rest[~near]
        if len(test):
            out[p] = (chosen, test.tolist())
    return out


def measure(data: Data, cache: Path, ks: Sequence[int], reps: int) -> None:
    el = eligible(data.person.tolist(), data.y.tolist())
    fold = folds(data.person, el)
    bases = [generic_model(data, fold, f, cache) for f in range(NFOLDS)]
    rows = []
    never_rows = []
    for k in ks:
        per_person: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
        never_before, never_after, never_y, strangers_in = [], [], [], []
        weights = []
        for f, base in enumerate(bases):
            people = sorted(set(data.person[fold == f]) & set(el))
            others = np.flatnonzero((fold == f) & ~np.isin(data.person, el))
            generic = {i: base.predict_face(data.faces[i]).label for i in others}
            for r in range(reps):
                rng = np.random.default_rng(1000 * f + r)
                sets = enrolled_sets(data, people, k, rng)
                if not sets:
                    continue
                crops = [
                    Crop(p, int(data.y[i]), data.faces[i])
                    for p, (en, _) in sets.items()
                    for i in en
                ]
                model = compose(base, Exemplars(tuple(crops)))
                assert model.enrolled is not None
                weights += model.enrolled.weight.tolist()
                for p, (_, test) in sets.items():
                    yt = data.y[test]
                    g = np.array([base.predict_face(data.faces[i]).label for i in test])
                    preds = [model.predict_face(data.faces[i]) for i in test]
                    e = np.array([q.label for q in preds])
                    own = np.mean([q.person == p for q in preds])
                    per_person[p].append((balanced(yt, g), balanced(yt, e), float(own)))
                after = [model.predict_face(data.faces[i]) for i in others]
                never_y.append(data.y[others])
                never_before.append(np.array([generic[i] for i in others]))
                never_after.append(np.array([q.label for q in after]))
                strangers_in.append(np.mean([q.person is not None for q in after]))
        names = sorted(per_person)
        gen = np.array([np.mean([v[0] for v in per_person[p]]) for p in names])
        enr = np.array([np.mean([v[1] for v in per_person[p]]) for p in names])
        own = np.mean([np.mean([v[2] for v in per_person[p]]) for p in names])
        lo, hi = bootstrap(enr - gen)
        yv = np.concatenate(never_y)
        before = balanced(yv, np.concatenate(never_before))
        after_ = balanced(yv, np.concatenate(never_after))
        rows.append(
            f"| k = {k} | {len(names)} | {100 * gen.mean():.1f}% | {100 * enr.mean():.1f}% | "
            f"{100 * (enr - gen).mean():+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}) | "
            f"{100 * own:.0f}% | {np.median(weights):.2f} ({np.min(weights):.2f}-"
            f"{np.max(weights):.2f}) | ≥ generic + 20 points |"
        )
        never_rows.append(
            f"| k = {k} | {len(yv) // (NFOLDS * reps) * NFOLDS} | {100 * before:.1f}% | "
            f"{100 * after_:.1f}% | {100 * (after_ - before):+.1f} | "
            f"{100 * np.mean(strangers_in):.1f}% | no drop (within 1 point) |"
        )
        note(rows[-1])
        note(never_rows[-1])
    print(
        "\n| enrolled people (balanced accuracy over their test photos, macro over persons) "
        "| persons | generic | enrolled | difference (95% bootstrap interval) | own test "
        "faces passing the gate | weight w_p, median (range) | target |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(
        "\n| never-enrolled people, after the fold's eligible people were enrolled | faces "
        "| before | after | difference | faces taken for an enrolled person | target |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(never_rows))
    costs(data, bases[0])


def costs(data: Data, base: ExpressionModel) -> None:
    """The fast path's time (the real command), predict time and file size at 10 x 5 x CAP."""
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory(prefix="edged-enroll-bench-") as tmp:
        root = Path(tmp)
        base_path = root / "trainer.yml"
        f = fitting.fitted_of(base)
        write_model(base_path, f.histograms, f.labels, f.classes, f.params, f.meta)
        before = base_path.read_bytes()
        store = EnrollmentStore(root / "enrolled")
        for c, name in enumerate(layouts.CLASSES):
            rows = rng.permutation(np.flatnonzero(data.y == c))[:CAP]
            store.add("alice", name, [data.faces[i] for i in rows])
        out = root / "family.yml"
        t = time.monotonic()
        status = trainer.main(
            ["--base-model", str(base_path), str(root / "enrolled"), "-o", str(out), "-q"]
        )
        fast = time.monotonic() - t
        assert status == 0 and base_path.read_bytes() == before
        crops = []
        for p in range(10):
            for c in range(len(layouts.CLASSES)):
                rows = rng.permutation(np.flatnonzero(data.y == c))[:CAP]
                crops += [Crop(f"person{p}", c, data.faces[i]) for i in rows]
        big = root / "ten.yml"
        fitted = fitting.attach_exemplars(f, crops)
        write_model(
            big, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta
        )
        t = time.monotonic()
        model = load_model(big)
        load_s = time.monotonic() - t
        faces = [data.faces[i] for i in rng.permutation(len(data.faces))[:500]]
        timings = {}
        for name, m in (("generic", base), ("10 x 5 x 5", model)):
            runs = []
            for _ in range(3):
                t = time.perf_counter()
                for face in faces:
                    m.predict_face(face)
                runs.append((time.perf_counter() - t) / len(faces) * 1e3)
            timings[name] = min(runs), max(runs)
        print("\n| cost | now | target |")
        print("|---|---|---|")
        print(
            f"| adding one person's 5 expressions ({5 * CAP} crops) to an existing model: "
            f"`edged-train --base-model trainer.yml STORE -o family.yml` | {fast:.1f} s | ≤ 5 s |"
        )
        g, e = timings["generic"], timings["10 x 5 x 5"]
        print(
            f"| predict per prepared face, 10 persons x 5 expressions x {CAP} crops | "
            f"{e[0]:.2f}-{e[1]:.2f} ms (generic alone {g[0]:.2f}-{g[1]:.2f} ms) | ≤ 2 ms |"
        )
        print(
            f"| model file with 10 persons x 5 expressions x {CAP} crops | "
            f"{os.path.getsize(big) / 1e6:.2f} MB (generic alone "
            f"{os.path.getsize(base_path) / 1e6:.2f} MB), loaded in {load_s * 1e3:.0f} ms "
            "| ≤ 4 MB |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.enrollment", description=__doc__)
    p.add_argument("--cache", type=Path, default=Path("/tmp/edged-layouts-cache"))
    p.add_argument("--ks", default="1,2,5", help="photos enrolled per (person, class)")
    p.add_argument("--reps", type=int, default=3, help="random draws per fold")
    p.add_argument("--gate", action="store_true", help="print the gate thresholds only")
    args = p.parse_args(argv)
    if not layouts.FULL.is_dir():
        note(f"the full dataset is not at {layouts.FULL}")
        return 1
    data = Data(args.cache)
    if args.gate:
        t = time.monotonic()
        table = gate_table(data.h, data.group.tolist())
        note(f"gate thresholds in {time.monotonic() - t:.1f} s")
        print("DEFAULT_GATE = (" + ", ".join(f"{v:.2f}" for v in table) + ")")
        return 0
    measure(data, args.cache, [int(v) for v in args.ks.split(",")], args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
