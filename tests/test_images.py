"""edged.images: every photo is read one way, its size checked from the header first.

Real files written by OpenCV (or built byte by byte where OpenCV writes no such
variant), decoded by real OpenCV; a header claiming a huge size is refused before any
decoding is attempted.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged import images
from edged.images import (
    DEFAULT_MAX_PIXELS,
    ImageUnreadable,
    find_images,
    header_size,
    megapixels,
    read_image,
)

W, H = 457, 123  # not square, not a power of two: width and height cannot be swapped


def picture(channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(7)
    shape = (H, W) if channels == 1 else (H, W, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def make_huge_png(path: Path) -> Path:
    """A real 12000x12000 PNG (144 megapixels), a few hundred KB on disk."""
    assert cv2.imwrite(str(path), np.zeros((12000, 12000), np.uint8))
    return path


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_huge_png(tmp_path_factory.mktemp("huge") / "huge.png")


# --- header sizes, every format OpenCV writes ----------------------------------------

WRITTEN = [
    # (file name, imwrite params, channels, pixels as float for HDR/PFM, expected kind)
    ("x.jpg", [], 3, False, "JPEG"),
    ("progressive.jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], 3, False, "JPEG"),
    ("x.png", [], 3, False, "PNG"),
    ("x.bmp", [], 3, False, "BMP"),
    ("x.gif", [], 3, False, "GIF"),
    ("lossless.webp", [], 3, False, "WebP"),  # VP8L
    ("lossy.webp", [cv2.IMWRITE_WEBP_QUALITY, 80], 3, False, "WebP"),  # VP8
    ("alpha.webp", [cv2.IMWRITE_WEBP_QUALITY, 80], 4, False, "WebP"),  # VP8X + ALPH
    ("x.tif", [], 3, False, "TIFF"),
    ("x.pgm", [], 1, False, "PNM"),
    ("x.ppm", [], 3, False, "PNM"),
    ("x.pbm", [], 1, False, "PNM"),
    ("x.pam", [], 3, False, "PAM"),
    ("x.pfm", [], 3, True, "PFM"),
    ("x.sr", [], 3, False, "Sun raster"),
    ("x.hdr", [], 3, True, "Radiance HDR"),
    ("x.jp2", [], 3, False, "JPEG 2000"),
]


@pytest.mark.parametrize(("name", "params", "channels", "floats", "kind"), WRITTEN)
def test_header_size_of_every_format_opencv_writes_is_the_decoded_size(
    tmp_path: Path, name: str, params: list[int], channels: int, floats: bool, kind: str
):
    img = picture(channels)
    path = tmp_path / name
    assert cv2.imwrite(str(path), img.astype(np.float32) / 255 if floats else img, params)
    assert header_size(path.read_bytes()) == images.HeaderSize(kind, W, H)
    decoded = read_image(path)
    assert decoded.shape == (H, W, 3) and decoded.dtype == np.uint8


def _tiff(order: bytes, big: bool, kind: int) -> bytes:
    """An uncompressed 8-bit grey TIFF of W x H, classic or BigTIFF, either byte order,
    its sizes stored as SHORT (3), LONG (4) or LONG8 (16)."""
    o = "<" if order == b"II" else ">"
    codes = {3: "H", 4: "I", 16: "Q"}
    size_code, count_code, entry = ("Q", "Q", 20) if big else ("I", "H", 12)
    head = (
        order + struct.pack(o + "HHHQ", 43, 8, 0, 16)
        if big
        else order + struct.pack(o + "HI", 42, 8)
    )
    tags = [(256, kind, W), (257, kind, H), (258, 3, 8), (259, 3, 1), (262, 3, 1)]
    tags += [(273, 4, 0), (277, 3, 1), (278, 4, H), (279, 4, W * H)]
    data_at = len(head) + struct.calcsize(o + count_code) + entry * len(tags) + (8 if big else 4)
    ifd = struct.pack(o + count_code, len(tags))
    for tag, k, value in tags:
        stored = data_at if tag == 273 else value
        field = struct.pack(o + codes[k], stored).ljust(8 if big else 4, b"\0")
        ifd += struct.pack(o + "HH" + size_code, tag, k, 1) + field
    ifd += struct.pack(o + size_code, 0)
    return head + ifd + bytes(W * H)


@pytest.mark.parametrize("order", [b"II", b"MM"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("big", [False, True], ids=["classic", "BigTIFF"])
@pytest.mark.parametrize("kind", [3, 4], ids=["SHORT", "LONG"])
def test_tiff_header_size_in_both_byte_orders_classic_and_bigtiff(
    tmp_path: Path, order: bytes, big: bool, kind: int
):
    path = tmp_path / "x.tif"
    path.write_bytes(_tiff(order, big, kind))
    assert header_size(path.read_bytes()) == images.HeaderSize("TIFF", W, H)
    assert read_image(path).shape == (H, W, 3)


def _exif_orientation_6(jpeg: bytes) -> bytes:
    """``jpeg`` with an APP1 EXIF segment (orientation 6: rotate 90°) before its frame."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">I", 0)
    app1 = b"Exif\0\0" + b"MM\0*" + struct.pack(">I", 8) + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_jpeg_size_is_found_past_other_segments_and_exif_orientation_applies_as_imread(
    tmp_path: Path,
):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_exif_orientation_6(cv2.imencode(".jpg", picture())[1].tobytes()))
    assert header_size(path.read_bytes()) == images.HeaderSize("JPEG", W, H)
    decoded = read_image(path)
    assert decoded.shape == (W, H, 3)  # turned, as the photo is meant to be seen
    assert np.array_equal(decoded, cv2.imread(str(path), cv2.IMREAD_COLOR))


