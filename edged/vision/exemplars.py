"""Enrolled people's own faces beside the generic model (issue 17). Pure: no I/O.

A household camera sees the same few people. For each enrolled (person, expression) the
model keeps a few prepared face crops (`Crop`, at most `CAP`); at load their LBPH
histograms are averaged in square-root space (like `fitting.prototypes`) into one *mean*
per (person, expression), appended to the recognizer's histograms, so the one
``predict_collect`` a face costs also gives its distance to every mean.

Two questions, answered per face:

- **Whose face is it?** The enrolled person with the lowest margin: the distance to one
  of their means minus that mean's threshold (`gate_table`: the distance below which a
  chosen small share of *strangers'* faces fall, measured on the training people, for a
  mean of as many crops, since a mean of more crops is closer to every face). No margin
  below 0: nobody enrolled, and the generic answer is returned unchanged.
- **How much do this person's exemplars say?** Their class scores
  ``-(d_pc - mean over the person's classes) / T`` are added to the generic model's with
  a weight ``w_p`` chosen per person by leave-one-out over their own crops (`choose_weight`):
  large where their crops predict each other (posed photos, one place and light), near
  `PRIOR_WEIGHT` where they do not (photos from different events: research notes, the
  within-person same/different-expression AUC there is 0.54).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edged.enrollment.names import person_problem
from edged.errors import ModelError
from edged.vision.detector import Gray
from edged.vision.histograms import chi_square, lbph_histograms
from edged.vision.model import LBPHParams, recognizer_from
from edged.vision.preprocess import PreprocessConfig

if TYPE_CHECKING:
    from edged.vision.model import ExpressionModel

Histograms = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

# Crops kept per (person, expression): 10 persons x 5 expressions x 4 crops make a 3.8 MB
# model (5 crops: 4.07 MB, over the 4 MB; a crop is ~5.7 KB as indented base64).
CAP = 4
TEMPERATURE = 40.0  # chi-square units per logit of the exemplar term
PRIOR_WEIGHT = 0.25  # the research's safe weight (no person hurt on in-the-wild photos)
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # leave-one-out's choices
SHRINK = 4.0  # the prior counts as this many held-out crops
# The share of strangers' faces that pass one mean's threshold. A person enrolled with 5
# expressions has 5 means, so about 1% of strangers' faces are taken for them.
GATE_QUANTILE = 0.002
MIN_GATE_PEOPLE = 8  # people needed to measure a threshold; else `DEFAULT_GATE`'s shape
# Measured on the workshop dataset (lists + legend, 2,091 faces, 1,012 people) for the
# default LBPH parameters and face preparation: `python -m bench.enrollment --gate`.
DEFAULT_GATE = (139.89, 114.79, 108.02, 103.72)
MAX_GATE_LENGTH = 16  # thresholds a file may hold (for a larger cap than this edged's)
DEFAULT_PREPARATION = (LBPHParams(), PreprocessConfig())


@dataclass(frozen=True)
class Crop:
    """One enrolled face, prepared as the model prepares faces (its size, equalisation)."""

    person: str
    class_id: int
    face: Gray


@dataclass(frozen=True)
class Exemplars:
    """What a model file keeps of the enrollment store: crops, at most `CAP` per
    (person, expression)."""

    crops: tuple[Crop, ...]

    @property
    def persons(self) -> tuple[str, ...]:
        return tuple(sorted({c.person for c in self.crops}))

    def digest(self) -> str:
        """A content hash of the crops (order included)."""
        h = hashlib.sha256()
        for c in self.crops:
            h.update(f"{c.person}\0{c.class_id}\0{c.face.shape}\0".encode())
            h.update(np.ascontiguousarray(c.face).tobytes())
        return h.hexdigest()


def capped(crops: Iterable[Crop], cap: int = CAP) -> tuple[Crop, ...]:
    """The last ``cap`` crops of each (person, expression), in the order given (give them
    oldest first: the newest are kept)."""
    crops = list(crops)
    seen: Counter[tuple[str, int]] = Counter()
    keep = []
    for c in reversed(crops):
        key = (c.person, c.class_id)
        if seen[key] < cap:
            seen[key] += 1
            keep.append(c)
    return tuple(reversed(keep))


def root_mean(hists: Histograms) -> Histograms:
    """The mean in square-root space (where chi-square behaves like a Euclidean distance)."""
    out: Histograms = (np.sqrt(hists.astype(np.float64)).mean(0) ** 2).astype(np.float32)
    return out


def gate_table(
    hists: Histograms,
    persons: Sequence[str],
    *,
    cap: int = CAP,
    quantile: float = GATE_QUANTILE,
    seed: int = 0,
    max_people: int = 150,
    max_strangers: int = 400,
) -> tuple[float, ...]:
    """Per n = 1..cap, the distance from a mean of n photos of one person below which
    ``quantile`` of other people's faces fall: the identity gate's threshold for a mean
    of n crops. From the training people's own faces (``hists``, ``persons``), so it
    fits the model's LBPH parameters and face preparation (~1 s a crop count here).

    The means are of one person's photos of any expression (the training people seldom
    have several of one): a mean of one expression is sharper, further from strangers,
    so the threshold errs on the strict side. An n too few people have photos for
    (`MIN_GATE_PEOPLE`) follows `DEFAULT_GATE`'s shape from the last n measured; ()
    when not even one is measured.
    """
    rng = np.random.default_rng(seed)
    rows: defaultdict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(persons):
        rows[p].append(i)
    owners = np.asarray(persons)
    pool = rng.permutation(len(persons))[:max_strangers]
    out: list[float] = []
    for n in range(1, cap + 1):
        able = [p for p in sorted(rows) if len(rows[p]) >= n]
        if len(able) < MIN_GATE_PEOPLE:
            if not out:
                return ()
            i = min(n, len(DEFAULT_GATE)) - 1
            out.append(out[-1] * DEFAULT_GATE[i] / DEFAULT_GATE[max(i - 1, 0)])
            continue
        chosen = rng.permutation(able)[:max_people]
        means = np.array([root_mean(hists[rng.permutation(rows[p])[:n]]) for p in chosen])
        d = _sparse_chi_square(hists[pool], means)
        d[owners[pool][:, None] == chosen[None, :]] = np.nan  # own faces are no strangers
        out.append(float(np.nanquantile(d, quantile)))
    # A mean of more photos is closer to every face: never a looser threshold for fewer.
    return tuple(float(v) for v in np.minimum.accumulate(out))


def _sparse_chi_square(queries: Histograms, refs: Histograms) -> Floats:
    """`chi_square` over each query's own bins (a face's histogram is mostly zeros): where
    the query is 0 a bin adds the reference's value, so the sum is the reference's total
    plus a correction on the query's bins."""
    totals = refs.sum(1, dtype=np.float64)
    out = np.empty((len(queries), len(refs)), np.float64)
    for i, q in enumerate(queries):
        idx = np.flatnonzero(q)
        a, b = q[idx], refs[:, idx]
        out[i] = 2.0 * (((a - b) ** 2 / (a + b) - b).sum(1, dtype=np.float64) + totals)
    return out


