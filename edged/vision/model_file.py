"""Reading, validating and atomically writing ``trainer.yml``: vision's only I/O.

The file is LBPH's own YAML layout (so ``LBPHFaceRecognizer.read()`` accepts it) with
edged's metadata in a second top-level node, ``edged``, that LBPH ignores.
"""

from __future__ import annotations

import errno
import hashlib
import math
import mmap
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edged.atomic import owner_for, write_atomic
from edged.enrollment.names import person_problem
from edged.errors import ModelError
from edged.files import OPEN_FLAGS, not_regular
from edged.vision.detector import Box
from edged.vision.exemplars import (
    CAP,
    MAX_GATE_LENGTH,
    Crop,
    Exemplars,
    compose,
    finite_gate,
)
from edged.vision.model import (
    MODEL_FORMAT,
    WORKSHOP_CLASSES,
    ExpressionModel,
    LBPHParams,
    ModelMeta,
    write_lbph_fields,
)
from edged.vision.preprocess import RAW_CROP, PreprocessConfig, is_equalize

FIRST_FORMAT = 1  # edged's first model files: region prototypes and the linear scorer
READOUTS_FORMAT = 2  # adds ``readouts`` (issue 15)
EXEMPLARS_FORMAT = 3  # adds ``exemplars``: enrolled people's face crops (issue 17)


def file_version(data: bytes | mmap.mmap) -> str:
    """A short content hash: the same file always has the same version."""
    return hashlib.sha256(data).hexdigest()[:12]


# -- reading: every field checked before a model can replace the working one -------------

# model.max_size_mb's default (settings.py): the workshop's own text models (60-150 MB)
# load, anything bigger is refused before a byte of it is read.
MAX_MODEL_BYTES = 160_000_000
# Bounds that keep a model cheap to load and to classify with; no real model is near them.
LBPH_BOUNDS = {"radius": (1, 8), "neighbors": (1, 12), "grid_x": (1, 32), "grid_y": (1, 32)}
MAX_FACE_PX = 256  # preprocess.size: a 6000 px face took 611 ms to classify
MAX_HISTOGRAMS = 100_000
MAX_NAME_CHARS = 100
MARGIN_RANGE = (-0.4, 1.0)
MAX_PERSONS = 100  # enrolled people in one model
MAX_GATE = 1e7  # a chi-square distance between two LBPH histograms is at most 2 x 2 x cells
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEAD = 1 << 16  # the bytes that tell text from base64 histograms (the first one starts early)
_INT32_MAX = 2**31 - 1
_CHUNK = 8 << 20  # copy in 8 MB reads: the GIL is released for each, never held long
# A matrix as OpenCV's FileNode.mat() gives it (None for an empty one).
Stored = npt.NDArray[np.integer[Any] | np.floating[Any]]


def _check_kind(path: Path, mode: int) -> None:
    """Only a regular file is a model: a FIFO would block, a device never end (/dev/zero)."""
    kind = not_regular(mode)
    if kind is None:
        return
    link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
    raise ModelError(f"model file {path}{link} is {kind}, not a model file")


