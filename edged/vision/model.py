"""The expression model: LBPH histograms, class names, and the scorer that reads them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edged.errors import ModelError
from edged.vision.detector import Box, Gray
from edged.vision.preprocess import PreprocessConfig, Preprocessor

if TYPE_CHECKING:  # exemplars imports this module; the model only reads its arrays
    from edged.vision.exemplars import Enrolled, Exemplars

# The workshop notebook's ids: 0 anger, 1 happy, 2 sad, 3 neutral, 4 surprise.
WORKSHOP_CLASSES: tuple[str, ...] = ("anger", "happy", "sad", "neutral", "surprise")
# 2: ``edged.readouts`` (issue 15); 3: ``edged.exemplars`` (issue 17). Older formats are
# read as before.
MODEL_FORMAT = 3

# LBPH (chi-square) distances, one per stored histogram or per class.
Distances = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LBPHParams:
    # Radius 2 (not LBPH's 1): chosen by person-grouped CV for expressions (README, Accuracy).
    radius: int = 2
    neighbors: int = 8
    grid_x: int = 8
    grid_y: int = 8

    @property
    def histogram_size(self) -> int:
        return self.grid_x * self.grid_y * (1 << self.neighbors)

    @classmethod
    def of(cls, recognizer: cv2.face.LBPHFaceRecognizer) -> LBPHParams:
        """The parameters a loaded recognizer was trained with."""
        return cls(
            recognizer.getRadius(),
            recognizer.getNeighbors(),
            recognizer.getGridX(),
            recognizer.getGridY(),
        )

    def create(self) -> cv2.face.LBPHFaceRecognizer:
        return cv2.face.LBPHFaceRecognizer.create(
            radius=self.radius, neighbors=self.neighbors, grid_x=self.grid_x, grid_y=self.grid_y
        )


def write_lbph_fields(
    fs: cv2.FileStorage,
    histograms: Sequence[npt.NDArray[np.float32]],
    labels: Sequence[int],
    params: LBPHParams,
) -> None:
    """LBPH's own fields, as ``LBPHFaceRecognizer.write`` lays them out (inside its node)."""
    fs.write("threshold", float(np.finfo(np.float64).max))
    fs.write("radius", params.radius)
    fs.write("neighbors", params.neighbors)
    fs.write("grid_x", params.grid_x)
    fs.write("grid_y", params.grid_y)
    fs.startWriteStruct("histograms", cv2.FileNode_SEQ)
    for h in histograms:
        fs.write("", np.ascontiguousarray(h, dtype=np.float32).reshape(1, -1))
    fs.endWriteStruct()
    fs.write("labels", np.asarray(labels, dtype=np.int32).reshape(-1, 1))


