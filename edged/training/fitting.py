"""Turns prepared face images into the few histograms and the scorer a model file keeps.

Why this shape (issue 7; numbers in README.md, Accuracy): a nearest-neighbour over every
training face is slow, huge and barely beats chance on new people. Instead, per class,
the mean LBPH histogram of its faces and their mirror images (averaged in square-root
space, where chi-square behaves like a Euclidean distance) is cut into horizontal bands
of cells: one *region prototype* per class and band, zero outside its band. LBPH's own
chi-square distance to such a prototype is the distance within that band plus a
constant, so the distances tell how much the brows, eyes, nose and mouth each look like
each class. A multinomial logistic regression over those distances, fitted on
distances of held-out *people* (inner cross-validation on the training set only), picks
the class and gives a calibrated confidence. Model size and per-face cost depend only on
classes x bands, never on the number of training images.

Issue 15: beside the region prototypes, one *readout histogram* per class carries a linear
classifier over the whole face. A ridge regression on which LBP codes occur in each cell
(present or not: the face's histogram bins above 0) gives every bin a weight per class;
shifted to be non-negative and scaled to at most `FitConfig.readout_scale` (0.01: below
one pixel's share of a cell, 1/49), they are stored as a histogram. LBPH's chi-square
distance to it is then, per bin, 2p where the face lacks the code and about 2q - 6p where
it has it: the whole distance is a constant minus about 8 x (the sum of the weights of
the codes the face has), so the scorer reads the linear classifier out of LBPH's own
distances. The scorer still gets the region distances too; it is fitted on both, held
out by person. The readouts are kept only where they lower the scorer's held-out
log-loss (`readouts_help`): on a few dozen faces they only add noise.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edged.images import DEFAULT_MAX_PIXELS, ImageUnreadable, read_image
from edged.training.datasets import person_folds
from edged.vision.detector import FaceDetector, Gray, to_gray
from edged.vision.exemplars import CAP, Crop, Exemplars, capped, gate_for, gate_table
from edged.vision.histograms import chi_square, lbph_histograms
from edged.vision.model import ExpressionModel, LBPHParams, ModelMeta
from edged.vision.model_file import load_model, write_model
from edged.vision.pipeline import largest_face
from edged.vision.preprocess import PreprocessConfig, Preprocessor

log = logging.getLogger("edged.fitting")

Histograms = npt.NDArray[np.float32]  # LBPH histograms (or prototypes), one per row
Floats = npt.NDArray[np.float64]  # distances, scorer weights, probabilities
Ints = npt.NDArray[np.int64]  # class ids, row indices
_BLOCK = 512  # rows converted at a time (16384 bins: 64 MB as float64)
Masks = npt.NDArray[np.bool_]  # one mask over histogram bins per row
Present = npt.NDArray[np.uint8]  # 1 where a histogram bin is above 0, one face per row


@dataclass(frozen=True)
class FitConfig:
    """``band``: rows of LBPH cells per region prototype (0: one whole-face prototype per
    class); ``mirror``: add mirrored copies of the training faces; ``l2``: ridge penalty
    of the scorer (None: chosen from `L2_GRID` by held-out log-loss); ``inner_folds``:
    person-grouped folds that produce held-out distances (fewer when the people are few:
    `inner_folds`); ``readout``: one readout histogram per class (module docstring; a
    format-2 file), ``readout_l2`` their ridge penalty (None: the one of
    `READOUT_L2_GRID` with the lowest held-out error), ``readout_max_faces`` the faces
    they are fitted on at most (`ridge_rows`)."""

    lbph: LBPHParams = field(default_factory=LBPHParams)
    # The Haar box as it is (a 10% margin ties with it in person-grouped CV: README, Accuracy).
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    band: int = 2
    mirror: bool = True
    l2: float | None = None
    # 10, not 3: features from models fitted on 90% of the training people are closer to
    # the final model's, so its confidence is less understated (ECE 0.057 -> 0.046);
    # 3 below 300 people (`inner_folds`).
    inner_folds: int = 10
    seed: int = 0
    # The readout histograms (module docstring): None keeps them when they lower the
    # scorer's held-out log-loss (`readouts_help`), True always, False never.
    readout: bool | None = None
    readout_l2: float | None = None
    readout_scale: float = 0.01  # the largest value of a readout histogram
    # Faces the readouts' ridge is fitted on, at most (a class-balanced sample above it):
    # its matrices grow with the square of the faces (`_Ridge`), so a dataset of any size
    # trains in bounded memory and time (~0.6 GB and ~1 min here at the cap).
    readout_max_faces: int = 2500
    # The identity gate's thresholds for enrolled exemplars (`exemplars.gate_table`),
    # measured on the training people (a few seconds on thousands of faces).
    gate: bool = True


@dataclass(frozen=True)
class FittedModel:
    """Everything `vision.write_model` needs."""

    histograms: list[Histograms]
    labels: list[int]
    classes: dict[int, str]
    params: LBPHParams
    meta: ModelMeta


def region_masks(params: LBPHParams, band: int) -> Masks:
    """One boolean mask over histogram bins per band of ``band`` cell rows."""
    cells = params.grid_x * params.grid_y
    per_cell = params.histogram_size // cells
    if band <= 0 or band >= params.grid_y:
        return np.ones((1, params.histogram_size), bool)
    masks = []
    for top in range(0, params.grid_y, band):
        cell_mask = np.zeros((params.grid_y, params.grid_x), bool)
        cell_mask[top : top + band] = True
        masks.append(np.repeat(cell_mask.ravel(), per_cell))
    return np.array(masks)


def prototypes(
    hists: Histograms,
    labels: Ints,
    class_ids: Sequence[int],
    masks: Masks,
    rows: Ints | None = None,
) -> tuple[Histograms, Ints]:
    """Per class and region, the class mean (in sqrt space) zeroed outside the region, of
    ``rows`` of ``hists`` (all when None; labels are per row of ``hists``).

    A class with no faces here (a small inner fold) borrows the mean of the other classes'
    means (not of all faces: no class weighs more for its count).
    """
    if rows is not None:
        labels = labels[rows]
    means: dict[int, Floats] = {}
    for c in class_ids:
        mine = np.flatnonzero(labels == c)
        if len(mine):
            means[c] = _root_mean(hists, mine if rows is None else rows[mine])
    overall = np.mean(list(means.values()), 0) if means else _root_mean(hists, rows)
    protos, owners = [], []
    for c in class_ids:
        mean = (means[c] if c in means else overall) ** 2  # noqa: SIM401 (get() widens the type)
        for m in masks:
            protos.append(np.where(m, mean, 0.0).astype(np.float32))
            owners.append(c)
    return np.array(protos), np.array(owners, np.int64)


def _root_mean(hists: Histograms, rows: Ints | None) -> Floats:
    """The mean of sqrt(hists[rows]), a block at a time (no copy of the selected rows)."""
    picked = np.arange(len(hists)) if rows is None else rows
    total = np.zeros(hists.shape[1], np.float64)
    for i in range(0, len(picked), _BLOCK):
        total += np.sqrt(hists[picked[i : i + _BLOCK]]).sum(0, dtype=np.float64)
    mean: Floats = total / max(len(picked), 1)
    return mean


# An inner fold holds at least this many people, else 3 folds (the issue-7 count).
MIN_FOLD_PEOPLE = 30


def inner_folds(groups: Sequence[str], wanted: int) -> int:
    """``wanted`` folds when each still holds `MIN_FOLD_PEOPLE` people, else 3. On the
    80-face sample, 10 folds of 8 faces swung the scorer's penalty from 0.1 to its
    maximum (10): confidence 0.21 on a training face seen by the camera, under the
    daemon's smoothing threshold (0.3), so no state ever changed."""
    return wanted if len(set(groups)) >= MIN_FOLD_PEOPLE * wanted else min(wanted, 3)