def _check_size(path: Path, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ModelError(
            f"model file {path} is {size / 1e6:.1f} MB, above model.max_size_mb = "
            f"{max_bytes / 1e6:g}; raise it if this is really your model"
        )


def _open_error(path: Path, e: OSError) -> ModelError:
    if isinstance(e, FileNotFoundError):
        return ModelError(f"model file {path} does not exist")
    return ModelError(f"cannot open model file {path}: {e.strerror or e}")


def _open_regular(path: Path, max_bytes: int) -> tuple[int, int]:
    """A descriptor on ``path`` and its size, or `ModelError`: a regular file within the limit.

    Checked before opening (a device is never opened: opening some has effects) and again
    on the descriptor, which is what is read (the path may have been replaced meanwhile).
    """
    try:
        _check_kind(path, os.stat(path).st_mode)
        fd = os.open(path, OPEN_FLAGS)
    except OSError as e:
        raise _open_error(path, e) from None
    try:
        st = os.fstat(fd)
        _check_kind(path, st.st_mode)
        _check_size(path, st.st_size, max_bytes)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _scratch() -> int:
    """A private file in memory (an unlinked temp file where memfd is not available)."""
    try:
        return os.memfd_create("edged-model", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        with tempfile.TemporaryFile() as f:
            return os.dup(f.fileno())


def _snapshot(path: Path, fd: int, size: int) -> int:
    """A private copy of exactly ``size`` bytes of ``fd``: what is hashed and parsed can no
    longer change under us, and a file growing meanwhile is not read past its size."""
    mem = _scratch()
    done = 0
    try:
        while done < size:
            chunk = memoryview(os.pread(fd, min(_CHUNK, size - done), done))
            if not chunk:
                raise ModelError(f"model file {path} is truncated (it shrank while being read)")
            done += len(chunk)
            while chunk:
                chunk = chunk[os.write(mem, chunk) :]
    except OSError as e:
        os.close(mem)
        raise ModelError(f"cannot read model file {path}: {e.strerror or e}") from None
    except BaseException:
        os.close(mem)
        raise
    return mem


# OpenCV's base64 reader (YAML "!!binary", XML type_id="binary", JSON "$base64$") spins
# forever on a block whose 24-byte header names no element type ("", "5"): such blocks are
# refused before OpenCV sees the file. Only the layouts OpenCV itself writes are read; any
# other spelling of a base64 marker is refused, so none reaches the reader unchecked.
_SCAN = 1 << 20  # search 1 MB at a time: the GIL is held ~0.5 ms per search
_B64_HEADER = 32  # base64 characters of the 24-byte header
# The header's characters as each reader takes them: plain ASCII on one row (a stricter
# reading than OpenCV's, so a block it reads differently is refused, never passed).
_YAML_ROW = rb"[ ]{0,200}([^\x00-\x20#\x7f-\xff][\x20-\x7e]{31})"
_XML_ROW = rb"[ \t\r\n]{0,200}([^\x00-\x20<\x7f-\xff][\x20-\x3b\x3d-\x7e]{31})"
_B64_LAYOUTS = (
    (b"!!", re.compile(rb"[ ]{1,80}\|[ ]{0,80}\r?\n" + _YAML_ROW)),  # YAML
    (b'type_id="', re.compile(rb'">' + _XML_ROW)),  # XML
    (b"type_id='", re.compile(rb"'>" + _XML_ROW)),
)
_JSON_B64 = re.compile(rb'\$base64\$([^\x00-\x1f",\]}\x7f-\xff]{32})')
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: v for v, c in enumerate(_B64_ALPHABET)}  # anything else is 0, as in OpenCV
_ELEMENT_TYPES = frozenset(b"ucwsifdh")


def base64_header_problem(chars: bytes) -> str | None:
    """What makes a base64 block's header unreadable (OpenCV would never finish), or None."""
    if len(chars) < _B64_HEADER:
        return "is cut short"
    header = bytearray()
    for i in range(0, _B64_HEADER, 4):
        d, c, b, a = (_B64_VALUE.get(x, 0) for x in chars[i : i + 4])
        header += bytes(((d << 2 | c >> 4) & 255, (c << 4 | b >> 2) & 255, (b << 6 | a) & 255))
    fmt = re.split(rb"[\x00\t\n\v\f\r ]", bytes(header), maxsplit=1)[0]
    if not _ELEMENT_TYPES.intersection(fmt):
        return f"has a header that names no element type ({fmt!r})"
    return None


def _find_all(view: mmap.mmap, marker: bytes) -> Iterator[int]:
    """Every offset of ``marker``, found 1 MB at a time."""
    start, end = 0, len(view)
    while start < end:
        at = view.find(marker, start, min(end, start + _SCAN + len(marker)))
        if at < 0:
            start += _SCAN
            continue
        yield at
        start = at + 1


def _base64_header(view: mmap.mmap, at: int) -> bytes | None:
    """The header characters of the base64 block whose marker "binary" is at ``at``; None
    where the word is no marker (a name); `ValueError` for a layout OpenCV does not write."""
    before = view[max(0, at - 9) : at]
    for prefix, layout in _B64_LAYOUTS:
        if before.endswith(prefix):
            match = layout.match(view, at + len(b"binary"))
            if match is None:
                raise ValueError("a base64 block in a layout edged does not read")
            return match.group(1)
    if before[-1:] in (b"!", b"^", b":", b'"', b"'"):  # a YAML tag or XML attribute, spelt oddly
        raise ValueError("a base64 block in a layout edged does not read")
    return None


def _check_base64(path: Path, view: mmap.mmap) -> None:
    """Refuse, before OpenCV parses the file, any base64 block its reader would spin on."""
    blocks: list[tuple[int, bytes | None]] = []
    try:
        blocks += [(at, _base64_header(view, at)) for at in _find_all(view, b"binary")]
    except ValueError as e:
        raise ModelError(f"model file {path} holds {e}") from None
    for at in _find_all(view, b"$base64$"):
        match = _JSON_B64.match(view, at)
        blocks.append((at, match.group(1) if match else b""))
    for at, chars in blocks:
        problem = None if chars is None else base64_header_problem(chars)
        if problem:
            raise ModelError(f"model file {path}: the base64 block at byte {at} {problem}")


def _digest(path: Path, mem: int, size: int) -> tuple[str, bytes]:
    """The version (content hash) and the first bytes, once the file is known to be one
    OpenCV's parser finishes; `ModelError` for an empty file."""
    if size == 0:
        raise ModelError(f"model file {path} is empty")
    with mmap.mmap(mem, size, prot=mmap.PROT_READ) as view:
        version, head = file_version(view), view[:_HEAD]
        _check_base64(path, view)
    if size <= _HEAD and not head.strip():
        raise ModelError(f"model file {path} is empty")
    return version, head


def _problem(path: Path, field: str, value: object, why: str) -> ModelError:
    return ModelError(f"model file {path}: {field} = {value}: {why}")


def _child(path: Path, node: cv2.FileNode, field: str) -> cv2.FileNode:
    """``node``'s child for the last part of the dotted ``field``; missing: truncated."""
    child = node.getNode(field.rsplit(".", 1)[-1])
    if child.empty():
        raise ModelError(f"model file {path} is truncated or incomplete: {field} is missing")
    return child


def _shown(node: cv2.FileNode) -> str:
    if node.isString():
        return repr(node.string())
    if node.isInt() or node.isReal():
        return f"{node.real():g}"
    return "a list" if node.isSeq() else "a map" if node.isMap() else "nothing"


def _int(path: Path, node: cv2.FileNode, field: str, low: int, high: int) -> int:
    """A whole number within [low, high]."""
    child = _child(path, node, field)
    if not child.isInt():
        raise _problem(path, field, _shown(child), "not a whole number")
    value = int(child.real())
    if not low <= value <= high:
        raise _problem(path, field, value, f"must be {low} to {high}")
    return value


def _real(path: Path, node: cv2.FileNode, field: str) -> float:
    """A finite number."""
    child = _child(path, node, field)
    if not (child.isInt() or child.isReal()):
        raise _problem(path, field, _shown(child), "not a number")
    value = float(child.real())
    if not math.isfinite(value):
        raise _problem(path, field, value, "not a finite number")
    return value


def _as_map(path: Path, node: cv2.FileNode, field: str) -> cv2.FileNode:
    if not node.isMap():
        raise _problem(path, field, _shown(node), "not a map")
    return node


def histogram_problem(h: Stored | None, size: int) -> str | None:
    """What is wrong with one stored LBPH histogram (``size`` values), or None."""
    if h is None or h.size == 0:
        return "is empty"
    if h.dtype != np.float32:
        return f"holds {h.dtype} values, not float32"
    if h.shape != (1, size):
        return f"has shape {' x '.join(map(str, h.shape))}, not 1 x {size} (LBPH's parameters)"
    if not np.isfinite(h).all():
        return "holds NaN or infinite values"
    if (h < 0).any():
        return "holds negative values"
    return None


def labels_problem(raw: Stored | None, count: int) -> str | None:
    """What is wrong with LBPH's labels for ``count`` histograms, or None."""
    if raw is None or raw.size == 0:
        return "is empty"
    if raw.dtype != np.int32:
        return f"holds {raw.dtype} values, not whole numbers (int32)"
    if raw.ndim != 2 or 1 not in raw.shape:
        return f"has shape {' x '.join(map(str, raw.shape))}, not a single column"
    if raw.size != count:
        return f"has {raw.size} labels for {count} histograms (one each)"
    if (raw < 0).any():
        return "holds negative labels"
    return None


def scorer_problem(m: Stored | None, shape: tuple[int, int]) -> str | None:
    """What is wrong with the scorer's weights (``shape``) or bias (``(1, k)``), or None."""
    if m is None or m.size == 0:
        return "is empty"
    if not (np.issubdtype(m.dtype, np.floating) or np.issubdtype(m.dtype, np.integer)):
        return f"holds {m.dtype} values, not numbers"
    n, k = shape
    fits = m.shape == shape if n != 1 else (m.ndim == 2 and 1 in m.shape and m.size == k)
    if not fits:
        return f"has shape {' x '.join(map(str, m.shape))}, not {n} x {k}"
    if not np.isfinite(m).all():
        return "holds NaN or infinite values"
    return None


def name_problem(name: str) -> str | None:
    """What is wrong with a class name stored in the file (it reaches logs and MQTT), or None."""
    if len(name) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    if not name.isprintable():
        return "holds control characters"
    return None


def _read_params(path: Path, lbph: cv2.FileNode) -> LBPHParams:
    where = "opencv_lbphfaces."
    return LBPHParams(
        *(_int(path, lbph, where + key, lo, hi) for key, (lo, hi) in LBPH_BOUNDS.items())
    )


def _check_histograms(path: Path, seq: cv2.FileNode, params: LBPHParams) -> int:
    """The number of histograms, once each is known to be one LBPH can compare with."""
    if not seq.isSeq() or seq.size() == 0:
        raise ModelError(f"model file {path} holds no LBPH histograms (truncated or not a model)")
    count = seq.size()
    if count > MAX_HISTOGRAMS:
        field = "opencv_lbphfaces.histograms"
        raise ModelError(f"model file {path}: {field} holds {count} (at most {MAX_HISTOGRAMS})")
    for i in range(count):
        # One at a time: a workshop file's ~90 MB of histograms are never all in Python.
        problem = histogram_problem(seq.at(i).mat(), params.histogram_size)
        if problem:
            raise ModelError(f"model file {path}: opencv_lbphfaces.histograms[{i}] {problem}")
    return count


def _read_labels(path: Path, lbph: cv2.FileNode, count: int) -> npt.NDArray[np.int64]:
    field = "opencv_lbphfaces.labels"
    raw = _child(path, lbph, field).mat()
    problem = labels_problem(raw, count)
    if problem:
        raise ModelError(f"model file {path}: {field} {problem}")
    return np.asarray(raw, np.int64).ravel()


def _read_names(path: Path, lbph: cv2.FileNode) -> dict[int, str]:
    """The class names stored by edged (LBPH's labelsInfo); the first of a label counts."""
    seq = lbph.getNode("labelsInfo")
    if seq.empty():
        return {}
    if not seq.isSeq():
        raise _problem(path, "opencv_lbphfaces.labelsInfo", _shown(seq), "not a list")
    names: dict[int, str] = {}
    for i in range(seq.size()):
        where = f"opencv_lbphfaces.labelsInfo[{i}]"
        item = _as_map(path, seq.at(i), where)
        label = _int(path, item, f"{where}.label", 0, _INT32_MAX)
        value = _child(path, item, f"{where}.value")
        if not value.isString():
            raise _problem(path, f"{where}.value", _shown(value), "not a name")
        problem = name_problem(value.string())
        if problem:
            raise ModelError(f"model file {path}: {where}.value {problem}")
        names.setdefault(label, value.string())
    return names


def _read_format(path: Path, node: cv2.FileNode) -> int:
    value = _int(path, node, "edged.format", -_INT32_MAX, _INT32_MAX)
    if value > MODEL_FORMAT:
        raise ModelError(
            f"model file {path} was written by a newer edged (edged.format = {value}; this "
            f"edged reads formats {FIRST_FORMAT} to {MODEL_FORMAT}): upgrade edged, or "
            "train the model again"
        )
    if value < FIRST_FORMAT:
        raise _problem(
            path,
            "edged.format",
            value,
            f"unknown (this edged reads {FIRST_FORMAT} to {MODEL_FORMAT})",
        )
    return value


def _read_readouts(path: Path, node: cv2.FileNode, fmt: int, count: int, scorer: bool) -> int:
    """How many of the last histograms are readouts (format 2; none before it)."""
    if fmt < READOUTS_FORMAT:
        return 0
    readouts = _int(path, node, "edged.readouts", 0, max(0, count - 1))
    if readouts and not scorer:
        raise _problem(path, "edged.readouts", readouts, "readouts need edged.weights")
    return readouts


def _read_preprocess(path: Path, node: cv2.FileNode, params: LBPHParams) -> PreprocessConfig:
    pre = _as_map(path, _child(path, node, "edged.preprocess"), "edged.preprocess")
    size = _int(path, pre, "edged.preprocess.size", -_INT32_MAX, _INT32_MAX)
    smallest = 2 * params.radius + max(params.grid_x, params.grid_y)
    if size != 0 and not smallest <= size <= MAX_FACE_PX:
        why = "too small for LBPH" if size < smallest else "too big to classify quickly"
        raise _problem(
            path, "edged.preprocess.size", size, f"{why} (0, or {smallest} to {MAX_FACE_PX} px)"
        )
    margin = _real(path, pre, "edged.preprocess.margin")
    low, high = MARGIN_RANGE
    if not low <= margin <= high:
        raise _problem(path, "edged.preprocess.margin", margin, f"must be {low:g} to {high:g}")
    equalize = _child(path, pre, "edged.preprocess.equalize")
    name = equalize.string() if equalize.isString() else ""
    if not is_equalize(name):
        raise _problem(path, "edged.preprocess.equalize", _shown(equalize), "unknown")
    return PreprocessConfig(size=size, margin=margin, equalize=name)


def _read_scorer(
    path: Path, node: cv2.FileNode, count: int, classes: int
) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None]:
    """The linear scorer's weights (one row per histogram, one column per class) and bias."""
    w, b = node.getNode("weights"), node.getNode("bias")
    if w.empty() and b.empty():
        return None, None
    if w.empty() or b.empty():
        missing = "edged.weights" if w.empty() else "edged.bias"
        raise ModelError(f"model file {path} is truncated or incomplete: {missing} is missing")
    out = []
    for field, m, shape in (
        ("edged.weights", w.mat(), (count, classes)),
        ("edged.bias", b.mat(), (1, classes)),
    ):
        problem = scorer_problem(m, shape)
        if problem:
            raise ModelError(f"model file {path}: {field} {problem}")
        out.append(np.asarray(m, np.float64))
    return out[0], out[1].ravel()


