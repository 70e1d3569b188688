"""Our PNG writer: every filter decodes to the same pixels with PIL and stock webdataset, exact filters."""

from __future__ import annotations

import io
import shutil
import struct
import sysconfig
import tarfile
import zlib

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from sim2real.storage import png
from sim2real.storage.png import PNG_FILTER_TYPES, encode_png_rgb, filter_image, filter_image_numpy


def reference_filter(rgb: np.ndarray, kind: str) -> np.ndarray:
    """The PNG spec's filters byte by byte (bpp 3), as the spec writes them."""
    height, width, _ = rgb.shape
    raw = rgb.reshape(height, -1).astype(np.int64)
    out = np.zeros((height, 1 + raw.shape[1]), np.uint8)
    for y in range(height):
        out[y, 0] = PNG_FILTER_TYPES[kind]
        for i in range(raw.shape[1]):
            a = raw[y, i - 3] if i >= 3 else 0
            b = raw[y - 1, i] if y >= 1 else 0
            c = raw[y - 1, i - 3] if y >= 1 and i >= 3 else 0
            if kind == "none":
                predicted = 0
            elif kind == "sub":
                predicted = a
            elif kind == "up":
                predicted = b
            elif kind == "average":
                predicted = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predicted = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out[y, 1 + i] = (raw[y, i] - predicted) % 256
    return out


@pytest.mark.parametrize("kind", sorted(PNG_FILTER_TYPES))
def test_filters_match_the_spec(kind: str):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    rgb[2:4] = rng.integers(0, 3, (2, 9, 3), dtype=np.uint8)  # near-ties for paeth
    rgb[5] = rgb[4]
    np.testing.assert_array_equal(filter_image(rgb, kind), reference_filter(rgb, kind))
    np.testing.assert_array_equal(filter_image_numpy(rgb, kind), reference_filter(rgb, kind))


def test_the_installed_package_has_the_c_paeth_filter_and_it_equals_numpy():
    # `pip install` builds it (pyproject's ext-modules, optional); without it encoding runs ~2x slower.
    if png._pngfilter is None and shutil.which(sysconfig.get_config_var("CC").split()[0]) is None:
        pytest.skip("no C compiler to build sim2real.storage._pngfilter: the numpy filter is used")
    assert png._pngfilter is not None, "sim2real.storage._pngfilter was not built (see pip's output)"
    rng = np.random.default_rng(9)
    for shape in [(1, 1, 3), (1, 17, 3), (13, 1, 3), (31, 47, 3), (128, 256, 3), (5, 6, 4), (4, 9, 1)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        image[: shape[0] // 2] //= 64  # small values: many Paeth ties
        np.testing.assert_array_equal(filter_image(image, "paeth"), filter_image_numpy(image, "paeth"))
    # A strided view (a crop) is made contiguous first.
    crop = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)[3:15, 4:25]
    np.testing.assert_array_equal(filter_image(crop, "paeth"), filter_image_numpy(crop, "paeth"))
    with pytest.raises(ValueError, match="12 bytes is not a 2 x 3 x 3 image"):
        png._pngfilter.paeth(bytes(12), 2, 3, 3)


@pytest.mark.parametrize("kind", sorted(PNG_FILTER_TYPES))
@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (13, 1), (31, 47)])
def test_every_filter_library_level_and_strategy_round_trips_losslessly(kind: str, shape: tuple[int, int]):
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    settings = [("isal", level, 0) for level in range(4)]
    settings += [("zlib-ng", 6, strategy) for strategy in range(5)] + [("zlib-ng", 1, 0), ("zlib-ng", 9, 0)]
    for deflate, level, strategy in settings:
        data = encode_png_rgb(rgb, kind, level, strategy, deflate)  # type: ignore[arg-type]
        assert data == encode_png_rgb(rgb.copy(), kind, level, strategy, deflate)  # type: ignore[arg-type]
        with Image.open(io.BytesIO(data)) as image:
            assert image.mode == "RGB" and image.size == (shape[1], shape[0])
            np.testing.assert_array_equal(np.asarray(image), rgb)
        decoded = png.decode_png_rgb(data, max_pixels=10**6)  # our reader too (where its C part is built)
        assert decoded is None if png._pngfilter is None else np.array_equal(decoded, rgb)


