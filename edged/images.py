"""Finding and reading photos: the one way edged does it (`edged detect`, `edged-train`, --eval).

`read_image` opens only regular files (a FIFO, a device or ``/dev/zero`` is refused
after ``fstat``, never read), reads the file's size from its header in pure Python and
refuses an image of more than ``max_pixels`` before decoding it (a 500 KB PNG can
decode to 400 MB), and only then decodes the bytes it checked with ``cv2.imdecode``. A
decoder failure, including running out of memory, is `ImageUnreadable` for that one
image, never an abort.

Header sizes are read for every format this OpenCV decodes, chosen by signature as
OpenCV chooses its decoder: BMP, GIF, Radiance HDR, JPEG, WebP (RIFF and raw VP8/VP8L),
Sun raster, PNM/PGM/PPM/PBM, PAM, PFM, TIFF and BigTIFF (either byte order), PNG, and
JPEG 2000 (JP2 and raw codestreams). A file of any other kind is still handed to OpenCV
(which decodes nothing else in this build) and its size is checked after decoding.
OpenCV's own ceiling (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30) is read when the library
loads, before a command line is parsed, so it cannot follow ``--max-pixels``.

`find_images` lists the photos below a folder: symlinked sub-folders are followed, but
never into a folder already searched or one that holds the start (a link loop).
"""

from __future__ import annotations

import argparse
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edged.arguments import number
from edged.files import OPEN_FLAGS, not_regular
from edged.vision.detector import Image, pixels

# 50 megapixels: more than a phone's default photo (12-50 MP) and most cameras' (24-45
# MP). It is 150 MB decoded (BGR); `edged detect` peaks at ~415 MB RSS on one (190 MB on
# a 12 MP photo, 135 MB on a small one), which a 1 GB Raspberry Pi holds. A 12000x12000
# PNG (144 MP, ~0.5 MB on disk) took ~925 MB before it was refused.
DEFAULT_MAX_PIXELS = 50_000_000
# OpenCV refuses more than this itself (OPENCV_IO_MAX_IMAGE_PIXELS' default).
OPENCV_MAX_PIXELS = 1 << 30
# No picture within the pixel limit needs more bytes than this per pixel (16-bit RGBA,
# uncompressed), plus room for metadata: a bigger file is not read into memory.
_MAX_BYTES_PER_PIXEL = 8
_METADATA_ROOM = 16 << 20


def add_max_pixels_option(parser: argparse.ArgumentParser) -> None:
    """``--max-pixels``, worded once for `edged detect` and `edged-train`."""
    parser.add_argument(
        "--max-pixels",
        type=number(int, low=1, high=OPENCV_MAX_PIXELS),
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse images of more than N pixels (width x height) as unreadable, from "
        "their header, before decoding them (default: %(default)s, 50 megapixels; at most "
        f"{OPENCV_MAX_PIXELS}, OpenCV's own limit)",
    )


IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)


def is_image_name(path: Path) -> bool:
    """A file name folders are searched for (hidden files never count)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


class ImageUnreadable(Exception):
    """A file that is not read as an image; ``reason`` says why when it is known."""

    def __init__(self, path: Path, reason: str | None = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path} cannot be read as an image" + (f": {reason}" if reason else ""))


class HeaderDamaged(ValueError):
    """A file with an image signature whose header cannot be read (damaged or truncated)."""


@dataclass(frozen=True, slots=True)
class HeaderSize:
    kind: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def megapixels(n: int) -> str:
    """``144``, ``50``, ``12.5``, ``0.03``, ``10,000``: megapixels as people write them."""
    mp = n / 1e6
    return f"{mp:,.0f}" if mp >= 100 else f"{mp:.3g}"


def too_many_pixels(width: int, height: int, max_pixels: int) -> str:
    return (
        f"{width}x{height} is {megapixels(width * height)} megapixels, above the limit of "
        f"{megapixels(max_pixels)} megapixels; --max-pixels raises it"
    )


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """The photo at ``path`` as 8-bit BGR (EXIF orientation applied, as ``cv2.imread``).

    Raises `ImageUnreadable` (with the reason) for anything that is not a regular file,
    a file with a damaged header, an image of more than ``max_pixels`` (from its header,
    before decoding), or one OpenCV cannot decode, out of memory included.
    """
    data = _read_regular_file(path, max_pixels)
    try:
        size = header_size(data)
    except HeaderDamaged as e:
        raise ImageUnreadable(path, str(e)) from None
    if size is not None and size.pixels > max_pixels:
        raise ImageUnreadable(path, too_many_pixels(size.width, size.height, max_pixels))
    image = _decode(path, data, size)
    height, width = image.shape[:2]
    if width * height > max_pixels:  # a format whose header was not read here
        raise ImageUnreadable(path, too_many_pixels(width, height, max_pixels))
    return image


def _read_regular_file(path: Path, max_pixels: int) -> bytes:
    """The file's bytes; only a regular file, opened without blocking and checked first."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as e:
        raise ImageUnreadable(path, _strerror(e)) from None
    try:
        st = os.fstat(fd)
        kind = not_regular(st.st_mode)
        if kind is not None:
            raise ImageUnreadable(path, f"not a regular file ({kind})")
        ceiling = max_pixels * _MAX_BYTES_PER_PIXEL + _METADATA_ROOM
        if st.st_size > ceiling:
            raise ImageUnreadable(path, _too_big(st.st_size, max_pixels))
        return _read_all(fd, path, st.st_size, ceiling, max_pixels)
    except OSError as e:
        raise ImageUnreadable(path, _strerror(e)) from None
    except MemoryError:
        raise ImageUnreadable(path, "out of memory reading the file") from None
    finally:
        os.close(fd)