def _read_meta(
    path: Path, node: cv2.FileNode, params: LBPHParams, labels: npt.NDArray[np.int64]
) -> ModelMeta:
    """Edged's node, every field checked (``trained_images`` is written last: a file cut
    before it is reported as truncated)."""
    node = _as_map(path, node, "edged")
    fmt = _read_format(path, node)
    trained = _int(path, node, "edged.trained_images", 1, _INT32_MAX)
    pre = _read_preprocess(path, node, params)
    temperature = _real(path, node, "edged.temperature")
    if temperature <= 0:
        raise _problem(path, "edged.temperature", temperature, "must be above 0")
    calibrated = _int(path, node, "edged.calibrated", 0, 1)
    weights, bias = _read_scorer(path, node, len(labels), len(np.unique(labels)))
    readouts = _read_readouts(path, node, fmt, len(labels), weights is not None)
    gate = _read_gate(path, node)
    exemplars = _read_exemplars(path, node, fmt, pre.size, set(labels.tolist()))
    return ModelMeta(
        gate=gate,
        exemplars=exemplars,
        preprocess=pre,
        temperature=temperature,
        calibrated=bool(calibrated),
        format=fmt,
        trained_images=trained,
        weights=weights,
        bias=bias,
        readouts=readouts,
    )


def _read_gate(path: Path, node: cv2.FileNode) -> tuple[float, ...]:
    """The identity gate's thresholds, one per crop count from 1 (absent: none)."""
    child = node.getNode("gate")
    if child.empty():
        return ()
    m = child.mat() if child.isMap() else None
    length = m.size if m is not None and 1 <= m.size <= MAX_GATE_LENGTH else MAX_GATE_LENGTH
    problem = scorer_problem(m, (1, length))
    if problem:
        raise ModelError(f"model file {path}: edged.gate {problem}")
    values = np.asarray(m, np.float64).ravel()
    problem = finite_gate(values.tolist())
    if problem or (values > MAX_GATE).any():
        raise ModelError(
            f"model file {path}: edged.gate {problem or f'holds values above {MAX_GATE:g}'}"
        )
    return tuple(float(v) for v in values)