def test_the_deflate_library_reaches_the_file_and_bad_settings_are_refused():
    rgb = np.random.default_rng(3).integers(0, 32, (40, 64, 3), dtype=np.uint8)
    rgb[:20] = rgb[0, 0]  # a flat band: RLE and ISA-L's matcher write it differently
    by_library = {d: encode_png_rgb(rgb, "paeth", 1, 0, d) for d in ("isal", "zlib-ng")}  # type: ignore[arg-type]
    assert by_library["isal"] != by_library["zlib-ng"]
    assert encode_png_rgb(rgb) == by_library["isal"]  # the default: ISA-L level 1
    assert len(encode_png_rgb(rgb, level=0)) > len(encode_png_rgb(rgb, level=1))  # the level reaches ISA-L
    with pytest.raises(ValueError, match="png deflate isal: level 4 is not 0-3"):
        encode_png_rgb(rgb, level=4)
    with pytest.raises(ValueError, match="png deflate zlib-ng: level 10 is not 0-9"):
        encode_png_rgb(rgb, level=10, deflate="zlib-ng")
    with pytest.raises(ValueError, match="isal: no zlib strategy"):
        encode_png_rgb(rgb, strategy=3)
    with pytest.raises(ValueError, match="png deflate 'lz4'"):
        encode_png_rgb(rgb, deflate="lz4")  # type: ignore[arg-type]


def test_png_size_reads_the_header_as_pil_does():
    rgb = np.zeros((7, 11, 3), np.uint8)
    for data in (
        encode_png_rgb(rgb),
        pil_png(rgb),
        pil_png(rgb[..., 0]),
        pil_png(np.dstack([rgb, rgb[..., :1]])),
    ):
        with Image.open(io.BytesIO(data)) as image:
            assert png.png_size(data) == (image.height, image.width) == (7, 11)
        assert png.png_size(data[:24]) == (7, 11)  # the header alone: a cut file still has its size
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    for other in (buffer.getvalue(), b"", b"\x89PNG\r\n\x1a\n", encode_png_rgb(rgb)[:23]):
        assert png.png_size(other) is None