def _read_all(fd: int, path: Path, size: int, ceiling: int, max_pixels: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, max(size + 1 - total, 1 << 16))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > ceiling:  # it grew while being read
            raise ImageUnreadable(path, _too_big(total, max_pixels))


def _too_big(size: int, max_pixels: int) -> str:
    return (
        f"the file is {size / 1e6:.0f} MB, more than any picture of at most "
        f"{megapixels(max_pixels)} megapixels takes; --max-pixels raises it"
    )


def _strerror(e: OSError) -> str:
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def _decode(path: Path, data: bytes, size: HeaderSize | None) -> Image:
    if not data:
        raise ImageUnreadable(path, "the file is empty")
    what = f" {size.width}x{size.height}" if size else ""
    try:
        mat = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except MemoryError:
        raise ImageUnreadable(path, f"out of memory decoding{what}") from None
    except cv2.error as e:
        text = str(e)
        if any(w in text for w in ("allocate", "memory", "bad_alloc", "can not be created")):
            raise ImageUnreadable(path, f"out of memory decoding{what}") from None
        first = (getattr(e, "err", "") or text.strip().splitlines()[-1]).strip()
        raise ImageUnreadable(path, f"OpenCV could not decode it ({first})") from None
    if mat is None:
        raise ImageUnreadable(path)
    return pixels(mat)


# --- header sizes ------------------------------------------------------------------------


def header_size(data: bytes) -> HeaderSize | None:
    """Width and height from the header, for the formats OpenCV decodes (see the module
    docstring); None when the signature is none of them. Raises `HeaderDamaged` when the
    signature is one of them but the header is damaged or truncated."""
    for kind, matches, parse in _FORMATS:
        if matches(data):
            try:
                width, height = parse(data)
            except (struct.error, LookupError, ValueError):
                raise HeaderDamaged(f"damaged or truncated {kind} header") from None
            if width <= 0 or height <= 0:
                raise HeaderDamaged(f"{kind} header gives a size of {width}x{height}")
            return HeaderSize(kind, width, height)
    return None


def _bmp(d: bytes) -> tuple[int, int]:
    (header,) = struct.unpack_from("<I", d, 14)
    if header == 12:  # BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack_from("<HH", d, 18)
    if header < 36:
        raise ValueError(header)
    width, height = struct.unpack_from("<ii", d, 18)
    return width, abs(height)  # negative: stored top-down


def _gif(d: bytes) -> tuple[int, int]:
    if d[:6] not in (b"GIF87a", b"GIF89a"):
        raise ValueError(d[:6])
    return struct.unpack_from("<HH", d, 6)  # the logical screen: every frame lies inside


_HDR_SIZE = re.compile(rb"([-+])([XY]) +(\d+) +([-+])([XY]) +(\d+)")


def _hdr(d: bytes) -> tuple[int, int]:
    """Radiance: text lines up to an empty one, then e.g. ``-Y 480 +X 640``."""
    lines = d[: 1 << 16].split(b"\n")
    blank = lines.index(b"", 1)
    m = _HDR_SIZE.match(lines[blank + 1])
    if m is None or m.group(2) == m.group(5):
        raise ValueError(lines[blank + 1][:40])
    sizes = {m.group(2): int(m.group(3)), m.group(5): int(m.group(6))}
    return sizes[b"X"], sizes[b"Y"]


# Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic...);
# C4 (DHT), C8 (JPG) and CC (DAC) sit in the same range but are not frames.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7


def _jpeg(d: bytes) -> tuple[int, int]:
    """The first frame header, found as libjpeg finds it: stray bytes before a marker and
    fill bytes skipped, every other segment skipped by its length."""
    i = 2
    while True:
        marker, i = _jpeg_marker(d, i)
        if marker in _SOF:
            height, width = struct.unpack_from(">HH", d, i + 3)
            return width, height
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI, SOS: no frame header first
            raise ValueError(marker)
        if marker not in _NO_LENGTH:
            (length,) = struct.unpack_from(">H", d, i)
            i += length