def _index_column(path: Path, node: cv2.FileNode, field: str, count: int | None) -> list[int]:
    """An N x 1 int32 matrix (``count`` rows when known) as a list."""
    child = _child(path, node, field)
    m = child.mat() if child.isMap() else None
    if m is None or m.size == 0:
        raise _problem(path, field, _shown(child), "not a matrix of whole numbers")
    if m.dtype != np.int32 or m.ndim != 2 or m.shape[1] != 1:
        shape = " x ".join(map(str, m.shape))
        raise ModelError(f"model file {path}: {field} is {m.dtype} {shape}, not an int32 column")
    if count is not None and m.shape[0] != count:
        raise ModelError(f"model file {path}: {field} has {m.shape[0]} rows for {count} crops")
    return [int(v) for v in m.ravel()]


def _read_exemplars(
    path: Path, node: cv2.FileNode, fmt: int, size: int, class_ids: set[int]
) -> Exemplars | None:
    """The enrolled crops (format 3), every field checked: names, counts, classes, and
    each PNG's header before it is decoded (exactly the model's face size, 8-bit gray)."""
    child = node.getNode("exemplars")
    if child.empty():
        return None
    field = "edged.exemplars"
    if fmt < EXEMPLARS_FORMAT:
        raise _problem(path, "edged.format", fmt, f"exemplars need format {EXEMPLARS_FORMAT}")
    ex = _as_map(path, child, field)
    if size <= 0:
        raise _problem(path, "edged.preprocess.size", size, "exemplars need a fixed face size")
    persons = _read_persons(path, _child(path, ex, f"{field}.persons"))
    owner = _index_column(path, ex, f"{field}.person", None)
    count = len(owner)
    if count > CAP * len(persons) * len(class_ids):
        raise _problem(path, f"{field}.person", f"{count} rows", "more crops than the cap allows")
    label = _index_column(path, ex, f"{field}.label", count)
    _check_owners(path, len(persons), owner, label, class_ids)
    seq = _child(path, ex, f"{field}.crops")
    if not seq.isSeq() or seq.size() != count:
        raise _problem(path, f"{field}.crops", _shown(seq), f"not a list of {count} crops")
    crops = []
    for i in range(count):
        face = _read_png(path, seq.at(i), f"{field}.crops[{i}]", size)
        crops.append(Crop(persons[owner[i]], label[i], face))
    return Exemplars(tuple(crops))


