"""Conversion steps shared by the dataset importers: reading, decoding, id mapping, boxes, encoding.

Every importer turns its label files into canonical members the same way:

* label ids (or label colours) go through a mapping table; ids the table does not know at all become
  255 and are counted per id (``unknown_ids``), never silently;
* boxes are integer ``[x1, y1, x2, y2]`` with exclusive ``x2``/``y2`` (max pixel + 1);
* PNGs are encoded by one function, so equal arrays give equal bytes.

Camera images (:func:`load_camera`) are kept byte for byte when every reader decodes them to the
right 8-bit RGB pixels: PNG or JPEG whatever the file's extension says (the member name follows the
bytes), 8-bit grey, RGB, palette or 1-bit, and alpha only when every pixel is opaque. A 16-bit PNG
(grey or colour) is converted once to 8 bits per channel by its high byte (``v >> 8``, libpng's
strip-16) and stored as a new PNG; ``meta.json`` says so under ``rgb_converted``. Everything else is a
bad frame with a reason for people: an empty file, bytes of no known image format, a format other than
PNG/JPEG, a CMYK JPEG, transparent pixels, a decoding error.

Sample keys (:func:`sanitize_key`) must match ``[A-Za-z0-9_-]+`` while file names may hold any byte
but ``/`` and NUL. Name parts already in that alphabet are joined with ``_`` and used as they are;
otherwise each run of other characters becomes ``_`` and ``-`` plus the first 8 hex digits of the
sha256 of the parts' raw bytes is appended, so two names that differ only in those characters still
get two keys. A key longer than ``schema.MAX_KEY_LENGTH`` (88, what a shard's tar header holds) is
cut to 79 characters before the digest is appended. Frames whose keys collide anyway are re-keyed by
the same digest over their file paths (:func:`unique_keys`), or quarantined with both files named
when even that collides. ``meta.json`` keeps each file's name as readable UTF-8 and, for a name that
is not UTF-8, its bytes in hex. Only readable regular files are data (:func:`present_files`): a folder
named like an image, a FIFO, a dangling link make a bad frame saying so.

A file location is either a plain path or an fsspec chained URL into an archive,
``zip://{member}::{archive.zip}`` (SHIFT ships its frames in zip files).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import fsspec
import numpy as np
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.sources.base import REFUSED, BadFrame, SourceFrame, for_people, printable
from sim2real.storage.taxonomy import DETECTION_CLASSES, IGNORE_ID

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_KEEP = schema.MAX_KEY_LENGTH - 9  # characters of a name kept before "-" and an 8-digit digest
_RGB_MEMBER_BY_FORMAT = {"PNG": schema.RGB_PNG, "JPEG": schema.RGB_JPG}


def zip_location(archive: str, member: str) -> str:
    """The fsspec URL of ``member`` inside the zip file ``archive``."""
    return f"zip://{member}::{archive}"


def file_name(location: str) -> str:
    """The base name of a file location (of the member, for a ``zip://member::archive`` URL)."""
    if "::" in location:
        location = location.split("::", 1)[0].split("://", 1)[-1]
    return location.replace("\\", "/").rsplit("/", 1)[-1]


def not_a_file(path: str) -> str | None:
    """Why ``path`` cannot be read as a data file (``None`` when it is a readable regular file).

    Only regular files (or symbolic links to one) are data: reading a FIFO or a device would block or
    never end, and a folder named like an image (``x.png/``) cannot be read at all.
    """
    if os.path.isfile(path):  # follows symbolic links
        return None if os.access(path, os.R_OK) else "is not readable (permission denied)"
    if os.path.islink(path) and not os.path.exists(path):
        return f"is a dangling symbolic link (to {os.readlink(path)})"
    if os.path.isdir(path):
        return "is a folder, not a file"
    if os.path.exists(path):
        return "is not a regular file (a FIFO, socket or device)"
    return "is missing"


def present_files(candidates: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """Split a frame's expected files into ``files`` (readable regular files) and ``extra`` naming the
    others: ``{"missing": {role: path}}`` and, for a path that exists but is no data file (a folder, a
    FIFO, a dangling link, unreadable), ``{"unusable": {role: reason}}``.

    The ingest planner hashes every file a frame lists, so only readable regular files are listed;
    ``load`` then reports the others as a bad frame through :func:`require_file`.
    """
    files: dict[str, str] = {}
    missing: dict[str, str] = {}
    unusable: dict[str, str] = {}
    for role, path in candidates.items():
        why = None if "::" in path else not_a_file(path)
        if why is None:
            files[role] = path
        else:
            missing[role] = path
            if why != "is missing":
                unusable[role] = why
    extra: dict[str, Any] = {"missing": missing} if missing else {}
    return files, ({**extra, "unusable": unusable} if unusable else extra)


def require_file(frame: SourceFrame, role: str) -> str:
    """The location of ``role`` for ``frame``, or :class:`BadFrame` naming the expected file and why it
    cannot be used (missing, a folder, a dangling link, ...)."""
    if role in frame.files:
        return frame.files[role]
    expected = frame.extra.get("missing", {}).get(role, f"<{role} file>")
    why = frame.extra.get("unusable", {}).get(role)
    raise BadFrame(frame.key, expected, f"{role} file {why}" if why else f"missing {role} file")


def read_bytes(key: str, location: str, role: str) -> bytes:
    """The bytes at ``location`` (a path or a ``zip://member::archive`` URL), or :class:`BadFrame`."""
    try:
        if "::" in location:
            with fsspec.open(location, "rb") as handle:
                return handle.read()
        with open(location, "rb") as handle:
            return handle.read()
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # last 3: a damaged zip
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BadFrame(key, location, f"cannot read {role} file: {reason}") from None


def png_damage(data: bytes) -> str | None:
    """What is wrong with a PNG's chunk structure (``None`` when every chunk up to ``IEND`` is whole and
    its CRC right). Pillow ignores bad CRCs and a missing end; libpng (torchvision, OpenCV) refuses
    them, so such a file would give different readers different answers."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        name, end = kind.decode("latin-1"), pos + 12 + length
        if end > len(data):
            return f"chunk {name} at byte {pos} is cut short (file truncated)"
        if zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return f"chunk {name} at byte {pos} has a bad CRC (file damaged)"
        if kind == b"IEND":
            return None
        pos = end
    return "no IEND chunk (file truncated)"


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


def ids_to_train(
    frame: SourceFrame, role: str, ids: np.ndarray, table: Mapping[int, int]
) -> tuple[np.ndarray, dict[int, int]]:
    """:func:`map_ids` for a frame's label file; an impossible (negative) id makes a bad frame."""
    try:
        return map_ids(ids, table)
    except ValueError as exc:
        raise BadFrame(frame.key, frame.files.get(role, role), str(exc)) from None


def instance_ids(frame: SourceFrame, role: str, image: Image.Image) -> np.ndarray:
    """A one-channel instance map as uint16; an id that does not fit 16 bits makes a bad frame."""
    ids = single_channel(frame.key, frame.files[role], role, image)
    if int(ids.max(initial=0)) > np.iinfo(np.uint16).max:
        raise BadFrame(frame.key, frame.files[role], f"instance id {int(ids.max())} does not fit 16 bits")
    return ids.astype(np.uint16)


def channels_rgb(key: str, location: str, role: str, image: Image.Image) -> np.ndarray:
    """The H×W×3 uint8 colours of a label image stored as ``RGB``/``RGBA`` (alpha dropped)."""
    if image.mode not in ("RGB", "RGBA"):
        raise BadFrame(key, location, f"{role} must be an RGB(A) image, got mode {image.mode}")
    return np.asarray(image)[..., :3]


def map_ids(ids: np.ndarray, table: Mapping[int, int]) -> tuple[np.ndarray, dict[int, int]]:
    """Map integer ids through ``table`` to uint8 trainIds; ids absent from it → 255, counted per id."""
    if ids.size and int(ids.min()) < 0:
        raise ValueError(f"label ids must be >= 0, found {int(ids.min())}")
    size = max(int(ids.max()) if ids.size else 0, max(table, default=0)) + 1
    lut = np.full(size, IGNORE_ID, dtype=np.uint8)
    known = np.zeros(size, dtype=bool)
    for source_id, train_id in table.items():
        lut[source_id] = train_id
        known[source_id] = True
    counts = np.bincount(ids.ravel(), minlength=size)
    unknown = {int(i): int(counts[i]) for i in np.flatnonzero((counts > 0) & ~known)}
    return lut[ids], unknown


def pack_rgb(colours: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 colours as one int per pixel, ``0xRRGGBB`` (how unknown colours are reported)."""
    c = colours.astype(np.int64)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def colour_name(packed: int) -> str:
    """A packed ``0xRRGGBB`` colour as people read it: ``#be9999 (190,153,153)``."""
    r, g, b = (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    return f"#{packed:06x} ({r},{g},{b})"


def map_colours(
    colours: np.ndarray, table: Mapping[tuple[int, int, int], int]
) -> tuple[np.ndarray, dict[str, int]]:
    """Map label colours through ``table``; unknown colours → 255, counted by :func:`colour_name`."""
    packed = pack_rgb(colours)
    values, inverse, counts = np.unique(packed.ravel(), return_inverse=True, return_counts=True)
    packed_table = {(r << 16) | (g << 8) | b: train_id for (r, g, b), train_id in table.items()}
    mapped = np.array([packed_table.get(int(v), IGNORE_ID) for v in values], dtype=np.uint8)
    unknown = {colour_name(int(v)): int(n) for v, n in zip(values, counts, strict=True)
               if int(v) not in packed_table}
    return mapped[inverse].reshape(packed.shape), unknown


def boxes_from_instances(inst: np.ndarray, label_of: Mapping[int, str]) -> list[dict[str, Any]]:
    """One box per instance id in ``label_of`` that has pixels: tight, ``x2``/``y2`` exclusive."""
    ys, xs = np.nonzero(np.isin(inst, np.fromiter(label_of, dtype=np.int64, count=len(label_of))))
    if xs.size == 0:
        return []
    values = inst[ys, xs]
    order = np.argsort(values, kind="stable")
    values, ys, xs = values[order], ys[order], xs[order]
    ids, starts = np.unique(values, return_index=True)
    corners = (np.minimum.reduceat(xs, starts), np.minimum.reduceat(ys, starts),
               np.maximum.reduceat(xs, starts) + 1, np.maximum.reduceat(ys, starts) + 1)
    return [
        {"label": label_of[int(i)], "bbox_xyxy": [int(c[n]) for c in corners], "instance": int(i)}
        for n, i in enumerate(ids)
    ]


def box_from_inclusive(x1: float, y1: float, x2: float, y2: float, size: tuple[int, int]) -> list[int] | None:
    """Integer exclusive ``xyxy`` of a box given in inclusive pixel coordinates, clipped to the frame.

    Returns ``None`` when nothing of the box is left inside the frame.
    """
    width, height = size
    left, top = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    right, bottom = min(width, int(np.floor(x2)) + 1), min(height, int(np.floor(y2)) + 1)
    if right <= left or bottom <= top:
        return None
    return [left, top, right, bottom]


def slim_box2d_label(label: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a Scalabel-style label (BDD100K, SHIFT) the importers use: id, category, box2d."""
    return {"id": label.get("id"), "category": label.get("category"), "box2d": label.get("box2d")}


def boxes_from_box2d(
    labels: Iterable[Mapping[str, Any]], category_to_detection: Mapping[str, str], size: tuple[int, int]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Our boxes from Scalabel-style ``box2d`` labels (inclusive pixel coordinates).

    ``instance`` is the label's 1-based position in the frame, ``source_id`` its own id. Labels of
    other categories (or none), without a box, with a malformed or inverted box or a box outside the
    image are dropped and counted by category or reason.
    """
    boxes: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    for index, label in enumerate(labels, start=1):
        category, box2d = str(label.get("category")), label.get("box2d")
        ours = category_to_detection.get(category)
        xyxy, problem = None, "no box2d"
        if box2d:
            try:
                x1, y1, x2, y2 = (float(box2d[c]) for c in ("x1", "y1", "x2", "y2"))
                if x2 < x1 or y2 < y1:
                    problem = "inverted box2d (x2 < x1 or y2 < y1)"
                else:
                    xyxy, problem = box_from_inclusive(x1, y1, x2, y2, size), "box outside the image"
            except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: 1e400 is inf
                problem = "malformed box2d"
        if ours is None or xyxy is None:
            named = category if label.get("category") is not None else "no category"
            reason = problem if ours is not None else named
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        boxes.append({"label": check_detection_label(ours), "bbox_xyxy": xyxy, "instance": index,
                      "source_id": str(label.get("id"))})
    return boxes, dropped


def check_detection_label(label: str) -> str:
    """``label`` if it is a canonical detection class, else ``ValueError`` (a mapping-table bug)."""
    if label not in DETECTION_CLASSES:
        raise ValueError(f"{label!r} is not one of the detection classes {DETECTION_CLASSES}")
    return label


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 (``L``) or uint16 (16-bit grey) array; equal arrays, equal bytes."""
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png needs a 2-D uint8/uint16 array, got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _utf8_safe(value: Any) -> Any:
    """``value`` with every string (keys too) made valid UTF-8 by :func:`printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, Mapping):
        return {_utf8_safe(k): _utf8_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_utf8_safe(v) for v in value]
    return value


def json_bytes(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, valid UTF-8 (file-name bytes escaped)."""
    return json.dumps(_utf8_safe(value), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def file_names(files: Mapping[str, str]) -> dict[str, Any]:
    """``meta.json``'s record of a frame's files: ``{"files": {role: name}}`` with readable UTF-8 names,
    plus ``{"file_names_hex": {role: hex}}``, the exact bytes, for names that are not UTF-8 or hold
    control characters (shown as ``\\xNN``)."""
    names = {role: file_name(location) for role, location in sorted(files.items())}
    shown = {role: for_people(name) for role, name in names.items()}
    record: dict[str, Any] = {"files": shown}
    raw = {role: os.fsencode(name) for role, name in names.items() if shown[role] != name}
    if raw:
        record["file_names_hex"] = {role: data.hex() for role, data in raw.items()}
    return record


def find_by_stem(folder: str, extensions: tuple[str, ...]) -> dict[str, str]:
    """``{stem: path}`` of the files in ``folder`` whose extension matches ``extensions`` in any case
    (``.png``, ``.PNG``, ``.Png``); when several do, the lower-case one wins, then the first by name.

    Lists the folder once (an empty dict when it does not exist), so a lookup costs no system call.
    """
    if not os.path.isdir(folder):
        return {}
    found: dict[str, str] = {}
    for entry in sorted(os.listdir(folder), key=lambda e: (os.path.splitext(e)[1] not in extensions, e)):
        stem, ext = os.path.splitext(entry)
        if ext.lower() in extensions and stem not in found:
            found[stem] = os.path.join(folder, entry)
    return found


def seg_members(
    original: bytes, image: Image.Image, train_ids: np.ndarray, converted: bool
) -> dict[str, bytes]:
    """``seg.png`` (plus ``seg_src.png`` when converted); an already-canonical ``L`` PNG passes as is."""
    if not converted and image.mode == "L" and image.format == "PNG":
        return {schema.SEG: original}
    return {schema.SEG: encode_png(train_ids.astype(np.uint8)), schema.SEG_SRC: original}


def _name_digest(parts: Iterable[str]) -> str:
    """First 8 hex digits of the sha256 of name parts' raw bytes (NUL-separated: NUL is in no name)."""
    return hashlib.sha256(b"\0".join(os.fsencode(p) for p in parts)).hexdigest()[:8]


def sanitize_key(*parts: str) -> str:
    """A sample key from name parts, by the rule in the module docstring (collision-safe)."""
    used = [p for p in parts if p]
    cleaned = [_KEY_UNSAFE.sub("_", part) for part in used]
    key = "_".join(cleaned)
    if cleaned != used or not key or len(key) > schema.MAX_KEY_LENGTH:
        key = f"{key.strip('_')[:_KEEP] or 'k'}-{_name_digest(used)}"
    return key


def unique_keys(frames: Sequence[SourceFrame]) -> list[SourceFrame]:
    """``frames`` with colliding keys made unique (module docstring); a frame whose key still collides
    is marked refused (``extra["refused"]``, both files named) and quarantined at load, never an abort."""
    groups: dict[str, list[int]] = {}
    for index, frame in enumerate(frames):
        groups.setdefault(frame.key, []).append(index)
    out = list(frames)
    for key, indexes in groups.items():
        if len(indexes) < 2:
            continue
        for index in indexes:
            frame = frames[index]
            out[index] = replace(frame, key=f"{key[:_KEEP]}-{_name_digest(sorted(frame.files.values()))}")
    seen: dict[str, str] = {}
    for index, frame in enumerate(out):
        first_file = for_people(next(iter(frame.files.values()), "?"))
        if frame.key in seen:
            reason = f"key {frame.key!r} made twice, from {seen[frame.key]} and {first_file}"
            out[index] = replace(frame, extra={**frame.extra, REFUSED: reason})
        else:
            seen[frame.key] = first_file
    return out


def add_counts(total: dict[Any, int], more: Mapping[Any, int]) -> dict[Any, int]:
    """Add per-id pixel counts into ``total`` (returned for chaining)."""
    for source_id, count in more.items():
        total[source_id] = total.get(source_id, 0) + count
    return total