def test_bare_jpeg2000_and_vp8l_bitstreams_opencv_decodes_have_their_size_read(tmp_path: Path):
    jp2 = cv2.imencode(".jp2", picture())[1].tobytes()
    j2k = jp2[jp2.index(b"\xff\x4f\xff\x51") :]
    vp8l = cv2.imencode(".webp", picture())[1].tobytes()[20:]
    for name, data, kind in (("x.j2k", j2k, "JPEG 2000"), ("x.vp8l", vp8l, "WebP")):
        (tmp_path / name).write_bytes(data)
        assert header_size(data) == images.HeaderSize(kind, W, H)
        assert read_image(tmp_path / name).shape == (H, W, 3)


def test_bmp_stored_top_down_and_with_the_old_core_header(tmp_path: Path):
    bmp = bytearray(cv2.imencode(".bmp", picture())[1].tobytes())
    bmp[22:26] = struct.pack("<i", -H)  # top-down rows
    assert header_size(bytes(bmp)) == images.HeaderSize("BMP", W, H)
    core = b"BM" + bytes(12) + struct.pack("<IHHHH", 12, W, H, 1, 24)
    assert header_size(core) == images.HeaderSize("BMP", W, H)


# --- refused from the header, before decoding ------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def _jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xda"


CLAIMS = {
    "PNG": _png_header(100_000, 100_000),
    "JPEG": _jpeg_header(60_000, 60_000),
    "GIF": b"GIF89a" + struct.pack("<HH", 65_535, 65_535) + bytes(7),
    "BMP": b"BM" + bytes(12) + struct.pack("<Iii", 40, 30_000, 30_000) + bytes(28),
    "WebP": b"RIFF\0\0\0\0WEBPVP8X" + struct.pack("<I", 10) + bytes(4) + b"\xff" * 6,
    "TIFF": _tiff(b"MM", False, 4)[:8]
    + struct.pack(">H", 2)
    + struct.pack(">HHII", 256, 4, 1, 40_000)
    + struct.pack(">HHII", 257, 4, 1, 40_000),
    "PNM": b"P5\n# a comment\n40000 40000\n255\n",
}