def _check_owners(
    path: Path, persons: int, owner: list[int], label: list[int], class_ids: set[int]
) -> None:
    """Each crop's person and class exist, each person has a crop, none has too many."""
    field = "edged.exemplars"
    if any(not 0 <= o < persons for o in owner):
        raise ModelError(f"model file {path}: {field}.person names a person not in the list")
    if set(range(persons)) - set(owner):
        raise ModelError(f"model file {path}: {field}.persons lists a person with no crop")
    if any(c not in class_ids for c in label):
        raise ModelError(f"model file {path}: {field}.label names a class the model lacks")
    if max(Counter(zip(owner, label, strict=True)).values()) > CAP:
        raise ModelError(
            f"model file {path}: {field} has more than {CAP} crops of a person and expression"
        )


def _read_persons(path: Path, seq: cv2.FileNode) -> list[str]:
    field = "edged.exemplars.persons"
    if not seq.isSeq() or not 1 <= seq.size() <= MAX_PERSONS:
        raise _problem(path, field, _shown(seq), f"not a list of 1 to {MAX_PERSONS} names")
    persons = []
    for i in range(seq.size()):
        item = seq.at(i)
        name = item.string() if item.isString() else ""
        problem = person_problem(name)
        if problem:
            raise _problem(path, f"{field}[{i}]", _shown(item), problem)
        persons.append(name)
    if len(set(persons)) != len(persons):
        raise ModelError(f"model file {path}: {field} names a person twice")
    return persons


