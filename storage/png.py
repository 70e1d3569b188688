"""A fast, deterministic PNG writer for 8-bit RGB frames with one filter for the whole image, and a fast
reader for the common 8-bit RGB case (:func:`decode_png_rgb`; anything else is left to PIL).

PIL chooses a PNG filter per row by trying four of them and keeping the one with the smallest sum of
absolute values; on translated 128×256 frames that choice costs more CPU than the compression itself
(PIL at zlib level 0, i.e. filtering only, takes 1.5 ms of its 2 ms per frame). Writing every row
with the Paeth filter gives the same file size on translated images (bench/encode.py) for less CPU.
The filter runs in C (``_pngfilter.c``, built by ``pip install``; numpy computes the same bytes where
it was not built). ISA-L deflates by default (``isal``: 0.29 ms for a translated 128×256 frame at level
1, 6-12 % larger than zlib-ng's RLE at 0.67 ms, bench/encode.py); zlib-ng (``zlib-ng``: levels 0-9 and
zlib's strategies) writes the smaller files. The bytes are a standard PNG (signature, IHDR, one IDAT,
IEND; no timestamps): same pixels, settings and library version, same bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Literal

import numpy as np
from isal import isal_zlib
from zlib_ng import zlib_ng

try:  # the Paeth filter in C, built by `pip install`; numpy below computes the same bytes without it
    from sim2real.storage import _pngfilter
except ImportError:  # pragma: no cover - a source tree used without installing (e.g. copied to a host)
    _pngfilter = None

RowFilter = Literal["none", "sub", "up", "average", "paeth"]
#: The deflate libraries of :func:`encode_png_rgb`: ISA-L (fastest) and zlib-ng (smaller, strategies).
Deflate = Literal["isal", "zlib-ng"]
#: Each library's highest compression level.
DEFLATE_MAX_LEVEL: dict[str, int] = {"isal": isal_zlib.ISAL_BEST_COMPRESSION, "zlib-ng": 9}
# PNG filter type bytes (PNG spec, section 9.2).
PNG_FILTER_TYPES: dict[str, int] = {"none": 0, "sub": 1, "up": 2, "average": 3, "paeth": 4}
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def filter_image(rgb: np.ndarray, kind: RowFilter) -> np.ndarray:
    """H×W×3 uint8 → the filtered scanlines, H×(1 + 3W) uint8, each row led by its filter type byte.

    Neighbours outside the image count as 0, as the PNG spec has it; arithmetic wraps modulo 256.
    Paeth runs in C where the extension was built (one pass instead of numpy's ~15 over int16
    temporaries: 0.92 → 0.05 ms for a 128×256 frame), the same bytes either way.
    """
    if kind == "paeth" and _pngfilter is not None:
        height, width, channels = rgb.shape
        rows = _pngfilter.paeth(np.ascontiguousarray(rgb, np.uint8), height, width, channels)
        return np.frombuffer(rows, np.uint8).reshape(height, 1 + width * channels)
    return filter_image_numpy(rgb, kind)


def filter_image_numpy(rgb: np.ndarray, kind: RowFilter) -> np.ndarray:
    """:func:`filter_image` in numpy alone (every filter; the reference for the C Paeth filter)."""
    height, width, channels = rgb.shape
    x = rgb
    if kind == "none":
        filtered = x
    elif kind == "sub":
        filtered = x.copy()
        filtered[:, 1:] -= x[:, :-1]
    elif kind == "up":
        filtered = x.copy()
        filtered[1:] -= x[:-1]
    else:
        padded = np.zeros((height + 1, width + 1, channels), np.int16)
        padded[1:, 1:] = x
        left, up, up_left = padded[1:, :-1], padded[:-1, 1:], padded[:-1, :-1]
        if kind == "average":
            predicted = (left + up) >> 1
        else:  # paeth: the neighbour closest to left + up - up_left, ties to left, then up
            to_left = up - up_left  # |p - left|, signed
            to_up = left - up_left  # |p - up|, signed
            dist_up_left = np.abs(to_left + to_up)
            dist_left, dist_up = np.abs(to_left), np.abs(to_up)
            predicted = np.where(
                (dist_left <= dist_up) & (dist_left <= dist_up_left),
                left,
                np.where(dist_up <= dist_up_left, up, up_left),
            )
        filtered = x - predicted.astype(np.uint8)
    rows = np.empty((height, 1 + width * channels), np.uint8)
    rows[:, 0] = PNG_FILTER_TYPES[kind]
    rows[:, 1:] = filtered.reshape(height, -1)
    return rows


def encode_png_rgb(
    rgb: np.ndarray,
    kind: RowFilter = "paeth",
    level: int = 1,
    strategy: int = 0,
    deflate: Deflate = "isal",
) -> bytes:
    """H×W×3 uint8 → PNG bytes: every row filtered with ``kind``, deflated by ``deflate`` at ``level``.

    ``isal`` (ISA-L) takes levels 0-3 and no strategy; ``zlib-ng`` takes levels 0-9 and ``strategy``
    (zlib's constants: 0 default, 1 filtered, 2 Huffman only, 3 RLE, 4 fixed). Raises ``ValueError``
    for another image, filter, library, level or a strategy ISA-L lacks.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(
            f"encode_png_rgb: expected a non-empty H×W×3 uint8 image, got {rgb.dtype} {rgb.shape}"
        )
    if kind not in PNG_FILTER_TYPES:
        raise ValueError(f"png filter {kind!r}: choose one of {sorted(PNG_FILTER_TYPES)}")
    if deflate not in DEFLATE_MAX_LEVEL:
        raise ValueError(f"png deflate {deflate!r}: choose one of {sorted(DEFLATE_MAX_LEVEL)}")
    if not 0 <= level <= DEFLATE_MAX_LEVEL[deflate]:
        raise ValueError(f"png deflate {deflate}: level {level} is not 0-{DEFLATE_MAX_LEVEL[deflate]}")
    if deflate == "isal" and strategy:
        raise ValueError(f"png deflate isal: no zlib strategy (got {strategy}); use zlib-ng")
    height, width, _ = rgb.shape
    rows = filter_image(np.ascontiguousarray(rgb), kind).data
    if deflate == "isal":  # the zlib format (PNG's), releasing the GIL like zlib-ng
        data = isal_zlib.compress(rows, level)
    else:  # zlib-ng: zlib's format and strategies, 1.6x faster than zlib with RLE on translated frames
        compressor = zlib_ng.compressobj(level, zlib_ng.DEFLATED, 15, 8, strategy)
        data = compressor.compress(rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, truecolour, no interlace
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


class PngDamage(ValueError):
    """A PNG's chunk structure is broken; the message names the chunk, its byte offset and what is wrong."""


def png_chunks(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """``(type, data)`` of each chunk of the PNG ``data`` (signature included) up to and including IEND.

    Raises :class:`PngDamage` when a chunk is cut short or its CRC is wrong, when IHDR is not the first
    chunk (or comes twice), when IDAT chunks are not consecutive (PNG spec, section 5.6) or when there is
    no IEND. Pillow ignores bad CRCs and a missing end and refuses a split IDAT only sometimes; libpng
    (torchvision, OpenCV) refuses them all, so such a file gives different readers different answers.
    """
    view, pos, previous, idat_ended = memoryview(data), len(_SIGNATURE), None, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        name, end = kind.decode("latin-1"), pos + 12 + length
        if end > len(data):
            raise PngDamage(f"chunk {name} at byte {pos} is cut short (file truncated)")
        body = view[pos + 8 : end - 4]
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, end - 4)[0]:
            raise PngDamage(f"chunk {name} at byte {pos} has a bad CRC (file damaged)")
        if (kind == b"IHDR") != (previous is None):
            raise PngDamage(f"chunk {name} at byte {pos}: IHDR must be the first chunk, once")
        idat_ended = idat_ended or (previous == b"IDAT" and kind != b"IDAT")
        if kind == b"IDAT" and idat_ended:
            raise PngDamage(
                f"chunk IDAT at byte {pos} comes after other chunks that follow IDAT (not consecutive)"
            )
        yield kind, body
        if kind == b"IEND":
            return
        previous, pos = kind, end
    raise PngDamage("no IEND chunk (file truncated)")


def png_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the IHDR chunk of the PNG ``data`` (the first chunk, by the spec), or None
    when ``data`` does not start like a PNG. Reads the header only: a damaged file gives its size."""
    if data[:8] != _SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return height, width


def png_damage(data: bytes) -> str | None:
    """What is wrong with the chunk structure of the PNG ``data`` (:func:`png_chunks`), or None."""
    try:
        for _ in png_chunks(data):
            pass
    except PngDamage as exc:
        return str(exc)
    return None


def decode_png_rgb(data: bytes, max_pixels: int) -> np.ndarray | None:
    """PNG bytes → H×W×3 uint8, for the common case only: 8-bit truecolour, not interlaced, whole chunks
    in the spec's order (:func:`png_chunks`), one complete zlib stream of exactly the image's
    scanlines and nothing after it. None for anything else (another colour type or depth, a palette or
    transparency chunk, chunks out of the spec's order, a damaged file, more than ``max_pixels`` pixels):
    the caller then decodes with PIL, which decodes these pixels identically (PNG is lossless) and
    reports damage, or refuses the order, in its own words.

    zlib-ng inflates (0.05 ms for a 128×256 toy-sim frame, zlib 0.14) and the C extension unfilters (0.10
    ms): 0.16 ms against PIL's 0.39 ms (open, load, convert, array). None when the extension was not
    built.
    """
    if _pngfilter is None or data[:8] != _SIGNATURE:
        return None
    idat: list[memoryview] = []
    header = None
    try:
        for kind, body in png_chunks(data):
            if kind == b"IHDR":
                if len(body) != 13:
                    return None
                header = struct.unpack(">IIBBBBB", body)
            elif kind == b"IDAT":
                idat.append(body)
            elif kind != b"IEND" and (kind[0] < 97 or kind == b"tRNS"):  # critical (upper case), alpha
                return None
    except PngDamage:
        return None
    if header is None or header[2:] != (8, 2, 0, 0, 0) or not idat:
        return None
    width, height = header[0], header[1]
    if not 0 < width * height <= max_pixels:
        return None
    expected = height * (1 + 3 * width)
    inflater = zlib_ng.decompressobj()
    try:
        scanlines = inflater.decompress(b"".join(idat), expected)
    except zlib_ng.error:  # type: ignore[misc]  # (zlib_ng ships no type for it)
        return None
    if len(scanlines) != expected or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        return None
    try:
        pixels = _pngfilter.unfilter(scanlines, height, width, 3)
    except ValueError:  # an unknown filter type byte
        return None
    return np.frombuffer(pixels, np.uint8).reshape(height, width, 3)