def _index_folds(groups: Sequence[str], k: int, seed: int, labels: Ints) -> list[Ints]:
    """`person_folds` as index arrays, for selecting rows of the feature matrices; people
    are dealt by class-weighted size, so class counts do not change the folds."""
    folds = person_folds(groups, k, seed, labels=labels.tolist())
    return [np.array(f, np.int64) for f in folds]


def class_weights(y: Ints, n_classes: int) -> Floats:
    """Each row's weight, 1 / (n_classes x its class's count): every class weighs the same
    in a weighted sum (1 / n_classes), however many faces it has."""
    counts = np.bincount(y, minlength=n_classes).clip(min=1)
    weights: Floats = 1.0 / (n_classes * counts[y])
    return weights


L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _softmax(z: Floats) -> Floats:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    p: Floats = e / e.sum(1, keepdims=True)
    return p


def fit_logistic(
    x: Floats, y: Ints, n_classes: int, l2: float, iters: int = 400
) -> tuple[Floats, Floats]:
    """Class-balanced multinomial logistic regression (Adam on the mean log-loss + ridge).

    Returns (weights (features x classes), bias (classes)). Small problem (tens of
    features): plain numpy, no solver dependency.
    """
    _, d = x.shape
    w = np.zeros((d, n_classes))
    b = np.zeros(n_classes)
    target = np.eye(n_classes)[y]
    weight = class_weights(y, n_classes)[:, None]
    mw, vw, mb, vb = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    rate, b1, b2 = 0.05, 0.9, 0.999
    for t in range(1, iters + 1):
        g = (_softmax(x @ w + b) - target) * weight
        gw = x.T @ g + l2 * w
        gb = g.sum(0)
        mw = b1 * mw + (1 - b1) * gw
        vw = b2 * vw + (1 - b2) * gw * gw
        mb = b1 * mb + (1 - b1) * gb
        vb = b2 * vb + (1 - b2) * gb * gb
        c1, c2 = 1 - b1**t, 1 - b2**t
        w -= rate * (mw / c1) / (np.sqrt(vw / c2) + 1e-8)
        b -= rate * (mb / c1) / (np.sqrt(vb / c2) + 1e-8)
    return w, b