def _read_png(path: Path, node: cv2.FileNode, field: str, size: int) -> npt.NDArray[np.uint8]:
    """One crop: a PNG of exactly size x size 8-bit gray pixels, checked from its header
    before decoding (a hostile PNG cannot make the decoder allocate more)."""
    m = node.mat() if node.isMap() else None
    if m is None or m.dtype != np.uint8 or m.ndim != 2 or m.shape[0] != 1:
        raise _problem(path, field, _shown(node), "not a PNG (one row of bytes)")
    data = m.tobytes()
    if len(data) > 2 * size * size + 1024:
        raise _problem(path, field, f"{len(data)} bytes", "too big for a face crop")
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        raise _problem(path, field, f"{len(data)} bytes", "not a PNG")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if (width, height) != (size, size) or data[24] != 8 or data[25] != 0:
        raise _problem(
            path,
            field,
            f"{width}x{height} depth {data[24]} color type {data[25]}",
            f"not an 8-bit gray {size}x{size} face (the model's size)",
        )
    face = cv2.imdecode(m.reshape(-1), cv2.IMREAD_UNCHANGED)
    if face is None or face.shape != (size, size) or face.dtype != np.uint8:
        raise _problem(path, field, f"{len(data)} bytes", "not a decodable PNG")
    return np.asarray(face, np.uint8)