def _jpeg_marker(d: bytes, i: int) -> tuple[int, int]:
    """The next marker at or after ``i`` and the index just after it."""
    while True:
        i = d.index(b"\xff", i)
        while d[i] == 0xFF:
            i += 1
        if d[i] != 0:  # FF 00 is a stuffed data byte, not a marker
            return d[i], i + 1


def _is_webp(d: bytes) -> bool:
    """OpenCV picks its WebP decoder when libwebp accepts the first 32 bytes: a RIFF
    file, or a bare VP8 or VP8L bitstream (or one led by an ALPH chunk)."""
    if d[:4] == b"RIFF" and d[8:12] == b"WEBP":
        return True
    return d[:4] == b"ALPH" or _is_vp8l(d) or d[3:6] == b"\x9d\x01\x2a"


def _is_vp8l(d: bytes) -> bool:
    return len(d) >= 5 and d[0] == 0x2F and d[4] >> 5 == 0


def _webp(d: bytes) -> tuple[int, int]:
    if d[:4] == b"RIFF":
        tag = d[12:16]
        if tag == b"VP8X":  # the canvas; libwebp refuses frames that do not match it
            if len(d) < 30:
                raise ValueError(len(d))
            return int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1
        if tag not in (b"VP8 ", b"VP8L"):
            raise ValueError(tag)
        d = d[20:]
    elif d[:4] == b"ALPH":
        (length,) = struct.unpack_from("<I", d, 4)
        d = d[8 + length + (length & 1) :]
        if d[:4] in (b"VP8 ", b"VP8L"):
            d = d[8:]
    return _vp8_frame(d)


def _vp8_frame(d: bytes) -> tuple[int, int]:
    if _is_vp8l(d):
        (bits,) = struct.unpack_from("<I", d, 1)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if d[3:6] != b"\x9d\x01\x2a":
        raise ValueError(d[:6])
    width, height = struct.unpack_from("<HH", d, 6)
    return width & 0x3FFF, height & 0x3FFF


def _sun_raster(d: bytes) -> tuple[int, int]:
    return struct.unpack_from(">II", d, 4)


def _is_pnm(d: bytes, codes: bytes) -> bool:
    return len(d) >= 3 and d[0:1] == b"P" and d[1] in codes and d[2:3].isspace()


_DIGITS = re.compile(rb"\d+")


def _pnm_numbers(d: bytes, start: int, count: int) -> list[int]:
    """``count`` decimal numbers from ``start``, whitespace and ``#`` comments skipped."""
    found: list[int] = []
    i = start
    while len(found) < count:
        while d[i : i + 1].isspace():
            i += 1
        if d[i : i + 1] == b"#":
            i = d.index(b"\n", i)
            continue
        m = _DIGITS.match(d, i)
        if m is None:
            raise ValueError(d[i : i + 10])
        found.append(int(m.group()))
        i = m.end()
    return found


def _pnm(d: bytes) -> tuple[int, int]:
    width, height = _pnm_numbers(d, 2, 2)
    return width, height


def _pam(d: bytes) -> tuple[int, int]:
    fields: dict[bytes, int] = {}
    for line in d[3 : 1 << 16].split(b"\n"):
        words = line.split()
        if words[:1] == [b"ENDHDR"]:
            return fields[b"WIDTH"], fields[b"HEIGHT"]
        if len(words) >= 2 and words[0] in (b"WIDTH", b"HEIGHT"):
            fields[words[0]] = int(words[1])
    raise ValueError("no ENDHDR")


def _tiff(d: bytes) -> tuple[int, int]:
    """ImageWidth (256) and ImageLength (257) of the first IFD, classic or BigTIFF."""
    order = "<" if d[:2] == b"II" else ">"
    big = d[2:4] in (b"+\x00", b"\x00+")
    if big:
        (ifd,) = struct.unpack_from(order + "Q", d, 8)
        (count,) = struct.unpack_from(order + "Q", d, ifd)
        first, entry, inline = ifd + 8, 20, 8
    else:
        (ifd,) = struct.unpack_from(order + "I", d, 4)
        (count,) = struct.unpack_from(order + "H", d, ifd)
        first, entry, inline = ifd + 2, 12, 4
    tags: dict[int, int] = {}
    for n in range(min(count, 4096)):
        at = first + n * entry
        tag, kind = struct.unpack_from(order + "HH", d, at)
        if tag in (256, 257):
            tags[tag] = _tiff_value(d, order, kind, at + entry - inline, inline)
    return tags[256], tags[257]


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q"}