@pytest.mark.parametrize("kind", CLAIMS)
def test_a_header_claiming_a_huge_size_is_refused_without_decoding(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "claims-to-be-huge"
    path.write_bytes(CLAIMS[kind])

    def no_decoding(*_: object) -> None:
        raise AssertionError("decoded a picture its header already refuses")

    monkeypatch.setattr(images.cv2, "imdecode", no_decoding)
    size = header_size(path.read_bytes())
    assert size is not None and size.kind == kind and size.pixels > DEFAULT_MAX_PIXELS
    with pytest.raises(ImageUnreadable) as e:
        read_image(path)
    assert str(e.value) == (
        f"{path} cannot be read as an image: {size.width}x{size.height} is "
        f"{megapixels(size.pixels)} megapixels, above the limit of 50 megapixels; "
        "--max-pixels raises it"
    )


def test_a_real_12000x12000_png_is_refused_by_default_and_read_when_the_limit_allows(
    huge_png: Path,
):
    assert huge_png.stat().st_size < 1_000_000
    with pytest.raises(ImageUnreadable, match=r"12000x12000 is 144 megapixels, above the limit"):
        read_image(huge_png)
    small = huge_png.parent / "small.png"
    cv2.imwrite(str(small), picture())
    with pytest.raises(ImageUnreadable, match=r"457x123 is 0.0562 megapixels, above the limit of"):
        read_image(small, max_pixels=W * H - 1)
    assert read_image(small, max_pixels=W * H).shape == (H, W, 3)


def test_the_limit_also_holds_for_a_format_whose_header_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), picture())
    monkeypatch.setattr(images, "header_size", lambda _data: None)  # as for an unknown format
    with pytest.raises(ImageUnreadable, match=r"457x123 is 0.0562 megapixels"):
        read_image(path, max_pixels=1000)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x89PNG\r\n\x1a\n", "damaged or truncated PNG header"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\0", "damaged or truncated JPEG header"),
        (b"\xff\xd8\xff\xda\x00\x08", "damaged or truncated JPEG header"),  # no frame header
        (b"GIF89a" + bytes(7), "GIF header gives a size of 0x0"),
        (b"II*\x00\xff\xff\x00\x00", "damaged or truncated TIFF header"),  # IFD past the end
    ],
)
def test_a_damaged_or_truncated_header_is_unreadable_with_the_format_named(
    tmp_path: Path, data: bytes, why: str
):
    path = tmp_path / "broken"
    path.write_bytes(data)
    with pytest.raises(ImageUnreadable) as e:
        read_image(path)
    assert str(e.value) == f"{path} cannot be read as an image: {why}"


def test_a_file_that_is_no_image_is_unreadable_without_a_reason_and_an_empty_one_says_so(
    tmp_path: Path,
):
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture")
    with pytest.raises(ImageUnreadable) as e:
        read_image(path)
    assert str(e.value) == f"{path} cannot be read as an image" and e.value.reason is None
    path.write_bytes(b"")
    with pytest.raises(ImageUnreadable, match=r"cannot be read as an image: the file is empty$"):
        read_image(path)


# --- only regular files ------------------------------------------------------------------


def test_a_fifo_a_device_and_a_folder_are_refused_without_reading(tmp_path: Path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)  # nobody ever writes to it: opening it for reading would block
    cases = {
        fifo: "not a regular file (a named pipe)",
        Path("/dev/zero"): "not a regular file (a character device)",
        tmp_path: "not a regular file (a folder)",
        tmp_path / "nope.jpg": "no such file or directory",
    }
    for path, why in cases.items():
        with pytest.raises(ImageUnreadable) as e:
            read_image(path)
        assert str(e.value) == f"{path} cannot be read as an image: {why}"


def test_a_file_bigger_than_any_picture_within_the_limit_is_not_read_into_memory(
    tmp_path: Path,
):
    path = tmp_path / "video.jpg"
    with path.open("wb") as f:
        f.truncate(40 << 20)  # sparse: 40 MB that cost no disk
    with pytest.raises(ImageUnreadable, match=r"the file is 42 MB, more than any picture of at"):
        read_image(path, max_pixels=1_000_000)


# --- finding photos ----------------------------------------------------------------------


def test_finding_photos_follows_folder_links_but_never_a_loop(tmp_path: Path):
    root = tmp_path / "photos"
    (root / "a" / "deep").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for p in (root / "a" / "1.jpg", root / "a" / "deep" / "2.png", elsewhere / "3.jpg"):
        p.write_bytes(b"x")
    (root / "a" / ".hidden.jpg").write_bytes(b"x")
    (root / "a" / "notes.txt").write_text("x")
    (root / "linked").symlink_to(elsewhere)
    (root / "a" / "deep" / "up").symlink_to(root)  # a loop through an ancestor
    (root / "a" / "again").symlink_to(root / "a")  # a loop to a folder already searched
    (elsewhere / "back").symlink_to(root)
    found = find_images(root)
    assert found.files == [
        root / "a" / "1.jpg",
        root / "a" / "deep" / "2.png",
        root / "linked" / "3.jpg",
    ]
    assert sorted(found.loops) == sorted(
        [root / "a" / "again", root / "a" / "deep" / "up", root / "linked" / "back"]
    )
    assert len(found.folders) == 4  # photos, a, a/deep, elsewhere


def test_megapixels_read_as_people_write_them():
    assert [megapixels(n) for n in (144_000_000, 50_000_000, 12_500_000, 30_000)] == [
        "144",
        "50",
        "12.5",
        "0.03",
    ]
    assert megapixels(10_000_000_000) == "10,000"