def test_stock_webdataset_decodes_it(tmp_path):
    rgb = np.random.default_rng(5).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    data = encode_png_rgb(rgb[:, ::-1])  # a non-contiguous view is written as its pixels
    path = tmp_path / "one.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("frame0.rgb.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    sample = next(iter(wds.WebDataset(str(path), shardshuffle=False).decode("rgb8")))
    np.testing.assert_array_equal(sample["rgb.png"], rgb[:, ::-1])


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        encode_png_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        encode_png_rgb(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        encode_png_rgb(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="png filter 'median'"):
        encode_png_rgb(np.zeros((4, 4, 3), np.uint8), "median")  # type: ignore[arg-type]


def pil_png(array: np.ndarray | Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def chunked_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG of exactly these ``(type, data)`` chunks, each with its right CRC."""
    return png._SIGNATURE + b"".join(png._chunk(kind, data) for kind, data in chunks)


def ihdr(width: int, height: int, depth: int = 8, colour: int = 2, interlace: int = 0) -> tuple[bytes, bytes]:
    return b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)


def needs_c_filter() -> None:
    if png._pngfilter is None:
        pytest.skip("sim2real.storage._pngfilter not built: decode_png_rgb always defers to PIL")


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (13, 1), (31, 47), (128, 256)])
def test_fast_decoder_gives_pils_pixels_for_every_filter(shape: tuple[int, int]):
    needs_c_filter()
    rng = np.random.default_rng(sum(shape))
    noise = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    smooth = np.cumsum(rng.integers(0, 3, (*shape, 3)), axis=1).astype(np.uint8)  # PIL picks varied filters
    for rgb in (noise, smooth):
        files = [encode_png_rgb(rgb, kind) for kind in PNG_FILTER_TYPES]  # type: ignore[arg-type]
        files += [pil_png(rgb), pil_png(rgb, compress_level=0), pil_png(rgb, compress_level=9)]
        files.append(pil_png(rgb, gamma=0.45))  # an ancillary chunk (gAMA) is skipped, as PIL's pixels do
        for data in files:
            decoded = png.decode_png_rgb(data, max_pixels=10**8)
            assert decoded is not None and decoded.shape == (*shape, 3)
            with Image.open(io.BytesIO(data)) as image:
                np.testing.assert_array_equal(decoded, np.asarray(image.convert("RGB")))


def test_fast_decoder_defers_to_pil_for_everything_else():
    needs_c_filter()
    rgb = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    good = encode_png_rgb(rgb)
    assert png.decode_png_rgb(good, max_pixels=30) is not None
    idat = zlib.compress(bytes(filter_image(rgb, "paeth")))
    bad_filter = filter_image(rgb, "paeth").copy()
    bad_filter[3, 0] = 5  # no such filter type
    others = {
        "rgba": pil_png(np.dstack([rgb, rgb[..., :1]])),
        "grey": pil_png(rgb[..., 0]),
        "palette": pil_png(Image.fromarray(rgb).convert("P")),
        "16-bit": chunked_png([ihdr(5, 6, depth=16), (b"IDAT", idat), (b"IEND", b"")]),
        "interlaced": chunked_png([ihdr(5, 6, interlace=1), (b"IDAT", idat), (b"IEND", b"")]),
        "transparency": chunked_png([ihdr(5, 6), (b"tRNS", bytes(6)), (b"IDAT", idat), (b"IEND", b"")]),
        "unknown critical chunk": chunked_png([ihdr(5, 6), (b"ZZZZ", b""), (b"IDAT", idat), (b"IEND", b"")]),
        "no IEND": chunked_png([ihdr(5, 6), (b"IDAT", idat)]),
        "no IDAT": chunked_png([ihdr(5, 6), (b"IEND", b"")]),
        "bad CRC": good[:45] + bytes([good[45] ^ 1]) + good[46:],  # a byte of the IDAT data
        "truncated": good[: len(good) // 2],
        "short stream": chunked_png([ihdr(5, 6), (b"IDAT", idat[:-9]), (b"IEND", b"")]),
        "too many rows": chunked_png([ihdr(5, 5), (b"IDAT", idat), (b"IEND", b"")]),
        "bad filter type": chunked_png(
            [ihdr(5, 6), (b"IDAT", zlib.compress(bytes(bad_filter))), (b"IEND", b"")]
        ),
        "not a PNG": b"GIF89a" + bytes(40),
        # chunk order the spec forbids and PIL refuses (found by a break test: the fast path took both)
        "IDAT split by tEXt": chunked_png(
            [ihdr(5, 6), (b"IDAT", idat[:9]), (b"tEXt", b"k\0v"), (b"IDAT", idat[9:]), (b"IEND", b"")]
        ),
        "IHDR after IDAT": chunked_png([(b"IDAT", idat), ihdr(5, 6), (b"IEND", b"")]),
        "two IHDR": chunked_png([ihdr(5, 6), ihdr(5, 6), (b"IDAT", idat), (b"IEND", b"")]),
        "data after the zlib stream": chunked_png([ihdr(5, 6), (b"IDAT", idat + b"\0\0"), (b"IEND", b"")]),
    }
    for name, data in others.items():
        assert png.decode_png_rgb(data, max_pixels=10**6) is None, name
    assert png.decode_png_rgb(good, max_pixels=29) is None  # over the pixel limit: PIL's bomb check decides
    split = chunked_png([ihdr(5, 6), (b"IDAT", idat[:9]), (b"IDAT", idat[9:]), (b"IEND", b"")])
    np.testing.assert_array_equal(png.decode_png_rgb(split, max_pixels=30), rgb)  # consecutive IDATs are fine