@dataclass(frozen=True)
class _Contents:
    """What a model file holds, every part of it checked."""

    recognizer: cv2.face.LBPHFaceRecognizer
    params: LBPHParams
    labels: npt.NDArray[np.int64]
    names: dict[int, str]
    meta: ModelMeta | None  # None: no edged node (a workshop file)


def _read_storage(path: Path, fs: cv2.FileStorage) -> _Contents:
    """Check the parsed file's nodes, then let LBPH read its own (no second parse)."""
    lbph = fs.getNode("opencv_lbphfaces")
    if not lbph.isMap():
        raise ModelError(f"model file {path} holds no LBPH model (truncated or not a model)")
    params = _read_params(path, lbph)
    count = _check_histograms(path, lbph.getNode("histograms"), params)
    labels = _read_labels(path, lbph, count)
    names = _read_names(path, lbph)
    node = fs.getNode("edged")
    meta = None if node.empty() else _read_meta(path, node, params, labels)
    recognizer = params.create()
    cv2.Algorithm.read(recognizer, lbph)  # LBPH's own reader, on the nodes checked above
    if LBPHParams.of(recognizer) != params or np.asarray(recognizer.getLabels()).size != count:
        raise ModelError(f"model file {path} is not read back by LBPH as it was checked")
    return _Contents(recognizer, params, labels, names, meta)


def _corrupt(path: Path, e: BaseException) -> ModelError:
    if isinstance(e, MemoryError):
        return ModelError(f"model file {path} does not fit in memory")
    text = str(e).strip()
    detail = text.splitlines()[-1] if text else type(e).__name__
    return ModelError(f"model file {path} is corrupt or truncated ({detail})")


# What OpenCV's parser and its Python conversions raise for bytes that are not a model.
_PARSE_ERRORS = (cv2.error, ValueError, TypeError, OverflowError, SystemError, MemoryError)


def _parse(path: Path, mem: int) -> _Contents:
    """Parse the private copy once: OpenCV reads it without holding the GIL."""
    try:
        fs = cv2.FileStorage(f"/proc/self/fd/{mem}", cv2.FILE_STORAGE_READ)
    except _PARSE_ERRORS as e:
        raise _corrupt(path, e) from None
    try:
        if not fs.isOpened():
            raise ModelError(f"model file {path} is not a model (not YAML, XML or JSON)")
        return _read_storage(path, fs)
    except _PARSE_ERRORS as e:
        raise _corrupt(path, e) from None
    finally:
        fs.release()


def _read_file(path: Path, max_bytes: int) -> tuple[str, bytes, _Contents]:
    """The file's version, its first bytes and its checked contents.

    The frame loop runs meanwhile: no step holds the GIL for long (bytes are copied, hashed
    and parsed by the kernel, hashlib and OpenCV, which release it; Python sees at most
    one histogram at a time).
    """
    fd, size = _open_regular(path, max_bytes)
    try:
        mem = _snapshot(path, fd, size)
    finally:
        os.close(fd)
    try:
        version, head = _digest(path, mem, size)
        return version, head, _parse(path, mem)
    finally:
        os.close(mem)


Source = Literal["edged", "workshop", "labelled"]


def _meta_and_source(
    path: Path, head: bytes, meta: ModelMeta | None, named: bool
) -> tuple[ModelMeta, Source]:
    """Edged's metadata, or the workshop's raw-crop defaults for a file without it."""
    if meta is not None:
        return meta, "edged"
    if b"!!binary" in head:
        # Only write_model stores base64 histograms, and it always adds the edged node:
        # without it, this is one of our files cut short (in its labelsInfo), not a
        # workshop file, and loading it would use the wrong preprocessing and names.
        raise ModelError(f"model file {path} is truncated (its edged section is missing)")
    return ModelMeta(preprocess=RAW_CROP), "labelled" if named else "workshop"