def choose_l2(x: Floats, y: Ints, n_classes: int, groups: Sequence[str]) -> float:
    """The ridge penalty with the lowest person-held-out log-loss: a strong penalty on a
    small training set (else the confidence is overstated), a weak one on a large set."""
    return _penalty_and_loss(x, y, n_classes, groups)[0]


def _penalty_and_loss(
    x: Floats, y: Ints, n_classes: int, groups: Sequence[str]
) -> tuple[float, float]:
    """`choose_l2`'s penalty and its held-out class-balanced log-loss."""
    folds = _index_folds(groups, 3, seed=1, labels=y)
    if len(folds) < 2:
        return L2_GRID[-1], np.inf
    best, best_loss = L2_GRID[-1], np.inf
    for l2 in L2_GRID:
        loss = 0.0
        for held in folds:
            keep = np.ones(len(y), bool)
            keep[held] = False
            w, b = fit_logistic(x[keep], y[keep], n_classes, l2)
            p = _softmax(x[held] @ w + b)
            # Class-balanced log-loss: a class's count must not steer the penalty.
            nll = -np.log(p[np.arange(len(held)), y[held]] + 1e-12)
            loss += float((nll * class_weights(y[held], n_classes)).sum())
        if loss < best_loss:
            best, best_loss = l2, loss
    log.debug("scorer ridge penalty %g", best)
    return best, best_loss


def fit(
    faces: Sequence[Gray],
    labels: Sequence[int],
    classes: Mapping[int, str],
    config: FitConfig | None = None,
    groups: Sequence[str] | None = None,
) -> FittedModel:
    """Faces already prepared with ``Preprocessor(config.preprocess)``; labels are class ids.

    ``groups`` (the person of each face) keeps the inner cross-validation that fits the
    scorer person-disjoint; without it every face is its own group.
    """
    cfg = config or FitConfig()
    if not faces:
        raise ValueError("no faces to fit")
    n = len(faces)
    # The faces' histograms and their mirror images' in one array: no stacked copy.
    train_h = np.empty(((2 if cfg.mirror else 1) * n, cfg.lbph.histogram_size), np.float32)
    lbph_histograms(faces, cfg.lbph, out=train_h[:n])
    if cfg.mirror:
        flipped = [np.ascontiguousarray(f[:, ::-1]) for f in faces]
        lbph_histograms(flipped, cfg.lbph, out=train_h[n:])
    return _fit_stacked(train_h, n, labels, classes, cfg, groups)


