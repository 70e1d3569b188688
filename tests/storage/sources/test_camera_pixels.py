"""Issue 16 item 2: camera pixels are what every reader (stock ``webdataset`` ``decode("rgb8")``
included) sees, or the frame is quarantined with a reason; bytes are judged by content, not name."""

from __future__ import annotations

import io
import os
import zlib

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.sources.base import BadFrame
from sim2real.storage.sources.image_files import camera_pixels, load_label

H, W = 8, 12
GREY16 = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 600).astype(np.uint16)  # 0 .. 56,400


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rgb16_png(values: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), big-endian samples."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = values.shape
    rows = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


RGB = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
OPAQUE_RGBA = np.concatenate([RGB, np.full((H, W, 1), 255, np.uint8)], axis=2)
SEE_THROUGH = OPAQUE_RGBA.copy()
SEE_THROUGH[0, :3, 3] = 0


def palette_with_transparency() -> bytes:
    image = Image.fromarray(np.zeros((H, W), np.uint8), mode="P")
    image.putpalette([10, 20, 30, 200, 0, 0])
    return encode(image, "PNG", transparency=0)


#: name → (file bytes, expected stock rgb8 pixels or None when kept as they are, expected member)
GREY16_AS_RGB8 = np.repeat((GREY16 >> 8).astype(np.uint8)[..., None], 3, 2)
LA_OPAQUE = np.stack([RGB[..., 0], np.full((H, W), 255, np.uint8)], 2)
GOOD = {
    "grey16": (encode(Image.fromarray(GREY16), "PNG"), GREY16_AS_RGB8, schema.RGB_PNG),
    "rgb16": (rgb16_png(RGB.astype(np.uint16) * 257), RGB, schema.RGB_PNG),
    "rgba_opaque": (encode(Image.fromarray(OPAQUE_RGBA), "PNG"), RGB, schema.RGB_PNG),
    "la_opaque": (encode(Image.fromarray(LA_OPAQUE, "LA"), "PNG"), np.repeat(RGB[..., :1], 3, 2),
                  schema.RGB_PNG),
    "grey8": (encode(Image.fromarray(RGB[..., 1]), "PNG"), np.repeat(RGB[..., 1:2], 3, 2), schema.RGB_PNG),
    "jpeg_named_png": (encode(Image.fromarray(RGB), "JPEG", quality=95), None, schema.RGB_JPG),
    "png_named_jpg": (encode(Image.fromarray(RGB), "PNG"), RGB, schema.RGB_PNG),
}
def damaged(data: bytes, chunk: bytes) -> bytes:
    """``data`` with the CRC of its first ``chunk`` chunk flipped (the pixels themselves untouched)."""
    at = data.index(chunk) - 4
    end = at + 8 + int.from_bytes(data[at:at + 4], "big")
    return data[:end] + bytes([data[end] ^ 0xFF]) + data[end + 1:]


def chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def reordered(data: bytes, split_idat: bool) -> bytes:
    """``data`` (IHDR, one IDAT, IEND) with its IDAT split by a text chunk, or moved before IHDR: orders
    the PNG spec forbids (stock readers refuse them, or not, depending on where the split falls)."""
    at = data.index(b"IDAT") - 4
    body = data[at + 8 : at + 8 + int.from_bytes(data[at : at + 4], "big")]
    head, tail = data[8:at], data[at + 12 + len(body) :]
    if split_idat:
        middle = chunk(b"IDAT", body[:10]) + chunk(b"tEXt", b"k\0v") + chunk(b"IDAT", body[10:])
        return data[:8] + head + middle + tail
    return data[:8] + chunk(b"IDAT", body) + head + tail