@dataclass(frozen=True)
class Enrolled:
    """The exemplar means appended to the recognizer (one per (person, expression), grouped
    by person) and what the hot path needs of them, computed once at load."""

    persons: tuple[str, ...]
    means: Histograms  # one row per (person, expression), persons in order
    owner: Ints  # person index of each mean
    column: Ints  # class column (index into the model's class ids) of each mean
    tau: Floats  # gate threshold of each mean (from its crop count)
    starts: Ints  # each person's first mean
    ends: Ints  # one past each person's last mean
    weight: Floats  # each person's exemplar weight (`choose_weight`)
    temperature: float = TEMPERATURE


def gate_for(
    gate: Sequence[float], params: LBPHParams, preprocess: PreprocessConfig
) -> tuple[float, ...]:
    """The model's own gate, or `DEFAULT_GATE` for an older model prepared the default way;
    `ModelError` otherwise (its distances are on another scale)."""
    if gate:
        return tuple(gate)
    if (params, preprocess) == DEFAULT_PREPARATION:
        return DEFAULT_GATE
    raise ModelError(
        "the model has no identity-gate thresholds for its LBPH parameters or face "
        "preparation (it predates enrollment): train it again with this edged-train"
    )


def enroll(
    crops: Sequence[Crop],
    class_ids: Sequence[int],
    params: LBPHParams,
    gate: Sequence[float],
    generic: Callable[[Gray], Floats],
) -> Enrolled:
    """The means, thresholds and per-person weights for ``crops``; ``generic`` gives the
    generic model's class scores of a face (for the weights' leave-one-out)."""
    if not crops:
        raise ModelError("no exemplar crops to enroll")
    column_of = {int(c): i for i, c in enumerate(class_ids)}
    unknown = sorted({c.class_id for c in crops} - set(column_of))
    if unknown:
        raise ModelError(f"exemplar crops of class ids {unknown}, which the model does not have")
    hists = lbph_histograms([c.face for c in crops], params)
    persons = tuple(sorted({c.person for c in crops}))
    means: list[Histograms] = []
    tau: list[float] = []
    weight: list[float] = []
    owner: list[int] = []
    column: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    for pi, p in enumerate(persons):
        mine = [i for i, c in enumerate(crops) if c.person == p]
        starts.append(len(means))
        by_class: dict[int, list[int]] = defaultdict(list)
        for i in mine:
            by_class[column_of[crops[i].class_id]].append(i)
        for col in sorted(by_class):
            rows = by_class[col]
            means.append(root_mean(hists[rows]))
            owner.append(pi)
            column.append(col)
            tau.append(gate[min(len(rows), len(gate)) - 1])
        ends.append(len(means))
        logits = np.array([generic(crops[i].face) for i in mine])
        labels = np.array([column_of[crops[i].class_id] for i in mine])
        weight.append(choose_weight(hists[mine], labels, logits))
    return Enrolled(
        persons=persons,
        means=np.array(means, np.float32),
        owner=np.array(owner, np.int64),
        column=np.array(column, np.int64),
        tau=np.array(tau, np.float64),
        starts=np.array(starts, np.int64),
        ends=np.array(ends, np.int64),
        weight=np.array(weight, np.float64),
    )