def fit_histograms(
    hists: Histograms,
    mirrored: Histograms | None,
    labels: Sequence[int],
    classes: Mapping[int, str],
    config: FitConfig | None = None,
    *,
    groups: Sequence[str] | None = None,
) -> FittedModel:
    """`fit` from the LBPH histograms of the faces (and of their mirror images, used when
    ``config.mirror``): experiments cache histograms and call this directly."""
    cfg = config or FitConfig()
    train_h = np.vstack([hists, mirrored]) if cfg.mirror and mirrored is not None else hists
    return _fit_stacked(train_h, len(hists), labels, classes, cfg, groups)


def _fit_stacked(  # noqa: PLR0917 (fit and fit_histograms, in their own order)
    train_h: Histograms,
    n: int,
    labels: Sequence[int],
    classes: Mapping[int, str],
    cfg: FitConfig,
    groups: Sequence[str] | None,
) -> FittedModel:
    """The fit, from the faces' histograms (rows 0..n-1) followed by their mirror images'
    when ``train_h`` has more rows."""
    hists = train_h[:n]
    if len(hists) != len(labels) or (groups is not None and len(groups) != len(hists)):
        raise ValueError("fit needs one label (and one group, if given) per face")
    if not len(hists):
        raise ValueError("no faces to fit")
    y = np.asarray(labels, np.int64)
    class_ids = sorted(set(y.tolist()))
    train_y = np.concatenate([y, y]) if len(train_h) > n else y
    masks = region_masks(cfg.lbph, cfg.band)
    protos, owners = prototypes(train_h, train_y, class_ids, masks)
    weights = bias = None
    readouts = 0
    group_list = list(groups) if groups is not None else [str(i) for i in range(len(hists))]
    folds = _index_folds(group_list, inner_folds(group_list, cfg.inner_folds), cfg.seed, y)
    if len(class_ids) > 1 and len(folds) > 1:
        extra, weights, bias = _readouts_and_scorer(
            hists, train_h, train_y, class_ids, masks, folds, group_list, cfg
        )
        if extra is not None:
            protos = np.vstack([protos, extra])
            owners = np.concatenate([owners, np.asarray(class_ids, np.int64)])
            readouts = len(extra)
    gate = gate_table(hists, group_list, seed=cfg.seed) if cfg.gate else ()
    return FittedModel(
        histograms=list(protos),
        labels=[int(v) for v in owners],
        classes=dict(classes),
        params=cfg.lbph,
        meta=ModelMeta(
            preprocess=cfg.preprocess,
            temperature=1.0,
            calibrated=weights is not None,
            trained_images=len(hists),
            weights=weights,
            bias=bias,
            readouts=readouts,
            gate=gate,
        ),
    )


