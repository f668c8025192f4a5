"""The enrollment store as the daemon reads it: the crops a model can use, and why not others.

The daemon reads a store anyone with root (``sudo edged enroll``) or a hand may have
changed, so nothing in it may stop a model load: a crop that is not what the model
prepares (damaged, another size, not 8-bit grey, a link, a FIFO) is skipped with a
reason; only what is left becomes `Exemplars`. Each crop's header is checked before it
is decoded, so a "crop" that is really a huge image costs nothing.

Only the newest `CAP` crops of each (person, expression) are decoded (newest by file
time, as ``edged-train`` orders them): the rest would be dropped by `capped` anyway.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from edged.enrollment.store import EnrolledFace, EnrollmentStore, StoreError, describe
from edged.files import OPEN_FLAGS, not_regular
from edged.images import HeaderDamaged, header_size
from edged.vision.detector import Gray
from edged.vision.exemplars import CAP, Crop, Exemplars, capped
from edged.vision.model import ExpressionModel

# A prepared crop is a few KB (64x64 grey PNG); anything far bigger is not one.
MAX_CROP_BYTES = 1 << 20


@dataclass(frozen=True)
class Enrollments:
    """What the daemon takes from the store for one model: the exemplars (None: none
    usable), and one line per thing skipped."""

    exemplars: Exemplars | None = None
    warnings: tuple[str, ...] = ()


class CropUnusable(Exception):
    """A stored crop the model cannot use; the message says why."""


def read_enrollments(store: EnrollmentStore, model: ExpressionModel) -> Enrollments:
    """The store's usable crops for ``model``. A missing or empty store gives no
    exemplars and no warning; a store prepared unlike the model gives no exemplars and
    one warning (its crops could not be compared with the model's faces)."""
    try:
        prepared = store.prepared_with()
    except StoreError as e:
        return Enrollments(warnings=(f"{e}: enrolled faces not used",))
    want = model.meta.preprocess
    if prepared is not None and prepared != want:
        return Enrollments(
            warnings=(
                f"the enrollment store {store.root} holds faces prepared as "
                f"{describe(prepared)}, but the model prepares faces as {describe(want)}: "
                "enrolled faces not used (enroll them again with this model, or set "
                "enroll.store to another folder)",
            )
        )
    if want.size <= 0:
        return Enrollments(
            warnings=("the model keeps faces at their raw size: enrolled faces not used",)
        )
    contents = store.scan()
    warnings = list(contents.warnings)
    ids = {model.classes.get(int(c), str(int(c))): int(c) for c in model.class_ids}
    usable, unknown = _known(contents.faces, ids)
    for expression, n in sorted(unknown.items()):
        warnings.append(
            f"{n} enrolled face{'s' * (n != 1)} of the expression {expression!r}, which the "
            f"model does not have ({', '.join(ids)}): not used"
        )
    crops = _newest_crops(store, usable, ids, want.size, warnings)
    if not crops:
        return Enrollments(warnings=tuple(warnings))
    return Enrollments(Exemplars(capped(crops)), tuple(warnings))


def _known(
    faces: Iterable[EnrolledFace], ids: dict[str, int]
) -> tuple[list[EnrolledFace], Counter[str]]:
    """The faces of the model's expressions, and how many of each other expression."""
    usable: list[EnrolledFace] = []
    unknown: Counter[str] = Counter()
    for f in faces:
        if f.expression in ids:
            usable.append(f)
        else:
            unknown[f.expression] += 1
    return usable, unknown


def _newest_crops(
    store: EnrollmentStore,
    faces: list[EnrolledFace],
    ids: dict[str, int],
    size: int,
    warnings: list[str],
) -> list[Crop]:
    """Up to `CAP` readable crops per (person, expression), newest first; returned
    oldest first (what `capped` expects). An unreadable crop lets an older one in."""
    groups: defaultdict[tuple[str, str], list[tuple[int, EnrolledFace]]] = defaultdict(list)
    for f in faces:
        try:
            mtime = os.lstat(f.path).st_mtime_ns
        except OSError:  # removed since the scan: an `edged enroll --forget` under way
            continue
        groups[(f.person, f.expression)].append((mtime, f))
    out: list[tuple[int, str, Crop]] = []
    for (person, expression), found in sorted(groups.items()):
        taken = 0
        for mtime, f in sorted(found, key=lambda item: (item[0], item[1].path.name), reverse=True):
            if taken == CAP:
                break
            try:
                face = read_crop(f.path, size)
            except CropUnusable as e:
                warnings.append(f"enrolled face {f.path.relative_to(store.root)} {e}: skipped")
                continue
            out.append((mtime, f.path.name, Crop(person, ids[expression], face)))
            taken += 1
    out.sort(key=lambda item: (item[0], item[1]))
    return [c for _, _, c in out]


def read_crop(path: os.PathLike[str] | str, size: int) -> Gray:
    """A stored crop: a regular file (never a link), a PNG of ``size`` x ``size`` 8-bit
    grey pixels; `CropUnusable` otherwise. The size is read from the header first."""
    data = _read_small_file(path)
    try:
        head = header_size(data)
    except HeaderDamaged as e:
        raise CropUnusable(f"is damaged ({e})") from None
    if head is None or head.kind != "PNG":
        raise CropUnusable("is not a PNG image")
    if (head.width, head.height) != (size, size):
        raise CropUnusable(
            f"is {head.width}x{head.height} px, not the model's {size}x{size} (enroll again)"
        )
    try:
        face = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        face = None
    if face is None:
        raise CropUnusable("cannot be decoded (damaged or truncated)")
    if face.dtype != np.uint8 or face.ndim != 2:
        raise CropUnusable(f"is not an 8-bit grey image ({face.dtype}, {face.shape})")
    if face.shape != (size, size):  # the header said otherwise: a damaged file
        raise CropUnusable(f"decodes to {face.shape[1]}x{face.shape[0]} px, not {size}x{size}")
    return np.ascontiguousarray(face)


def _read_small_file(path: os.PathLike[str] | str) -> bytes:
    try:
        fd = os.open(path, OPEN_FLAGS | os.O_NOFOLLOW)
    except OSError as e:
        raise CropUnusable(f"cannot be opened ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        kind = not_regular(st.st_mode)
        if kind is not None:
            raise CropUnusable(f"is {kind}")
        data = _read_up_to(fd, MAX_CROP_BYTES + 1)
    except OSError as e:
        raise CropUnusable(f"cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CROP_BYTES:
        raise CropUnusable(f"is over {MAX_CROP_BYTES // 1024} KB: not a face crop")
    if not data:
        raise CropUnusable("is empty")
    return data


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < limit and (chunk := os.read(fd, limit - total)):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
