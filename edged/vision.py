"""Face detection, the shared face preprocessing, and the LBPH expression model.

Pure functions and small objects on grayscale numpy arrays: no camera, no network,
no threads. The only I/O is reading (and atomically writing) the model file.
Training and prediction both go through `Preprocessor`, so a face is prepared the
same way on both sides.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edged.errors import ModelError

# The workshop notebook's ids: 0 anger, 1 happy, 2 sad, 3 neutral, 4 surprise.
WORKSHOP_CLASSES: tuple[str, ...] = ("anger", "happy", "sad", "neutral", "surprise")
FRONTAL_CASCADE = "haarcascade_frontalface_default.xml"
MODEL_FORMAT = 1

Equalize = Literal["none", "hist", "clahe"]


def cascade_path(name: str = FRONTAL_CASCADE) -> Path:
    """The cascade file that the installed OpenCV wheel ships.

    OpenCV 5.0 wheels ship none (``cv2.data.haarcascades`` is empty): fail clearly then.
    """
    base = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
    path = base / name
    if not path.is_file():
        raise ModelError(
            f"OpenCV {cv2.__version__} ships no Haar cascade {name!r} (looked in {base}); "
            "install opencv-contrib-python-headless 4.x"
        )
    return path


def to_gray(image: np.ndarray) -> np.ndarray:
    """A BGR, BGRA or already-gray image as one 8-bit channel."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