def _readouts_and_scorer(  # noqa: PLR0917 (one call site: fit_histograms' own arrays)
    hists: Histograms,
    train_h: Histograms,
    train_y: Ints,
    class_ids: Sequence[int],
    masks: Masks,
    folds: Sequence[Ints],
    groups: Sequence[str],
    cfg: FitConfig,
) -> tuple[Histograms | None, Floats, Floats]:
    """The readout histograms (None when left out) and the scorer's (weights, bias),
    fitted on held-out distances: to the region prototypes, and to the readouts unless
    ``cfg.readout`` is False or, when it is None, they do not lower the held-out loss."""
    y = train_y[: len(hists)]
    target_all = np.searchsorted(class_ids, train_y)
    ridge = None
    if cfg.readout is not False:
        rows = ridge_rows(target_all[: len(hists)], len(train_h), cfg.readout_max_faces, cfg.seed)
        ridge = _Ridge.of(train_h, rows, target_all, len(class_ids))
    x, l2 = _held_out_distances(
        hists, train_h, train_y, class_ids=class_ids, masks=masks, folds=folds, ridge=ridge,
        readout_l2=cfg.readout_l2, scale=cfg.readout_scale,
    )  # fmt: skip
    order = np.concatenate(folds)
    target = np.searchsorted(class_ids, y[order])
    held = [groups[i] for i in order]
    regions = len(class_ids) * len(masks)
    if (
        ridge is not None
        and cfg.readout is None
        and not readouts_help(x, regions, target, len(class_ids), held)
    ):
        ridge, x = None, x[:, :regions]
    extra = None
    if ridge is not None:
        w = ridge.weights(np.arange(len(train_h)), (l2,))[0]
        extra = readout_histograms(w, cfg.readout_scale)
    weights, bias = _fit_scorer(x, target, len(class_ids), held, cfg.l2)
    return extra, weights, bias


def _held_out_distances(
    hists: Histograms,
    train_h: Histograms,
    train_y: Ints,
    *,
    class_ids: Sequence[int],
    masks: Masks,
    folds: Sequence[Ints],
    ridge: _Ridge | None = None,
    readout_l2: float | None = None,
    scale: float = 0.01,
) -> tuple[Floats, float]:
    """Each face's distances to prototypes (and readouts) made without its fold (so never
    from its own person), fold after fold: the features the scorer is fitted on; and the
    readouts' ridge penalty, the one with the lowest held-out error (``readout_l2`` if set).

    ``train_h`` is ``hists`` (rows 0..n-1), followed by their mirror images if it has more.
    """
    n = len(hists)
    l2s = READOUT_L2_GRID if readout_l2 is None else (readout_l2,)
    region, readout = [], []
    error = np.zeros(len(l2s))
    for held in folds:
        keep = np.ones(n, bool)
        keep[held] = False
        sel = np.concatenate([keep, keep]) if len(train_h) > n else keep
        p, _ = prototypes(train_h, train_y, class_ids, masks, np.flatnonzero(sel))
        region.append(chi_square(hists[held], p))
        if ridge is not None:
            fitted = ridge.weights(np.flatnonzero(sel), l2s)
            error += [ridge.error(w, held) for w in fitted]
            readout.append([chi_square(hists[held], readout_histograms(w, scale)) for w in fitted])
    x = np.vstack(region)
    if ridge is None:
        return x, 0.0
    best = int(np.argmin(error))  # the first (smallest penalty) of equals
    log.debug("readout ridge penalty %g", l2s[best])
    return np.hstack([x, np.vstack([r[best] for r in readout])]), l2s[best]


# The readout's ridge penalties (on class weights summing to 1); chosen on inner folds.
READOUT_L2_GRID = (0.1, 0.3, 1.0, 3.0)


def present(hists: Histograms) -> Present:
    """1 where a bin is above 0: which LBP codes occur in each cell."""
    out: Present = (hists > 0).view(np.uint8)
    return out


def _gram(x: Present) -> Floats:
    """x x^T (counts of codes two faces share), a block of rows at a time."""
    n = len(x)
    g = np.empty((n, n), np.float64)
    for i in range(0, n, _BLOCK):
        a = x[i : i + _BLOCK].astype(np.float32)
        for j in range(0, i + _BLOCK, _BLOCK):
            b = x[j : j + _BLOCK].astype(np.float32)
            g[i : i + _BLOCK, j : j + _BLOCK] = a @ b.T
            g[j : j + _BLOCK, i : i + _BLOCK] = g[i : i + _BLOCK, j : j + _BLOCK].T
    return g


def _times(x: Present, a: Floats) -> Floats:
    """x^T a, a block of rows at a time (x is kept as bytes)."""
    out = np.zeros((x.shape[1], a.shape[1]), np.float64)
    for i in range(0, len(x), _BLOCK):
        out += x[i : i + _BLOCK].T.astype(np.float64) @ a[i : i + _BLOCK]
    return out


