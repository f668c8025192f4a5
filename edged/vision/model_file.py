"""Reading, validating and atomically writing ``trainer.yml``: vision's only I/O.

The file is LBPH's own YAML layout (so ``LBPHFaceRecognizer.read()`` accepts it) with
edged's metadata in a second top-level node, ``edged``, that LBPH ignores.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edged.atomic import write_atomic
from edged.errors import ModelError
from edged.vision.detector import Box
from edged.vision.model import (
    MODEL_FORMAT,
    WORKSHOP_CLASSES,
    ExpressionModel,
    LBPHParams,
    ModelMeta,
)
from edged.vision.preprocess import RAW_CROP, PreprocessConfig, is_equalize


def file_version(data: bytes) -> str:
    """A short content hash: the same file always has the same version."""
    return hashlib.sha256(data).hexdigest()[:12]


def _matrix(node: cv2.FileNode, key: str) -> npt.NDArray[np.float64] | None:
    """The matrix stored under ``key`` (as float64, the scorer's type), or None."""
    child = node.getNode(key)
    return None if child.empty() else np.asarray(child.mat(), np.float64)


def _read_meta(node: cv2.FileNode) -> ModelMeta | None:
    if node.empty():
        return None
    pre = node.getNode("preprocess")

    def num(n: cv2.FileNode, key: str, default: float) -> float:
        v = n.getNode(key)
        return default if v.empty() else v.real()

    equalize = pre.getNode("equalize").string() or "none"
    if not is_equalize(equalize):
        raise ModelError(f"unknown equalize {equalize!r} in model")
    weights = _matrix(node, "weights")
    bias = _matrix(node, "bias")
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


def _read_file(path: Path) -> tuple[bytes, cv2.face.LBPHFaceRecognizer, ModelMeta | None]:
    """The file's bytes, LBPH's part of it, and edged's node (None: not ours)."""
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
        recognizer = cv2.face.LBPHFaceRecognizer.create()
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            recognizer.read(fd_path)
            meta = _read_meta_of(data, fd_path)
        except cv2.error as e:
            detail = str(e).strip().splitlines()[-1] if str(e).strip() else "parse error"
            raise ModelError(f"model file {path} is corrupt or truncated ({detail})") from None
    finally:
        os.close(fd)
    return data, recognizer, meta


def _check_histograms(path: Path, recognizer: cv2.face.LBPHFaceRecognizer) -> npt.NDArray[np.int64]:
    """The labels, once the histograms are known to be complete and of LBPH's size."""
    hists = recognizer.getHistograms()
    raw_labels = recognizer.getLabels()
    if not hists or raw_labels is None:
        raise ModelError(f"model file {path} holds no LBPH histograms (truncated or not a model)")
    label_arr = np.asarray(raw_labels, np.int64).ravel()
    if len(label_arr) != len(hists):
        raise ModelError(
            f"model file {path} is inconsistent: {len(hists)} histograms, {len(label_arr)} labels"
        )
    params = LBPHParams.of(recognizer)
    if any(h.size != params.histogram_size for h in hists):
        raise ModelError(f"model file {path} has histograms of the wrong size (truncated?)")
    return label_arr


Source = Literal["edged", "workshop", "labelled"]


def _meta_and_source(
    path: Path, data: bytes, meta: ModelMeta | None, named: bool
) -> tuple[ModelMeta, Source]:
    """Edged's metadata, or the workshop's raw-crop defaults for a file without it."""
    if meta is not None:
        if meta.trained_images <= 0:
            raise ModelError(f"model file {path} is truncated (its edged section is incomplete)")
        return meta, "edged"
    if b"!!binary" in data:
        # Only write_model stores base64 histograms, and it always adds the edged node:
        # without it, this is one of our files cut short (in its labelsInfo), not a
        # workshop file, and loading it would use the wrong preprocessing and names.
        raise ModelError(f"model file {path} is truncated (its edged section is missing)")
    return ModelMeta(preprocess=RAW_CROP), "labelled" if named else "workshop"


def _check_preprocess(path: Path, pre: PreprocessConfig, params: LBPHParams) -> None:
    if pre.size < 0 or 0 < pre.size < 2 * params.radius + max(params.grid_x, params.grid_y):
        raise ModelError(f"model file {path} asks for {pre.size} px faces: too small for LBPH")
    if not -0.4 <= pre.margin <= 1.0:
        raise ModelError(f"model file {path} has an unusable crop margin {pre.margin}")


def load_model(path: Path | str, labels: Sequence[str] | None = None) -> ExpressionModel:
    """Load and validate a ``trainer.yml``: edged's own, or one the workshop code wrote.

    A workshop file has no class names inside: they come from ``labels`` (id order),
    or default to the workshop's ids. Raises `ModelError` for a missing, truncated or
    inconsistent file; never returns a half-read model.
    """
    path = Path(path)
    data, recognizer, found = _read_file(path)
    label_arr = _check_histograms(path, recognizer)
    ids = sorted(set(int(v) for v in label_arr))
    inside = {i: recognizer.getLabelInfo(i) for i in ids if recognizer.getLabelInfo(i)}
    meta, source = _meta_and_source(path, data, found, bool(inside))
    names = list(labels) if labels else list(WORKSHOP_CLASSES)
    classes = {i: inside.get(i) or (names[i] if 0 <= i < len(names) else str(i)) for i in ids}
    params = LBPHParams.of(recognizer)
    _check_preprocess(path, meta.preprocess, params)
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


def _write_lbph(
    fs: cv2.FileStorage,
    histograms: Sequence[npt.NDArray[np.float32]],
    labels: Sequence[int],
    classes: Mapping[int, str],
    params: LBPHParams,
) -> None:
    """LBPH's own node, as ``LBPHFaceRecognizer.write`` lays it out."""
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


def _write_meta(fs: cv2.FileStorage, meta: ModelMeta) -> None:
    """Edged's node, after LBPH's; ``trained_images`` last, so a cut file is detected."""
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


def _loads_back(samples: int, version: str) -> Callable[[Path], None]:
    """The check the temp file must pass before it replaces the model: it loads, and it is
    the model just written (its histogram count and version), not what a disk kept of it.

    A failure is an ``OSError`` (EIO), not a `ModelError`: the write failed, so callers
    report "cannot write" (exit 1), not a missing or corrupt input model (exit 66).
    """

    def check(tmp: Path) -> None:
        try:
            model = load_model(tmp)
        except ModelError as e:
            raise OSError(errno.EIO, f"the written file does not load back ({e})") from None
        if model.samples != samples or model.version != version:
            found = f"{model.samples} histograms, version {model.version}"
            raise OSError(errno.EIO, f"the written file reads back as another model ({found})")

    return check


def model_bytes(
    histograms: Sequence[npt.NDArray[np.float32]],
    labels: Sequence[int],
    classes: Mapping[int, str],
    params: LBPHParams,
    meta: ModelMeta,
) -> bytes:
    """A model file's bytes, serialised in memory: OpenCV's file writer ignores a full disk.

    The histograms are base64-encoded, which parses many times faster than text floats.
    """
    if len(histograms) != len(labels) or not histograms:
        raise ModelError("a model needs at least one histogram and one label per histogram")
    # The name only tells OpenCV the format (YAML); nothing is written to disk here.
    flags = cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY | cv2.FILE_STORAGE_BASE64
    fs = cv2.FileStorage("model.yml", flags)
    _write_lbph(fs, histograms, labels, classes, params)
    _write_meta(fs, meta)
    return fs.releaseAndGetString().encode("utf-8")


def write_model(  # noqa: PLR0917
    path: Path | str,
    histograms: Sequence[npt.NDArray[np.float32]],
    labels: Sequence[int],
    classes: Mapping[int, str],
    params: LBPHParams,
    meta: ModelMeta,
) -> str:
    """Write a model all or nothing (`edged.atomic.write_atomic`); returns its version.

    The temp file must load back as this model before it replaces the old one, so a
    full disk, or a model the daemon would refuse, never replaces a working one.
    """
    path = Path(path)
    data = model_bytes(histograms, labels, classes, params, meta)
    version = file_version(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, check=_loads_back(len(histograms), version))
    return version