def exemplar_term(dist: Floats, temperature: float = TEMPERATURE) -> Floats:
    """A person's exemplar class scores from the distances to their means (the last axis):
    centred on their mean, so classes not enrolled (no term) are neither pushed nor
    pulled as a group."""
    term: Floats = -(dist - dist.mean(-1, keepdims=True)) / temperature
    return term


def choose_weight(
    hists: Histograms, labels: Ints, logits: Floats, temperature: float = TEMPERATURE
) -> float:
    """One person's exemplar weight: the one of `WEIGHTS` whose combination with the
    generic scores best predicts each held-out crop (class-balanced log-likelihood) from
    the means of the person's other crops, shrunk toward `PRIOR_WEIGHT` by `SHRINK`
    crops' worth. `PRIOR_WEIGHT` itself unless at least two classes have two crops each
    (nothing to hold out otherwise)."""
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or (counts >= 2).sum() < 2:
        return PRIOR_WEIGHT
    sums = {int(c): np.sqrt(hists[labels == c].astype(np.float64)).sum(0) for c in classes}
    count = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    held = [i for i in range(len(labels)) if count[int(labels[i])] >= 2]
    terms, targets = [], []
    for i in held:
        own = int(labels[i])
        root_i = np.sqrt(hists[i].astype(np.float64))
        means = [
            ((sums[c] - root_i) / (count[c] - 1) if c == own else sums[c] / count[c]) ** 2
            for c in classes.tolist()
        ]
        d = chi_square(hists[i : i + 1], np.array(means, np.float32))[0]
        full = np.zeros(logits.shape[1])
        full[classes] = exemplar_term(d, temperature)
        terms.append(full)
        targets.append(own)
    term, target = np.array(terms), np.array(targets)
    base = logits[held]
    balance = 1.0 / np.array([count[int(t)] for t in target], np.float64)
    scores = []
    for w in WEIGHTS:
        z = base + w * term
        z = z - z.max(1, keepdims=True)
        logp = z[np.arange(len(target)), target] - np.log(np.exp(z).sum(1))
        scores.append(float((balance * logp).sum()))
    best = WEIGHTS[int(np.argmax(scores))]
    return (len(held) * best + SHRINK * PRIOR_WEIGHT) / (len(held) + SHRINK)


def compose(
    base: ExpressionModel, exemplars: Exemplars, version: str | None = None
) -> ExpressionModel:
    """``base``'s generic part with ``exemplars`` as one model (the daemon's, from the
    model file and the enrollment store, in memory), keeping the newest `CAP` crops
    (the last given) of each person and expression. Its version is ``version``, or a
    hash of the base's and the crops'. Raises `ModelError` for crops the model cannot
    use (another size, an unknown class, a model without gate thresholds)."""
    from edged.vision.model import ExpressionModel  # noqa: PLC0415 (model imports us)

    exemplars = Exemplars(capped(exemplars.crops))  # what a model file can hold
    meta = base.meta
    params = LBPHParams.of(base.recognizer)
    size = meta.preprocess.size
    if size <= 0:
        raise ModelError("exemplars need a model that prepares faces to a fixed size")
    for c in exemplars.crops:
        if c.face.shape != (size, size) or c.face.dtype != np.uint8:
            raise ModelError(
                f"an exemplar crop of {c.person} is {c.face.shape} {c.face.dtype}, not the "
                f"model's {size}x{size} gray faces"
            )
        problem = person_problem(c.person)
        if problem:
            raise ModelError(problem)
    gate = gate_for(meta.gate, params, meta.preprocess)
    generic = base.generic_histograms()
    labels = base.generic_labels()
    ids = base.class_ids
    # A twin: ``base`` may be classifying frames on another thread with its own buffers.
    enrolled = enroll(exemplars.crops, ids.tolist(), params, gate, base.twin().generic_logits)
    recognizer = recognizer_from(
        [*generic, *enrolled.means], [*labels, *(int(ids[c]) for c in enrolled.column)], params
    )
    if version is None:
        version = hashlib.sha256(f"{base.version}:{exemplars.digest()}".encode()).hexdigest()[:12]
    return ExpressionModel(
        recognizer,
        base.classes,
        replace(meta, exemplars=exemplars),
        version,
        base.source,
        enrolled=enrolled,
    )


def finite_gate(values: Sequence[float]) -> str | None:
    """What is wrong with gate thresholds, or None."""
    if not all(math.isfinite(v) and v > 0 for v in values):
        return "holds values that are not finite numbers above 0"
    return None
