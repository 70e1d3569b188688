"""Decoding an importer's camera and label image files, with a reason for people when one is unusable.

Camera images (:func:`load_camera`) are kept byte for byte when every reader decodes them to the
right 8-bit RGB pixels: PNG or JPEG whatever the file's extension says (the member name follows the
bytes), 8-bit grey, RGB, palette or 1-bit, and alpha only when every pixel is opaque. A 16-bit PNG
(grey or colour) is converted once to 8 bits per channel by its high byte (``v >> 8``, libpng's
strip-16) and stored as a new PNG; ``meta.json`` says so under ``rgb_converted``. Everything else is a
bad frame with a reason for people: an empty file, bytes of no known image format, a format other than
PNG/JPEG, a CMYK JPEG, transparent pixels, a decoding error. Label maps (:func:`load_label`) must be
PNGs of the camera image's size.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.png import png_damage
from sim2real.storage.sources.base import BadFrame, SourceFrame
from sim2real.storage.sources.source_files import read_bytes, require_file

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RGB_MEMBER_BY_FORMAT = {"PNG": schema.RGB_PNG, "JPEG": schema.RGB_JPG}


def open_image(key: str, location: str, role: str, data: bytes) -> Image.Image:
    """Decode image bytes fully (a truncated file fails here), or raise :class:`BadFrame`.

    A PNG must also be whole with right chunk CRCs (:func:`png_damage`)."""
    if not data:
        raise BadFrame(key, location, f"{role} file is empty (0 bytes)")
    damage = png_damage(data) if data.startswith(_PNG_SIGNATURE) else None
    if damage:
        raise BadFrame(key, location, f"unreadable {role} image: PNG data ({len(data)} bytes) cannot be "
                                      f"decoded: {damage}")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        reason = f"unreadable {role} file: no known image format ({len(data)} bytes)"
        raise BadFrame(key, location, reason) from None
    except Exception as exc:  # PIL raises many exception types for corrupt data
        raise BadFrame(key, location, f"unreadable {role} image ({len(data)} bytes): {exc}") from None
    try:
        image.load()
    except Exception as exc:  # truncated or corrupt pixel data
        raise BadFrame(key, location, f"unreadable {role} image: {image.format} data ({len(data)} bytes) "
                                      f"cannot be decoded: {exc}") from None
    return image


def rgb_member(key: str, location: str, image: Image.Image) -> str:
    """``rgb.png`` or ``rgb.jpg`` from the decoded format (not the file name); others are bad frames."""
    member = _RGB_MEMBER_BY_FORMAT.get(image.format or "")
    if member is None:
        raise BadFrame(key, location, f"camera file holds {image.format} data; camera images must be "
                                      f"PNG or JPEG (convert it first)")
    return member


def _png_bit_depth(data: bytes) -> int:
    """Bits per sample of a PNG, from its IHDR chunk (PIL reports 16-bit colour PNGs as 8-bit ``RGB``)."""
    return data[24] if len(data) > 25 and data[12:16] == b"IHDR" else 8


def _transparent_pixels(image: Image.Image) -> int:
    """How many pixels of ``image`` are not fully opaque (0 for an image without transparency)."""
    if not image.has_transparency_data:
        return 0
    alpha = np.asarray(image.convert("RGBA"))[..., 3]
    return int(np.count_nonzero(alpha != 255))


def camera_pixels(key: str, location: str, data: bytes) -> tuple[str, bytes, Image.Image, str | None]:
    """``(member, bytes, image, conversion)`` of a camera image by the rule in the module docstring.

    ``bytes`` are the file's own unless ``conversion`` (a note for ``meta.json``) says how they were
    made; raises :class:`BadFrame` with a reason for people when the file is not a usable camera image.
    """
    image = open_image(key, location, "rgb", data)
    member = rgb_member(key, location, image)
    if image.format == "JPEG" and image.mode not in ("L", "RGB"):
        raise BadFrame(key, location, f"camera JPEG is in {image.mode} colour space, not RGB or grey "
                                      f"(readers disagree on its colours; convert it to RGB first)")
    transparent = _transparent_pixels(image)
    if transparent:
        raise BadFrame(key, location, f"camera image has {transparent} transparent pixel(s) "
                                      f"(alpha < 255); camera images must be opaque")
    depth = _png_bit_depth(data) if image.format == "PNG" else 8
    if depth == 16:
        if image.mode.startswith("I;16"):
            pixels = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
            converted = Image.fromarray(pixels, mode="L")
        else:
            converted = image.convert("RGB")  # PIL keeps the high byte of each 16-bit sample
        buffer = io.BytesIO()
        converted.save(buffer, format="PNG", compress_level=6)
        note = f"16-bit {image.mode} PNG -> 8-bit {converted.mode} by the high byte (v >> 8)"
        return schema.RGB_PNG, buffer.getvalue(), converted, note
    if image.mode not in ("1", "L", "P", "RGB", "RGBA", "LA", "PA"):
        raise BadFrame(key, location, f"camera image mode {image.mode} has no defined 8-bit RGB conversion")
    return member, data, image, None


def require_size(key: str, location: str, role: str, image: Image.Image, size: tuple[int, int]) -> None:
    """Raise :class:`BadFrame` unless a label image has the camera image's ``(width, height)``."""
    if image.size != size:
        raise BadFrame(key, location, f"{role} size {image.size[0]}x{image.size[1]} != "
                                      f"image size {size[0]}x{size[1]}")


def single_channel(key: str, location: str, role: str, image: Image.Image) -> np.ndarray:
    """Integer ids of a one-channel label image (``L``, ``P`` indices, 16/32-bit ``I``)."""
    if image.mode in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(image).astype(np.int64)
    raise BadFrame(key, location, f"{role} must be a one-channel id image, got mode {image.mode}")


def channels_rgb(key: str, location: str, role: str, image: Image.Image) -> np.ndarray:
    """The H×W×3 uint8 colours of a label image stored as ``RGB``/``RGBA`` (alpha dropped)."""
    if image.mode not in ("RGB", "RGBA"):
        raise BadFrame(key, location, f"{role} must be an RGB(A) image, got mode {image.mode}")
    return np.asarray(image)[..., :3]


def load_camera(frame: SourceFrame) -> tuple[dict[str, bytes], Image.Image, dict[str, Any]]:
    """The frame's ``rgb.png``/``rgb.jpg`` member, the decoded image and notes for ``meta.json``.

    The member holds the file's bytes, or the 8-bit conversion described in the module docstring
    (then the notes carry ``rgb_converted`` and the original file's ``rgb_source_sha256``).
    """
    location = require_file(frame, "rgb")
    data = read_bytes(frame.key, location, "rgb")
    member, stored, image, conversion = camera_pixels(frame.key, location, data)
    notes: dict[str, Any] = {}
    if conversion:
        notes = {"rgb_converted": conversion, "rgb_source_sha256": schema.sha256_hex(data)}
    return {member: stored}, image, notes


def load_label(frame: SourceFrame, role: str, size: tuple[int, int]) -> tuple[bytes, Image.Image]:
    """A label file's bytes and decoded image; :class:`BadFrame` if missing, unreadable, not PNG or
    of another size than the camera image."""
    location = require_file(frame, role)
    data = read_bytes(frame.key, location, role)
    image = open_image(frame.key, location, role, data)
    if image.format != "PNG":
        raise BadFrame(frame.key, location, f"{role} file holds {image.format} data; label maps must be "
                                            f"PNG (a lossy or other format would change label ids)")
    require_size(frame.key, location, role, image, size)
    return data, image