def ridge_rows(target: Ints, rows: int, cap: int, seed: int) -> Ints:
    """The training rows the readouts' ridge is fitted on: every face (``target``: their
    class indices) and its mirror image (row i + len(target), when ``rows`` has them),
    or, above ``cap`` faces, a class-balanced sample of ``cap``: each class gets an equal
    share, a class with fewer faces gives the rest of its share to the others."""
    n = len(target)
    if n <= cap:
        return np.arange(rows)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(target == c) for c in np.unique(target)]
    quota = dict.fromkeys(range(len(members)), 0)
    left, open_ = cap, sorted(range(len(members)), key=lambda i: len(members[i]))
    while open_:
        share = left // len(open_)
        i = open_.pop(0)
        quota[i] = min(len(members[i]), share if open_ else left)
        left -= quota[i]
    chosen = np.sort(
        np.concatenate([rng.permutation(m)[: quota[i]] for i, m in enumerate(members)])
    )
    return np.concatenate([chosen, chosen + n]) if rows > n else chosen


@dataclass(frozen=True)
class _Ridge:
    """What the readouts are fitted from: the present codes of the rows it is fitted on
    (`ridge_rows`), their Gram matrix (computed once, shared by every inner fold), every
    training row's class index, and the training rows themselves (not copied)."""

    train_h: Histograms
    rows: Ints
    x: Present
    gram: Floats
    y: Ints
    n_classes: int

    @classmethod
    def of(cls, train_h: Histograms, rows: Ints, y: Ints, n_classes: int) -> _Ridge:
        x = present(train_h[rows])
        return cls(train_h, rows, x, _gram(x), y, n_classes)

    def weights(self, rows: Ints, l2s: Sequence[float]) -> list[Floats]:
        """Per penalty, (bins x classes) weights of a class-balanced ridge regression of
        one-hot targets on ``rows``' present codes (those of them it is fitted on;
        weighted-centred; dual form: the Gram matrix is rows x rows, the weights bins x
        classes)."""
        mine = np.flatnonzero(np.isin(self.rows, rows))
        y = self.y[self.rows[mine]]
        k = self.n_classes
        s = class_weights(y, k)
        s = s / s.sum()
        # In place: the rows' Gram matrix and LAPACK's copy of it are the only two n x n
        # arrays besides the full one (was six: 840 MB at 2,091 faces and their mirrors).
        b = self.gram[np.ix_(mine, mine)]
        a = b @ s
        b -= a[:, None]
        b -= a[None, :]
        b += s @ a
        root = np.sqrt(s)
        b *= root[:, None]
        b *= root[None, :]
        rhs = root[:, None] * (np.eye(k)[y] - 1.0 / k)
        diagonal = np.diag_indices(len(mine))
        base = b[diagonal].copy()
        duals = []
        for l2 in l2s:
            b[diagonal] = base + l2
            duals.append(root[:, None] * np.linalg.solve(b, rhs))
        del b
        # One pass over the rows for the mean and every penalty's weights.
        both = _times(self.x[mine], np.hstack([s[:, None], *duals]))
        mu = both[:, 0]
        return [
            both[:, 1 + i * k : 1 + (i + 1) * k] - np.outer(mu, d.sum(0))
            for i, d in enumerate(duals)
        ]

    def error(self, w: Floats, held: Ints) -> float:
        """Class-balanced squared error of the ridge's scores on ``held`` rows (their
        scores up to a per-class constant: the error is taken after removing it)."""
        y = self.y[held]
        s = class_weights(y, self.n_classes)
        s = s / s.sum()
        scores = present(self.train_h[held]).astype(np.float32) @ w.astype(np.float32)
        resid = scores - (np.eye(self.n_classes)[y] - 1.0 / self.n_classes)
        resid -= s @ resid
        return float(s @ (resid**2).sum(1))