PNG = encode(Image.fromarray(RGB), "PNG")
BAD = {
    "idat_split": (reordered(PNG, True), "comes after other chunks that follow IDAT"),
    "ihdr_after_idat": (reordered(PNG, False), "IHDR must be the first chunk"),
    "empty": (b"", "empty (0 bytes)"),
    "idat_crc": (damaged(PNG, b"IDAT"), "chunk IDAT at byte 33 has a bad CRC"),  # libpng refuses it
    "ihdr_crc": (damaged(PNG, b"IHDR"), "chunk IHDR at byte 8 has a bad CRC"),
    "no_iend": (PNG[:-12], "no IEND chunk (file truncated)"),
    "iend_cut": (PNG[:-1], "chunk IEND at byte"),
    "png_cut_in_half": (PNG[:len(PNG) // 2], "chunk IDAT at byte 33 is cut short"),
    "jpeg_cut_in_half": (encode(Image.fromarray(RGB), "JPEG")[:300], "unreadable rgb image"),
    "garbage": (b"not an image at all", "no known image format (19 bytes)"),
    "truncated": (encode(Image.fromarray(RGB), "PNG")[:60], "cannot be decoded"),
    "bmp": (encode(Image.fromarray(RGB), "BMP"), "holds BMP data"),
    "cmyk_jpeg": (encode(Image.fromarray(RGB).convert("CMYK"), "JPEG"), "CMYK colour space"),
    "rgba_see_through": (encode(Image.fromarray(SEE_THROUGH), "PNG"), "3 transparent pixel(s)"),
    "palette_transparent": (palette_with_transparency(), f"{H * W} transparent pixel(s)"),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_camera_pixels_decode_right(name):
    data, expected, member = GOOD[name]
    got_member, stored, _, conversion = camera_pixels("k", f"/x/{name}.png", data)
    assert got_member == member
    pixels = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))  # what decode("rgb8") does
    if expected is None:
        assert stored == data and conversion is None
    else:
        assert np.array_equal(pixels, expected)
    if name in ("grey16", "rgb16"):
        assert conversion and "16-bit" in conversion and stored != data
        assert Image.open(io.BytesIO(stored)).mode in ("L", "RGB")
    elif expected is not None:
        assert stored == data  # kept byte for byte


@pytest.mark.parametrize("name", sorted(BAD))
def test_unusable_camera_files_are_bad_frames_with_reasons(name):
    data, reason = BAD[name]
    with pytest.raises(BadFrame) as caught:
        camera_pixels("k", f"/x/{name}.png", data)
    assert reason in caught.value.reason and "BytesIO" not in caught.value.reason


def test_label_maps_must_be_png(tmp_path):
    from sim2real.storage.sources.base import SourceFrame

    path = str(tmp_path / "seg.png")
    with open(path, "wb") as handle:
        handle.write(encode(Image.fromarray(RGB[..., 0]), "JPEG"))
    with pytest.raises(BadFrame, match="seg file holds JPEG data"):
        load_label(SourceFrame("k", {"seg": path}), "seg", (W, H))


def test_damaged_label_png_is_a_bad_frame(tmp_path):
    from sim2real.storage.sources.base import SourceFrame

    path = str(tmp_path / "seg.png")
    with open(path, "wb") as handle:
        handle.write(damaged(encode(Image.fromarray(RGB[..., 0]), "PNG"), b"IDAT"))
    with pytest.raises(BadFrame, match="unreadable seg image: .* chunk IDAT .* bad CRC"):
        load_label(SourceFrame("k", {"seg": path}), "seg", (W, H))


def test_stock_webdataset_reads_what_ingest_wrote(tmp_path, ingest):
    root = tmp_path / "gta5"
    label = encode(Image.fromarray(np.full((H, W), 7, np.uint8)), "PNG")
    os.makedirs(root / "images")
    os.makedirs(root / "labels")
    for name, data in {**{k: v[0] for k, v in GOOD.items()}, **{k: v[0] for k, v in BAD.items()}}.items():
        (root / "images" / f"{name}.png").write_bytes(data)
        (root / "labels" / f"{name}.png").write_bytes(label)
    version, raw, _ = ingest(str(root), "gta5")
    reasons = {row["key"]: row["reason"] for row in version.quarantine().to_pylist()}
    assert set(reasons) == set(BAD) and set(raw) == set(GOOD)
    for name, (_, reason) in BAD.items():
        assert reason in reasons[name]
    stock = {s["__key__"]: s for s in wds.WebDataset(version.shard_urls, shardshuffle=False).decode("rgb8")}
    for name, (data, expected, member) in GOOD.items():
        sample = stock[name]
        pixels = sample[member]
        if expected is None:
            expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert pixels.dtype == np.uint8 and np.array_equal(pixels, expected), name
    assert (stock["grey16"][schema.RGB_PNG] == 255).mean() < 0.05  # not the 98 % white of the report