@dataclass(frozen=True, slots=True)
class Box:
    """A face rectangle in frame pixels."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class DetectorConfig:
    """Haar cascade parameters.

    ``min_size`` is a fraction of the shorter frame side; ``max_width`` downscales wide
    frames before the scan (0: never); ``pad`` adds a border of that fraction around the
    image first, so a face that fills a tight crop still has room for the cascade window.
    """

    scale_factor: float = 1.2
    min_neighbors: int = 5
    min_size: float = 0.1
    max_width: int = 0
    pad: float = 0.0


class FaceDetector:
    """Finds faces in grayscale frames with the frontal Haar cascade.

    Keeps a scratch buffer for the downscaled frame (no allocation per frame once the
    frame size is stable), so use one instance per thread.
    """

    def __init__(self, config: DetectorConfig | None = None, cascade: Path | None = None) -> None:
        self.config = config or DetectorConfig()
        path = cascade or cascade_path()
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ModelError(f"cannot load Haar cascade {path}")
        self._small: np.ndarray | None = None

    def scale_for(self, width: int) -> float:
        """The downscale factor a frame this wide is scanned at (``max_width``)."""
        mw = self.config.max_width
        return mw / width if mw and width > mw else 1.0

    def detect(
        self,
        gray: np.ndarray,
        region: Box | None = None,
        sizes: tuple[int, int] | None = None,
        exclude: Sequence[Box] = (),
    ) -> list[Box]:
        """Faces in ``gray``, largest first, in its own pixel coordinates.

        ``region`` limits the scan to that part of the frame and ``sizes`` (smallest,
        largest face side in frame pixels) to those scales: a tracker looking for a face
        near where it was costs a fraction of a full scan. The downscale factor and the
        ``min_size`` floor stay those of the whole frame, so a face found in a region is
        the face a full scan would find. ``exclude``: faces already known (a tracker's),
        painted flat before the scan and left out of the result; a known face is where
        most of a scan's time goes, so a search for new faces is then nearly as cheap as
        a scan of an empty room.
        """
        cfg = self.config
        h, w = gray.shape[:2]
        scale = self.scale_for(w)
        full = gray
        if scale != 1.0:
            # The whole frame is downscaled even for a region scan: the region's pixels
            # are then exactly the full scan's, so its answer does not jitter with where
            # the region happens to start.
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = self._small
            if small is None or small.shape[::-1] != size:
                small = self._small = np.empty(size[::-1], np.uint8)
            full = cv2.resize(gray, size, dst=small, interpolation=cv2.INTER_AREA)
        sx0 = sy0 = 0
        img = full
        if region is not None:
            fh, fw = full.shape[:2]
            sx0, sy0 = max(0, math.floor(region.x * scale)), max(0, math.floor(region.y * scale))
            sx1 = min(fw, math.ceil((region.x + region.w) * scale))
            sy1 = min(fh, math.ceil((region.y + region.h) * scale))
            img = full[sy0:sy1, sx0:sx1]
            if img.size == 0:
                return []
        if exclude:
            if full is gray:  # never paint the caller's frame
                img = img.copy()
            for b in exclude:
                m = round(0.1 * max(b.w, b.h))
                x0 = max(0, round((b.x - m) * scale) - sx0)
                y0 = max(0, round((b.y - m) * scale) - sy0)
                x1 = round((b.x + b.w + m) * scale) - sx0
                y1 = round((b.y + b.h + m) * scale) - sy0
                patch = img[y0:y1, x0:x1]
                if patch.size:
                    patch.fill(int(patch.mean()))
        pad = 0
        if cfg.pad > 0:
            pad = round(cfg.pad * max(img.shape[:2]))
            img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        min_px = max(1, int(min(h, w) * scale * cfg.min_size))
        max_px = 0
        if sizes is not None:
            min_px = max(min_px, int(sizes[0] * scale))
            max_px = max(min_px + 1, round(sizes[1] * scale))
            if max_px > min(img.shape[:2]):
                max_px = 0
        found = self._cascade.detectMultiScale(
            img,
            scaleFactor=cfg.scale_factor,
            minNeighbors=cfg.min_neighbors,
            minSize=(min_px, min_px),
            maxSize=(max_px, max_px),
        )
        boxes: list[Box] = []
        for x, y, bw, bh in found:
            x0 = max(0, round((sx0 + x - pad) / scale))
            y0 = max(0, round((sy0 + y - pad) / scale))
            x1 = min(w, round((sx0 + x - pad + bw) / scale))
            y1 = min(h, round((sy0 + y - pad + bh) / scale))
            if x1 > x0 and y1 > y0:
                box = Box(x0, y0, x1 - x0, y1 - y0)
                if not any(_inside(box, e) for e in exclude):
                    boxes.append(box)
        boxes.sort(key=lambda b: b.area, reverse=True)
        return boxes


def _inside(a: Box, b: Box) -> bool:
    """Whether most of ``a`` lies within ``b`` (grown by a tenth of its side)."""
    m = 0.1 * max(b.w, b.h)
    ix = min(a.x + a.w, b.x + b.w + m) - max(a.x, b.x - m)
    iy = min(a.y + a.h, b.y + b.h + m) - max(a.y, b.y - m)
    return ix > 0 and iy > 0 and ix * iy > 0.5 * a.area


@dataclass(frozen=True)
class PreprocessConfig:
    """How a detected face becomes the image LBPH sees; stored in the model file.

    ``size`` 0 keeps the raw crop at its own size (what the workshop did); ``margin``
    grows (>0) or shrinks (<0) the box by that fraction of its side on every edge.
    """

    size: int = 64
    margin: float = 0.0
    equalize: Equalize = "clahe"


RAW_CROP = PreprocessConfig(size=0, margin=0.0, equalize="none")


class Preprocessor:
    """Crops, resizes and normalises a face; one instance per thread (it reuses buffers)."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        self._clahe = (
            cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
            if config.equalize == "clahe"
            else None
        )
        n = config.size
        self._resized = np.empty((n, n), np.uint8) if n else None
        self._out = np.empty((n, n), np.uint8) if n else None

    def crop_box(self, box: Box, shape: tuple[int, ...]) -> Box:
        """``box`` grown by the margin and clipped to the frame."""
        m = self.config.margin
        if not m:
            return box
        dx, dy = round(box.w * m), round(box.h * m)
        x0, y0 = max(0, box.x - dx), max(0, box.y - dy)
        x1, y1 = min(shape[1], box.x + box.w + dx), min(shape[0], box.y + box.h + dy)
        return Box(x0, y0, max(1, x1 - x0), max(1, y1 - y0))

    def _resize(self, crop: np.ndarray, n: int) -> np.ndarray:
        """Area-average ``crop`` down to n x n.

        OpenCV's INTER_AREA is fast only for whole-number ratios (~0.3 ms for a 300 px
        face otherwise, a third of the classification), so a crop over twice the size is
        first reduced by a whole factor k, trimmed (centred) to a multiple of k; the small
        remainder goes through INTER_AREA as before. Same person-grouped CV accuracy.
        """
        h, w = crop.shape[:2]
        k = min(h, w) // n
        if k >= 2:
            hh, ww = h - h % k, w - w % k
            y0, x0 = (h - hh) // 2, (w - ww) // 2
            crop = cv2.resize(
                crop[y0 : y0 + hh, x0 : x0 + ww], (ww // k, hh // k), interpolation=cv2.INTER_AREA
            )
        return cv2.resize(crop, (n, n), dst=self._resized, interpolation=cv2.INTER_AREA)

    def __call__(self, gray: np.ndarray, box: Box) -> np.ndarray:
        """The face ready for LBPH. The result is a reused buffer: copy it to keep it."""
        b = self.crop_box(box, gray.shape)
        crop = gray[b.y : b.y + b.h, b.x : b.x + b.w]
        cfg = self.config
        if cfg.size:
            crop = self._resize(crop, cfg.size)
        if cfg.equalize == "hist":
            return cv2.equalizeHist(crop, dst=self._out if cfg.size else None)
        if self._clahe is not None:
            return self._clahe.apply(crop, dst=self._out if cfg.size else None)
        return crop


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

    def create(self) -> cv2.face.LBPHFaceRecognizer:
        return cv2.face.LBPHFaceRecognizer_create(
            radius=self.radius, neighbors=self.neighbors, grid_x=self.grid_x, grid_y=self.grid_y
        )


@dataclass(frozen=True)
class ModelMeta:
    """What edged stores beside LBPH's own nodes, in a second top-level node ``edged``.

    ``temperature`` turns distance gaps into probabilities (see `ExpressionModel`);
    ``calibrated`` says whether it was fitted on held-out data. ``weights`` (one row per
    histogram, one column per class) and ``bias`` (one per class), when present, replace
    the nearest-histogram rule by a linear scorer over the LBPH distances to every stored
    histogram (see `fitting`).
    """

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    temperature: float = 10.0
    calibrated: bool = False
    format: int = MODEL_FORMAT
    trained_images: int = 0
    # Arrays: left out of == and hash (the model version identifies a model's content).
    weights: np.ndarray | None = field(default=None, compare=False)
    bias: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Prediction:
    """One face's answer: the class, how sure (0..1), and LBPH's raw distance."""

    label: int
    expression: str
    confidence: float
    distance: float


class ExpressionModel:
    """A loaded LBPH model plus its class names and preprocessing.

    Workshop and first-cut models: confidence is a softmax over classes of
    ``-(d_class - d_best) / temperature``, where ``d_class`` is the smallest LBPH distance
    to any histogram of that class; for a workshop model it is only a relative margin.

    Models with ``meta.weights``: class scores are ``distances @ weights + bias`` over the
    distances to every stored histogram, and confidence is their softmax, fitted on
    held-out people: the estimated probability that the answer is right. ``d_class`` is
    then the chi-square distance to the class's prototype: the sum over the class's
    histograms of distance minus 2 per all-zero cell (a region prototype is zero outside
    its region, and each such cell adds exactly 2 to the LBPH distance).
    """

    def __init__(
        self,
        recognizer: cv2.face.LBPHFaceRecognizer,
        classes: Mapping[int, str],
        meta: ModelMeta,
        version: str = "",
        source: Literal["edged", "workshop", "labelled"] = "edged",
    ) -> None:
        self.recognizer = recognizer
        self.classes = dict(classes)
        self.meta = meta
        self.version = version
        self.source = source
        labels = np.asarray(recognizer.getLabels(), dtype=np.int64).ravel()
        self.class_ids = np.array(sorted(set(labels.tolist())), dtype=np.int64)
        # Per-class min over the collector's results, in sample order, with no Python loop.
        index = {c: i for i, c in enumerate(self.class_ids.tolist())}
        self._sample_class = np.array([index[int(v)] for v in labels], dtype=np.int64)
        self._class_min = np.empty(len(self.class_ids), np.float64)
        self._names = [self.classes.get(int(c), str(int(c))) for c in self.class_ids]
        self._collector = cv2.face.StandardCollector_create()
        self._dist = np.empty(len(labels), np.float64)
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
            self._w, self._b = w, b.ravel()
            cells = recognizer.getGridX() * recognizer.getGridY()
            hists = recognizer.getHistograms()
            self._base = np.array(
                [2.0 * np.count_nonzero(h.reshape(cells, -1).sum(1) == 0) for h in hists]
            )
            self._member = np.zeros((n, k), np.float64)
            self._member[np.arange(n), self._sample_class] = 1.0
            self._logits = np.empty(k, np.float64)

    @property
    def samples(self) -> int:
        return len(self._sample_class)

    def class_names(self) -> list[str]:
        """The model's classes in id order."""
        return list(self._names)

    def _distances(self, face: np.ndarray) -> np.ndarray:
        """LBPH distance to every stored histogram, in file order."""
        self.recognizer.predict_collect(face, self._collector)
        dist = self._dist
        for i, (_, d) in enumerate(self._collector.getResults(False)):
            dist[i] = d
        return dist

    def class_distances(self, face: np.ndarray) -> np.ndarray:
        """LBPH distance to each class (in ``class_ids`` order) for a prepared face."""
        return self._class_distances(self._distances(face))

    def _class_distances(self, dist: np.ndarray) -> np.ndarray:
        out = self._class_min
        if self._linear:
            np.subtract(dist, self._base, out=dist)
            np.dot(dist, self._member, out=out)
            np.add(dist, self._base, out=dist)
            return out
        out.fill(math.inf)
        np.minimum.at(out, self._sample_class, dist)
        return out

    def predict_face(self, face: np.ndarray) -> Prediction:
        """Classify a face already prepared by ``self.preprocessor``."""
        dist = self._distances(face)
        if self._linear:
            z = self._logits
            np.dot(dist, self._w, out=z)
            z += self._b
            best = int(np.argmax(z))
            z -= z[best]
            np.exp(z, out=z)
            conf = float(1.0 / z.sum())
            d = self._class_distances(dist)
            return Prediction(int(self.class_ids[best]), self._names[best], conf, float(d[best]))
        d = self._class_distances(dist)
        best = int(np.argmin(d))
        z = np.exp(-(d - d[best]) / self.meta.temperature)
        conf = float(1.0 / z.sum())
        return Prediction(int(self.class_ids[best]), self._names[best], conf, float(d[best]))

    def predict(self, gray: np.ndarray, box: Box) -> Prediction:
        return self.predict_face(self.preprocessor(gray, box))


def file_version(data: bytes) -> str:
    """A short content hash: the same file always has the same version."""
    return hashlib.sha256(data).hexdigest()[:12]


def _read_meta(node: cv2.FileNode) -> ModelMeta | None:
    if node.empty():
        return None
    pre = node.getNode("preprocess")

    def num(n: cv2.FileNode, key: str, default: float) -> float:
        v = n.getNode(key)
        return default if v.empty() else v.real()

    equalize = pre.getNode("equalize").string() or "none"
    if equalize not in ("none", "hist", "clahe"):
        raise ModelError(f"unknown equalize {equalize!r} in model")
    weights = None if node.getNode("weights").empty() else node.getNode("weights").mat()
    bias = None if node.getNode("bias").empty() else node.getNode("bias").mat()
    if (weights is None) != (bias is None) or (weights is not None and weights.ndim != 2):
        raise ModelError("model scorer is incomplete (weights and bias go together)")
    return ModelMeta(
        weights=weights,
        bias=None if bias is None else bias.ravel(),
        preprocess=PreprocessConfig(
            size=int(num(pre, "size", 0)), margin=num(pre, "margin", 0.0), equalize=equalize
        ),
        temperature=num(node, "temperature", 10.0),
        calibrated=bool(num(node, "calibrated", 0)),
        format=int(num(node, "format", MODEL_FORMAT)),
        trained_images=int(num(node, "trained_images", 0)),
    )


def _read_meta_of(data: bytes, fd_path: str) -> ModelMeta | None:
    """The ``edged`` node of a model file's bytes.

    In our YAML it is the last top-level node, after the histograms: parse only that
    tail, not the whole file a second time (that would double the load time).
    """
    if data.startswith(b"%YAML"):
        at = data.rfind(b"\nedged:")
        if at < 0:
            return None
        tail = "%YAML:1.0\n---\n" + data[at + 1 :].decode("utf-8", "replace")
        fs = cv2.FileStorage(tail, cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
    else:  # XML or JSON written by other tools: parse it all
        fs = cv2.FileStorage(fd_path, cv2.FILE_STORAGE_READ)
    try:
        return _read_meta(fs.getNode("edged"))
    finally:
        fs.release()


def load_model(path: Path | str, labels: Sequence[str] | None = None) -> ExpressionModel:
    """Load and validate a ``trainer.yml``: edged's own, or one the workshop code wrote.

    A workshop file has no class names inside: they come from ``labels`` (id order),
    or default to the workshop's ids. Raises `ModelError` for a missing, truncated or
    inconsistent file; never returns a half-read model.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist") from None
    except OSError as e:
        raise ModelError(f"cannot open model file {path}: {e.strerror}") from None
    try:
        # Read through the open descriptor: a writer renaming a new file into place
        # meanwhile cannot mix two versions into one load.
        fd_path = f"/proc/self/fd/{fd}"
        with open(fd_path, "rb") as f:
            data = f.read()
        if not data.strip():
            raise ModelError(f"model file {path} is empty")
        recognizer = cv2.face.LBPHFaceRecognizer_create()
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            recognizer.read(fd_path)
            meta = _read_meta_of(data, fd_path)
        except cv2.error as e:
            detail = str(e).strip().splitlines()[-1] if str(e).strip() else "parse error"
            raise ModelError(f"model file {path} is corrupt or truncated ({detail})") from None
    finally:
        os.close(fd)
    hists = recognizer.getHistograms()
    raw_labels = recognizer.getLabels()
    if not hists or raw_labels is None:
        raise ModelError(f"model file {path} holds no LBPH histograms (truncated or not a model)")
    label_arr = np.asarray(raw_labels).ravel()
    if len(label_arr) != len(hists):
        raise ModelError(
            f"model file {path} is inconsistent: {len(hists)} histograms, {len(label_arr)} labels"
        )
    params = LBPHParams(
        recognizer.getRadius(),
        recognizer.getNeighbors(),
        recognizer.getGridX(),
        recognizer.getGridY(),
    )
    if any(h.size != params.histogram_size for h in hists):
        raise ModelError(f"model file {path} has histograms of the wrong size (truncated?)")
    ids = sorted(set(int(v) for v in label_arr))
    inside = {i: recognizer.getLabelInfo(i) for i in ids if recognizer.getLabelInfo(i)}
    if meta is not None:
        if meta.trained_images <= 0:
            raise ModelError(f"model file {path} is truncated (its edged section is incomplete)")
        source: Literal["edged", "workshop", "labelled"] = "edged"
    elif b"!!binary" in data:
        # Only write_model stores base64 histograms, and it always adds the edged node:
        # without it, this is one of our files cut short (in its labelsInfo), not a
        # workshop file, and loading it would use the wrong preprocessing and names.
        raise ModelError(f"model file {path} is truncated (its edged section is missing)")
    else:
        meta = ModelMeta(preprocess=RAW_CROP)
        source = "labelled" if inside else "workshop"
    names = list(labels) if labels else list(WORKSHOP_CLASSES)
    classes = {i: inside.get(i) or (names[i] if 0 <= i < len(names) else str(i)) for i in ids}
    pre = meta.preprocess
    if pre.size < 0 or 0 < pre.size < 2 * params.radius + max(params.grid_x, params.grid_y):
        raise ModelError(f"model file {path} asks for {pre.size} px faces: too small for LBPH")
    if not -0.4 <= pre.margin <= 1.0:
        raise ModelError(f"model file {path} has an unusable crop margin {pre.margin}")
    model = ExpressionModel(recognizer, classes, meta, file_version(data), source)
    _self_test(model, path)
    return model


def _self_test(model: ExpressionModel, path: Path) -> None:
    """Classify one synthetic face, so a model that loads but cannot predict is refused
    here (and the daemon keeps its old one) instead of failing on the first real face."""
    side = 96
    face = np.tile(np.arange(side, dtype=np.uint8) * 2, (side, 1))
    try:
        p = model.predict(face, Box(8, 8, side - 16, side - 16))
    except (cv2.error, ValueError, IndexError) as e:
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ModelError(f"model file {path} cannot classify a face ({detail})") from None
    if not math.isfinite(p.confidence) or not 0.0 <= p.confidence <= 1.0:
        raise ModelError(f"model file {path} gives no usable confidence (scorer is broken)")


def write_model(  # noqa: PLR0917
    path: Path | str,
    histograms: Sequence[np.ndarray],
    labels: Sequence[int],
    classes: Mapping[int, str],
    params: LBPHParams,
    meta: ModelMeta,
) -> str:
    """Write a model atomically (temp file in the same folder, fsync, rename); returns its version.

    The file is LBPH's own YAML layout (so ``LBPHFaceRecognizer.read()`` accepts it) with
    the histograms base64-encoded, which parses many times faster than text floats, and
    edged's metadata in a second top-level node that LBPH ignores.
    """
    path = Path(path)
    if len(histograms) != len(labels) or not histograms:
        raise ModelError("a model needs at least one histogram and one label per histogram")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.yml", dir=path.parent)
    os.close(fd)
    try:
        fs = cv2.FileStorage(tmp, cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_BASE64)
        fs.startWriteStruct("opencv_lbphfaces", cv2.FileNode_MAP)
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
        fs.startWriteStruct("labelsInfo", cv2.FileNode_SEQ)
        for label, name in sorted(classes.items()):
            fs.startWriteStruct("", cv2.FileNode_MAP)
            fs.write("label", int(label))
            fs.write("value", name)
            fs.endWriteStruct()
        fs.endWriteStruct()
        fs.endWriteStruct()
        fs.startWriteStruct("edged", cv2.FileNode_MAP)
        fs.write("format", meta.format)
        fs.startWriteStruct("preprocess", cv2.FileNode_MAP)
        for k, v in asdict(meta.preprocess).items():
            fs.write(k, v)
        fs.endWriteStruct()
        fs.write("temperature", float(meta.temperature))
        fs.write("calibrated", int(meta.calibrated))
        if meta.weights is not None:
            fs.write("weights", np.asarray(meta.weights, np.float64))
            bias = meta.bias if meta.bias is not None else np.zeros(meta.weights.shape[1])
            fs.write("bias", np.asarray(bias, np.float64).reshape(1, -1))
        # Written last: a file cut before this line fails validation on load.
        fs.write("trained_images", max(1, int(meta.trained_images)))
        fs.endWriteStruct()
        fs.release()
        with open(tmp, "rb+") as f:
            data = f.read()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file_version(data)


def annotate(image: np.ndarray, box: Box, text: str) -> None:
    """Draw what the workshop drew: a box and a caption above it (in place).

    Line widths grow with the face, so the caption stays readable on a large photo.
    """
    scale = max(0.5, box.w / 250)
    thick = max(2, round(scale * 2))
    cv2.rectangle(image, (box.x, box.y), (box.x + box.w, box.y + box.h), (0, 255, 0), thick)
    (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    # Above the box when there is room, else just inside its top edge.
    y = box.y - thick - base if box.y - thick - base - th >= 0 else box.y + th + thick + 4
    org = (box.x, y)
    cv2.putText(
        image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 3, cv2.LINE_AA
    )
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 0), thick, cv2.LINE_AA)