def load_model(
    path: Path | str, labels: Sequence[str] | None = None, *, max_bytes: int = MAX_MODEL_BYTES
) -> ExpressionModel:
    """Load and validate a ``trainer.yml``: edged's own, or one the workshop code wrote.

    The one gate a model passes before it is used: only a regular file of at most
    ``max_bytes``, every field of it checked, and a face classified. For any file it
    returns a model or raises `ModelError`, never blocks. A workshop file has no class
    names inside: they come from ``labels`` (id order), or default to the workshop's ids.
    """
    path = Path(path)
    version, head, contents = _read_file(path, max_bytes)
    ids = np.unique(contents.labels).tolist()
    inside = {i: contents.names[i] for i in ids if contents.names.get(i)}
    meta, source = _meta_and_source(path, head, contents.meta, bool(inside))
    names = list(labels) if labels else list(WORKSHOP_CLASSES)
    classes = {i: inside.get(i) or (names[i] if 0 <= i < len(names) else str(i)) for i in ids}
    base = replace(meta, exemplars=None)
    model = ExpressionModel(contents.recognizer, classes, base, version, source)
    if meta.exemplars is not None:
        try:
            model = compose(model, meta.exemplars, version)
        except ModelError as e:
            raise ModelError(f"model file {path}: edged.exemplars: {e}") from None
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
    if not math.isfinite(p.distance):
        raise ModelError(f"model file {path} gives no usable distance (histograms are broken)")


def _write_lbph(
    fs: cv2.FileStorage,
    histograms: Sequence[npt.NDArray[np.float32]],
    labels: Sequence[int],
    classes: Mapping[int, str],
    params: LBPHParams,
) -> None:
    """LBPH's own node, as ``LBPHFaceRecognizer.write`` lays it out."""
    fs.startWriteStruct("opencv_lbphfaces", cv2.FileNode_MAP)
    write_lbph_fields(fs, histograms, labels, params)
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
    fs.write("format", written_format(meta))
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
    if meta.readouts or written_format(meta) >= READOUTS_FORMAT:
        fs.write("readouts", int(meta.readouts))
    if meta.gate:
        fs.write("gate", np.asarray(meta.gate, np.float64).reshape(1, -1))
    if meta.exemplars is not None:
        _write_exemplars(fs, meta.exemplars)
    # Written last: a file cut before this line fails validation on load.
    fs.write("trained_images", max(1, int(meta.trained_images)))
    fs.endWriteStruct()


def written_format(meta: ModelMeta) -> int:
    """The oldest format that holds this model: one without exemplars or readouts is still
    read by an older edged (``gate`` alone is ignored by those)."""
    if meta.exemplars is not None:
        return EXEMPLARS_FORMAT
    return READOUTS_FORMAT if meta.readouts else FIRST_FORMAT


def _write_exemplars(fs: cv2.FileStorage, exemplars: Exemplars) -> None:
    """The crops as PNG (about 3.4 KB a 64 px face), with their person and class."""
    persons = exemplars.persons
    index = {p: i for i, p in enumerate(persons)}
    fs.startWriteStruct("exemplars", cv2.FileNode_MAP)
    fs.startWriteStruct("persons", cv2.FileNode_SEQ)
    for p in persons:
        fs.write("", p)
    fs.endWriteStruct()
    crops = exemplars.crops
    fs.write("person", np.array([index[c.person] for c in crops], np.int32).reshape(-1, 1))
    fs.write("label", np.array([c.class_id for c in crops], np.int32).reshape(-1, 1))
    fs.startWriteStruct("crops", cv2.FileNode_SEQ)
    for c in crops:
        ok, png = cv2.imencode(".png", np.ascontiguousarray(c.face, np.uint8))
        if not ok:
            raise ModelError(f"cannot encode an exemplar crop of {c.person} as PNG")
        fs.write("", png.reshape(1, -1))
    fs.endWriteStruct()
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
    # Enrolled faces are personal data: only the owner reads them.
    # A model holding faces is its owner's alone: 0600, and run as root into the
    # service's folder, the service's (else it could not read it).
    faces = meta.exemplars is not None
    write_atomic(
        path,
        data,
        mode=0o600 if faces else 0o644,
        check=_loads_back(len(histograms), version),
        owner=owner_for(Path(path).parent) if faces else None,
    )
    return version