def readout_histograms(w: Floats, scale: float) -> Histograms:
    """Ridge weights (bins x classes) as one non-negative histogram per class: each bin
    shifted by its lowest class weight (a shift common to every class changes no
    difference between them) and scaled to at most ``scale``."""
    shifted = w - w.min(1, keepdims=True)
    top = float(shifted.max())
    out: Histograms = (shifted.T * (scale / top if top > 0 else 0.0)).astype(np.float32)
    return out


def _standardise(x: Floats, target: Ints, n_classes: int) -> tuple[Floats, Floats, Floats]:
    """Class-weighted standardisation: the scale, too, is every class's alike."""
    cw = class_weights(target, n_classes)
    cw = cw / cw.sum()
    mu = cw @ x
    sd = np.sqrt(cw @ (x - mu) ** 2) + 1e-6
    return (x - mu) / sd, mu, sd


def readouts_help(
    x: Floats, regions: int, target: Ints, n_classes: int, groups: Sequence[str]
) -> bool:
    """Whether the readout distances (the columns after ``regions``) lower the scorer's
    held-out log-loss: on a few dozen faces they do not, and only dilute it."""
    with_all = _penalty_and_loss(_standardise(x, target, n_classes)[0], target, n_classes, groups)
    without = _penalty_and_loss(
        _standardise(x[:, :regions], target, n_classes)[0], target, n_classes, groups
    )
    log.debug("held-out log-loss %.4f with readouts, %.4f without", with_all[1], without[1])
    return with_all[1] < without[1]


def _fit_scorer(
    x: Floats, target: Ints, n_classes: int, groups: Sequence[str], l2: float | None
) -> tuple[Floats, Floats]:
    """(weights, bias) of the linear scorer over raw distances ``x``; ``l2`` None: the
    ridge penalty is chosen on held-out people (``groups``, one per row of ``x``)."""
    z, mu, sd = _standardise(x, target, n_classes)
    if l2 is None:
        l2 = choose_l2(z, target, n_classes, groups)
    w, b = fit_logistic(z, target, n_classes, l2)
    # Fold the standardisation in: scores = distances @ weights + bias.
    weights: Floats = w / sd[:, None]
    bias: Floats = b - (mu / sd) @ w
    return weights, bias


def extract_face(
    path: Path | str,
    detector: FaceDetector,
    pre: Preprocessor,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Gray | None:
    """The largest face of an image file, prepared for LBPH (a copy); None if none is
    found or the file is not read as an image (`edged.images.read_image`)."""
    try:
        image = read_image(Path(path), max_pixels)
    except ImageUnreadable:
        return None
    return largest_face(to_gray(image), detector, pre)


def to_model(fitted: FittedModel) -> ExpressionModel:
    """The fitted model as `load_model` would return it from disk (round trip through a file)."""
    with tempfile.TemporaryDirectory(prefix="edged-fit-") as tmp:
        path = Path(tmp) / "trainer.yml"
        write_model(
            path, fitted.histograms, fitted.labels, fitted.classes, fitted.params, fitted.meta
        )
        return load_model(path)


def fitted_of(model: ExpressionModel) -> FittedModel:
    """A loaded model's generic part as `write_model` takes it: what the fast enrollment
    path (`attach_exemplars`) keeps of a base model without re-reading its dataset."""
    return FittedModel(
        histograms=model.generic_histograms(),
        labels=model.generic_labels(),
        classes=dict(model.classes),
        params=LBPHParams.of(model.recognizer),
        meta=replace(model.meta, exemplars=None),
    )


def attach_exemplars(fitted: FittedModel, crops: Sequence[Crop], cap: int = CAP) -> FittedModel:
    """``fitted`` with ``crops`` (oldest first) as its exemplars, the newest ``cap`` per
    (person, expression); replaces any it had. No crops: the generic model alone.
    Raises `ModelError` when the model cannot hold them (no gate thresholds for its
    preparation, see `exemplars.gate_for`)."""
    if not crops:
        return replace(fitted, meta=replace(fitted.meta, exemplars=None))
    gate_for(fitted.meta.gate, fitted.params, fitted.meta.preprocess)
    return replace(fitted, meta=replace(fitted.meta, exemplars=Exemplars(capped(crops, cap))))