def recognizer_from(
    histograms: Sequence[npt.NDArray[np.float32]], labels: Sequence[int], params: LBPHParams
) -> cv2.face.LBPHFaceRecognizer:
    """An LBPH recognizer holding exactly these histograms (LBPH has no setter for them:
    they go through its own reader, in memory)."""
    flags = cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY | cv2.FILE_STORAGE_BASE64
    out = cv2.FileStorage("model.yml", flags)
    out.startWriteStruct("opencv_lbphfaces", cv2.FileNode_MAP)
    write_lbph_fields(out, histograms, labels, params)
    out.endWriteStruct()
    text = out.releaseAndGetString()
    fs = cv2.FileStorage(text, cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
    try:
        recognizer = params.create()
        cv2.Algorithm.read(recognizer, fs.getNode("opencv_lbphfaces"))
    finally:
        fs.release()
    return recognizer


@dataclass(frozen=True)
class ModelMeta:
    """What edged stores beside LBPH's own nodes, in a second top-level node ``edged``.

    ``temperature`` turns distance gaps into probabilities (see `ExpressionModel`);
    ``calibrated`` says whether it was fitted on held-out data. ``weights`` (one row per
    histogram, one column per class) and ``bias`` (one per class), when present, replace
    the nearest-histogram rule by a linear scorer over the LBPH distances to every stored
    histogram (see `fitting`). The last ``readouts`` histograms are a linear classifier's
    weights in histogram form (`fitting.readout_histograms`): the scorer reads them, but
    they are no class's prototype, so a face's ``distance`` leaves them out.

    ``gate`` (issue 17): the identity gate's thresholds, one per number of crops behind an
    exemplar mean (`exemplars.gate_table`), measured on the training people; empty for
    older models. ``exemplars``: enrolled people's face crops (a format-3 file).
    """

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    temperature: float = 10.0
    calibrated: bool = False
    format: int = MODEL_FORMAT
    trained_images: int = 0
    readouts: int = 0
    # Arrays: left out of == and hash (the model version identifies a model's content).
    weights: npt.NDArray[np.float64] | None = field(default=None, compare=False)
    bias: npt.NDArray[np.float64] | None = field(default=None, compare=False)
    gate: tuple[float, ...] = ()
    exemplars: Exemplars | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Prediction:
    """One face's answer: the class, how sure (0..1), and LBPH's raw distance.

    ``person``: the enrolled person whose exemplars answered with the generic model, None
    when the face is nobody enrolled (or the model has no exemplars). Private: outputs
    leave it out unless asked.
    """

    label: int
    expression: str
    confidence: float
    distance: float
    person: str | None = None


class ExpressionModel:
    """A loaded LBPH model plus its class names and preprocessing.

    Workshop and first-cut models: confidence is a softmax over classes of
    ``-(d_class - d_best) / temperature``, where ``d_class`` is the smallest LBPH distance
    to any histogram of that class; for a workshop model it is only a relative margin.

    Models with ``meta.weights``: class scores are ``distances @ weights + bias`` over the
    distances to every stored histogram, and confidence is their softmax, fitted on
    held-out people: the estimated probability that the answer is right. ``d_class`` is
    then the chi-square distance to the class's prototype: the sum over the class's
    histograms (readouts left out) of distance minus 2 per all-zero cell (a region
    prototype is zero outside its region, and each such cell adds exactly 2 to the LBPH
    distance).
    """

    def __init__(  # noqa: PLR0917
        self,
        recognizer: cv2.face.LBPHFaceRecognizer,
        classes: Mapping[int, str],
        meta: ModelMeta,
        version: str = "",
        source: Literal["edged", "workshop", "labelled"] = "edged",
        enrolled: Enrolled | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.classes = dict(classes)
        self.meta = meta
        self.version = version
        self.source = source
        self.enrolled = enrolled
        every = np.asarray(recognizer.getLabels(), dtype=np.int64).ravel()
        # The generic model's histograms come first; enrolled exemplar means follow them.
        extra = 0 if enrolled is None else len(enrolled.owner)
        labels = every[: len(every) - extra]
        self.class_ids = np.unique(labels)
        # Per-class min over the collector's results, in sample order, with no Python loop
        # (here either: a workshop model holds thousands of samples).
        self._sample_class = np.searchsorted(self.class_ids, labels).astype(np.int64)
        self._class_min = np.empty(len(self.class_ids), np.float64)
        self._names = [self.classes.get(int(c), str(int(c))) for c in self.class_ids]
        self._collector = cv2.face.StandardCollector.create()
        self._dist = np.empty(len(every), np.float64)
        # Views, made once: the generic part's distances and the exemplar means'.
        self._dist_base = self._dist[: len(labels)]
        self._dist_ex = self._dist[len(labels) :]
        self._margin = np.empty(extra, np.float64)
        self._term = np.empty(extra, np.float64)
        self._person_min = np.empty(0 if enrolled is None else len(enrolled.persons), np.float64)
        self._logits = np.empty(len(self.class_ids), np.float64)
        self.preprocessor = Preprocessor(meta.preprocess)
        self._linear = meta.weights is not None
        if self._linear:
            n, k = len(labels), len(self.class_ids)
            w = np.asarray(meta.weights, np.float64)
            b = np.asarray(meta.bias if meta.bias is not None else np.zeros(k), np.float64)
            if w.shape != (n, k) or b.size != k:
                raise ModelError(
                    f"model scorer has weights {w.shape} and {b.size} biases for "
                    f"{n} histograms and {k} classes"
                )
            if not 0 <= meta.readouts < n:
                raise ModelError(f"model has {meta.readouts} readouts for {n} histograms")
            self._w, self._b = w, b.ravel()
            cells = recognizer.getGridX() * recognizer.getGridY()
            hists = recognizer.getHistograms()[:n]
            self._base = np.array(
                [2.0 * np.count_nonzero(h.reshape(cells, -1).sum(1) == 0) for h in hists]
            )
            self._member = np.zeros((n, k), np.float64)
            protos = n - meta.readouts
            self._member[np.arange(protos), self._sample_class[:protos]] = 1.0

    @property
    def samples(self) -> int:
        """The generic model's histograms (exemplar means left out)."""
        return len(self._sample_class)

    def class_names(self) -> list[str]:
        """The model's classes in id order."""
        return list(self._names)

    def generic_histograms(self) -> list[npt.NDArray[np.float32]]:
        """The generic model's histograms, in file order (without exemplar means)."""
        hists = self.recognizer.getHistograms()[: self.samples]
        return [np.asarray(h, np.float32) for h in hists]

    def generic_labels(self) -> list[int]:
        """Their labels (class ids)."""
        every = np.asarray(self.recognizer.getLabels(), np.int64).ravel()
        return [int(v) for v in every[: self.samples]]

    def _distances(self, face: Gray) -> Distances:
        """LBPH distance to every stored histogram, in file order."""
        self.recognizer.predict_collect(face, self._collector)
        dist = self._dist
        for i, (_, d) in enumerate(self._collector.getResults(False)):
            dist[i] = d
        return dist

    def class_distances(self, face: Gray) -> Distances:
        """LBPH distance to each class (in ``class_ids`` order) for a prepared face."""
        self._distances(face)
        return self._class_distances(self._dist_base)

    def _class_distances(self, dist: Distances) -> Distances:
        out = self._class_min
        if self._linear:
            np.subtract(dist, self._base, out=dist)
            np.dot(dist, self._member, out=out)
            np.add(dist, self._base, out=dist)
            return out
        out.fill(math.inf)
        np.minimum.at(out, self._sample_class, dist)
        return out

    def _generic_logits(self) -> Distances:
        """The generic model's class scores (into ``self._logits``) from the distances."""
        z = self._logits
        if self._linear:
            np.dot(self._dist_base, self._w, out=z)
            z += self._b
            return z
        d = self._class_distances(self._dist_base)
        np.subtract(d, d.min(), out=z)
        z *= -1.0 / self.meta.temperature
        return z

    def twin(self) -> ExpressionModel:
        """The same model with buffers of its own. A model's per-face buffers (collector,
        distances, scores) belong to the thread that classifies with it; work on another
        thread (making a model with exemplars while the frame loop classifies) uses a
        twin. The recognizer is shared: LBPH's predict only reads it."""
        return ExpressionModel(
            self.recognizer, self.classes, self.meta, self.version, self.source, self.enrolled
        )

    def generic_logits(self, face: Gray) -> Distances:
        """The generic model's class scores for a prepared face (a copy): exemplar weights
        are chosen against them (`exemplars.enroll`)."""
        self._distances(face)
        return self._generic_logits().copy()

    def _add_exemplars(self, z: Distances) -> str | None:
        """Add the gated person's exemplar term to ``z``; the person, or None (gate shut).

        The face belongs to the enrolled person with the lowest margin (distance to one of
        their (person, expression) means minus that mean's threshold); below 0 only.
        """
        e = self.enrolled
        if e is None:
            return None
        margin = self._margin
        np.subtract(self._dist_ex, e.tau, out=margin)
        np.minimum.reduceat(margin, e.starts, out=self._person_min)
        p = int(np.argmin(self._person_min))
        if self._person_min[p] >= 0.0:
            return None
        lo, hi = int(e.starts[p]), int(e.ends[p])
        d = self._dist_ex[lo:hi]
        term = self._term[: hi - lo]
        np.subtract(d, d.mean(), out=term)
        term *= -e.weight[p] / e.temperature
        z[e.column[lo:hi]] += term  # a person's means are one per class: no repeats
        return e.persons[p]

    def predict_face(self, face: Gray) -> Prediction:
        """Classify a face already prepared by ``self.preprocessor``."""
        self._distances(face)
        if self._linear or self.enrolled is not None:
            z = self._generic_logits()
            person = self._add_exemplars(z)
            best = int(np.argmax(z))
            z -= z[best]
            np.exp(z, out=z)
            conf = float(1.0 / z.sum())
            d = self._class_distances(self._dist_base)
            return Prediction(
                int(self.class_ids[best]), self._names[best], conf, float(d[best]), person
            )
        d = self._class_distances(self._dist_base)
        best = int(np.argmin(d))
        z = np.exp(-(d - d[best]) / self.meta.temperature)
        conf = float(1.0 / z.sum())
        return Prediction(int(self.class_ids[best]), self._names[best], conf, float(d[best]))

    def predict(self, gray: Gray, box: Box) -> Prediction:
        return self.predict_face(self.preprocessor(gray, box))