def _tiff_value(d: bytes, order: str, kind: int, at: int, inline: int) -> int:
    """The first value of an entry whose value field is at ``at`` (inline or an offset:
    a single value always fits, but be exact for a count > 1)."""
    code = _TIFF_TYPES[kind]
    count_at = at - (8 if inline == 8 else 4)
    (count,) = struct.unpack_from(order + ("Q" if inline == 8 else "I"), d, count_at)
    if count < 1:
        raise ValueError(count)
    if struct.calcsize(code) * count > inline:
        (at,) = struct.unpack_from(order + ("Q" if inline == 8 else "I"), d, at)
    (value,) = struct.unpack_from(order + code, d, at)
    return int(value)


def _png(d: bytes) -> tuple[int, int]:
    if d[12:16] != b"IHDR":  # the first chunk, always
        raise ValueError(d[12:16])
    return struct.unpack_from(">II", d, 16)


_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SIGNATURE = b"\xff\x4f\xff\x51"


def _jp2(d: bytes) -> tuple[int, int]:
    """The size of the codestream (``jp2c`` box), which is what OpenJPEG decodes."""
    i = 0
    while True:
        length, kind = struct.unpack_from(">I4s", d, i)
        header = 8
        if length == 1:
            (length,) = struct.unpack_from(">Q", d, i + 8)
            header = 16
        if kind == b"jp2c":
            return _j2k(d[i + header :])
        if length < header:
            raise ValueError(length)
        i += length


def _j2k(d: bytes) -> tuple[int, int]:
    """The SIZ segment right after SOC: image area minus its offset."""
    if d[:4] != _J2K_SIGNATURE:
        raise ValueError(d[:4])
    xsiz, ysiz, x0, y0 = struct.unpack_from(">IIII", d, 8)
    return xsiz - x0, ysiz - y0


_Matcher = Callable[[bytes], bool]
_Parser = Callable[[bytes], tuple[int, int]]

# In the order OpenCV tries its decoders: the first whose signature matches decodes.
_FORMATS: tuple[tuple[str, _Matcher, _Parser], ...] = (
    ("BMP", lambda d: d[:2] == b"BM", _bmp),
    ("GIF", lambda d: d[:3] == b"GIF", _gif),
    ("Radiance HDR", lambda d: d[:6] == b"#?RGBE" or d[:10] == b"#?RADIANCE", _hdr),
    ("JPEG", lambda d: d[:3] == b"\xff\xd8\xff", _jpeg),
    ("WebP", _is_webp, _webp),
    ("Sun raster", lambda d: d[:4] == b"\x59\xa6\x6a\x95", _sun_raster),
    ("PNM", lambda d: _is_pnm(d, b"123456"), _pnm),
    ("PAM", lambda d: _is_pnm(d, b"7"), _pam),
    ("PFM", lambda d: _is_pnm(d, b"Ff"), _pnm),
    ("TIFF", lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), _tiff),
    ("PNG", lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", _png),
    ("JPEG 2000", lambda d: d[:12] == _JP2_SIGNATURE, _jp2),
    ("JPEG 2000", lambda d: d[:4] == _J2K_SIGNATURE, _j2k),
)


# --- finding photos ----------------------------------------------------------------------


@dataclass
class Found:
    """The photos below a folder (sorted), and the folder links not followed (loops)."""

    files: list[Path] = field(default_factory=list)
    loops: list[Path] = field(default_factory=list)
    folders: set[tuple[int, int]] = field(default_factory=set)


def identity(st: os.stat_result) -> tuple[int, int]:
    """What makes two names one file: (device, inode)."""
    return st.st_dev, st.st_ino


def find_images(folder: Path) -> Found:
    """Every image file below ``folder`` (`is_image_name`), recursively.

    Symlinked sub-folders are followed, but never into a folder already searched or one
    of ``folder``'s own ancestors: such links are listed in ``loops``. ``folders`` holds
    the identity of every folder searched (what an output must stay out of). Folders that
    cannot be listed are skipped, as ``Path.rglob`` skips them.
    """
    found = Found()
    real = folder.resolve()
    above = {identity(os.stat(p)) for p in real.parents}
    found.folders.add(identity(os.stat(real)))
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            _visit(entry, current, found, above, stack)
    found.files.sort()
    return found


def _visit(
    entry: os.DirEntry[str],
    parent: Path,
    found: Found,
    above: set[tuple[int, int]],
    stack: list[Path],
) -> None:
    path = parent / entry.name
    try:
        if entry.is_dir():
            key = identity(entry.stat())
            if key in found.folders or key in above:
                if entry.is_symlink():
                    found.loops.append(path)
                return
            found.folders.add(key)
            stack.append(path)
        elif entry.is_file() and is_image_name(path):
            found.files.append(path)
    except OSError:
        return  # vanished or a dangling link: not a photo
