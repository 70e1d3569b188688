"""The generic ``folder`` export: one file per frame and member, as the toy simulator writes it.

Layout::

    DIR/classes.json          {"classes": [{"id": 7, "name": "road"}, ...], "ignore_id": 255}
    DIR/rgb/{key}.png|.jpg    the camera image (bytes kept as they are)
    DIR/seg/{key}.png         8-bit class ids in the numbering of classes.json
    DIR/inst/{key}.png        16-bit instance ids (optional)
    DIR/boxes/{key}.json      [{"label": "car", "bbox_xyxy": [x1, y1, x2, y2], "instance": 7}] (optional)
    DIR/depth/{key}.png       16-bit depth (optional)
    DIR/meta/{key}.json       free-form frame metadata (optional)

Class ids are matched to the canonical trainIds by name. When ``classes.json`` already numbers the
classes as trainIds, ``seg.png`` passes through byte for byte; otherwise it is converted once and the
original is kept as ``seg_src.png``. A pixel whose id is not in ``classes.json`` makes the frame bad.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from itertools import groupby
from typing import Any

import numpy as np
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.listing import external_sorted
from sim2real.storage.sources import convert
from sim2real.storage.sources.base import BadFrame, LoadedFrame, SourceFrame, register_format
from sim2real.storage.sources.image_files import camera_pixels, open_image
from sim2real.storage.sources.source_files import (
    file_name,
    file_names,
    present_files,
    require_file,
    sanitize_key,
    unique_keys,
)
from sim2real.storage.taxonomy import DETECTION_CLASSES, IGNORE_ID, TRAIN_ID_BY_NAME

ROLE_DIRS = {
    "rgb": (".png", ".jpg", ".jpeg"),
    "seg": (".png",),
    "inst": (".png",),
    "boxes": (".json",),
    "depth": (".png",),
    "meta": (".json",),
}


def _read(frame: SourceFrame, role: str) -> bytes:
    path = frame.files[role]
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise BadFrame(frame.key, path, f"cannot read {role}: {exc.strerror}") from None


def decode_image(frame: SourceFrame, role: str, data: bytes) -> Image.Image:
    """Decode image bytes fully (so truncated files fail here), or raise :class:`BadFrame`."""
    return open_image(frame.key, frame.files[role], role, data)


def plain_png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an 8-bit grey or RGB PNG with no transparency chunk whose chunks' CRCs all
    check and that ends in ``IEND``: such a file passes through as it is, so its pixels need no decoding.
    None for anything else (the full checks decide)."""
    if not (data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 33 and data[12:16] == b"IHDR"):
        return None
    bit_depth, colour_type = data[24], data[25]
    if bit_depth != 8 or colour_type not in (0, 2):
        return None
    offset = 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        end = offset + 12 + length
        if end > len(data):
            return None
        chunk_type = data[offset + 4 : offset + 8]
        if chunk_type == b"tRNS" or not _crc_ok(data, offset, end):
            return None
        if chunk_type == b"IEND":
            width, height = struct.unpack_from(">II", data, 16)
            return int(width), int(height)
        offset = end
    return None


def label_size(frame: SourceFrame, role: str, data: bytes) -> tuple[int, int]:
    """(width, height) of a label image that passes through (``inst``, ``depth``): from the header of a
    sound PNG, else from a full decode (which raises :class:`BadFrame` for a bad file)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 33 and data[12:16] == b"IHDR":
        if _png_chunks_sound(data):
            width, height = struct.unpack_from(">II", data, 16)
            return int(width), int(height)
    return decode_image(frame, role, data).size


def _crc_ok(data: bytes, offset: int, end: int) -> bool:
    """Whether the PNG chunk at ``data[offset:end]`` (length, type, data, CRC) has a matching CRC."""
    return zlib.crc32(memoryview(data)[offset + 4 : end - 4]) == struct.unpack_from(">I", data, end - 4)[0]


def _png_chunks_sound(data: bytes) -> bool:
    offset = 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        end = offset + 12 + length
        if end > len(data) or not _crc_ok(data, offset, end):
            return False
        if data[offset + 4 : offset + 8] == b"IEND":
            return True
        offset = end
    return False


def check_same_size(
    frame: SourceFrame, role: str, image: Image.Image | tuple[int, int], size: tuple[int, int]
) -> None:
    """Raise :class:`BadFrame` unless a label image (or its (width, height)) has the camera image's size."""
    found = image if isinstance(image, tuple) else image.size
    if found != size:
        raise BadFrame(
            frame.key,
            frame.files[role],
            f"{role} size {found[0]}x{found[1]} != rgb size {size[0]}x{size[1]}",
        )


def check_boxes(frame: SourceFrame, data: bytes, size: tuple[int, int]) -> None:
    """Raise :class:`BadFrame` unless ``boxes.json`` is a list of known-class boxes inside the frame."""
    path = frame.files["boxes"]
    try:
        boxes = json.loads(data)
    except ValueError as exc:
        raise BadFrame(frame.key, path, f"boxes is not JSON: {exc}") from None
    if not isinstance(boxes, list):
        raise BadFrame(frame.key, path, "boxes must be a JSON list")
    for box in boxes:
        label, xyxy = box.get("label"), box.get("bbox_xyxy")
        if label not in DETECTION_CLASSES:
            raise BadFrame(frame.key, path, f"unknown detection class {label!r}")
        if not (isinstance(xyxy, list) and len(xyxy) == 4):
            raise BadFrame(frame.key, path, f"bad bbox_xyxy {xyxy!r}")
        x1, y1, x2, y2 = xyxy
        if not (0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]):
            raise BadFrame(frame.key, path, f"bbox {xyxy} outside the {size[0]}x{size[1]} frame")


def _role_files(root: str) -> Iterator[tuple[str, str]]:
    """(role, file name) of every member file in the role folders, in directory order."""
    for role, exts in ROLE_DIRS.items():
        folder = os.path.join(root, role)
        if not os.path.isdir(folder):
            continue
        with os.scandir(folder) as listing:
            for entry in listing:
                if os.path.splitext(entry.name)[1].lower() in exts:
                    yield role, entry.name


@register_format("folder")
class FolderFormat:
    """Importer of the generic export folder."""

    name = "folder"

    def __init__(self) -> None:
        self._lut: np.ndarray | None = None
        self._identity = True
        self._table: dict[str, Any] = {}

    def discover(self, root: str, options: Mapping[str, Any]) -> list[SourceFrame]:
        """Every frame stem found in any member folder; frames missing a member fail at load."""
        return list(self.iter_frames(root, options))

    def iter_frames(self, root: str, options: Mapping[str, Any]) -> Iterator[SourceFrame]:
        """The frames of :meth:`discover` streamed in key order, in bounded memory whatever their number.

        The member folders' entries go through an external sort by (key, stem), so a frame's files
        and any stems whose keys collide arrive together (collisions are resolved as
        ``unique_keys`` does, within the group; renamed keys may break the order locally).
        No file is opened.
        """
        classes = os.path.join(root, "classes.json")
        self._read_classes(classes)
        found = False
        entries = map(json.loads, external_sorted(self._entries(root)))
        for _, same_key in groupby(entries, lambda e: e[0]):
            group = []
            for (key, _), entries_of_stem in groupby(same_key, lambda e: (e[0], e[1])):
                candidates = {r: os.path.join(root, r, n) for *_, r, n in entries_of_stem}
                files, extra = present_files(candidates)  # folders, FIFOs, dangling links: bad frames
                group.append(SourceFrame(key, {**files, "classes": classes}, extra))
            found = True
            yield from unique_keys(group) if len(group) > 1 else group
        if not found:
            raise FileNotFoundError(f"{root}: no frames found (expected rgb/ seg/ ... folders)")

    def export_entries(self, root: str, options: Mapping[str, Any]) -> Iterator[str]:
        """The files :meth:`iter_frames` lists, relative to ``root``, in directory order: unsorted,
        nothing opened but ``classes.json``, nothing written. Their names, sizes and mtimes fingerprint
        the export (``storage.listing.entries_fingerprint``). Raises as :meth:`iter_frames` does."""
        self._read_classes(os.path.join(root, "classes.json"))
        yield "classes.json"
        found = False
        for role, name in _role_files(root):
            found = True
            yield f"{role}/{name}"
        if not found:
            raise FileNotFoundError(f"{root}: no frames found (expected rgb/ seg/ ... folders)")

    @staticmethod
    def _entries(root: str) -> Iterator[str]:
        # JSON lines [key, stem, role, file name]: any file name survives, and as keys' characters all
        # sort after '"', the line order is the key order.
        for role, name in _role_files(root):
            stem = os.path.splitext(name)[0]
            yield json.dumps([sanitize_key(stem), stem, role, name])

    def _read_classes(self, path: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: missing classes.json (class id → name table)")
        lut = np.full(256, -1, dtype=np.int16)
        try:
            with open(path, "rb") as handle:
                spec = json.load(handle)
            lut[int(spec.get("ignore_id", IGNORE_ID))] = IGNORE_ID
            classes = [(int(cls["id"]), str(cls["name"])) for cls in spec["classes"]]
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: expected {{\"classes\": [{{\"id\": 0-255, \"name\": ...}}], "
                             f"\"ignore_id\": 255}} ({type(exc).__name__}: {exc})") from None
        for class_id, name in classes:
            if name not in TRAIN_ID_BY_NAME:
                raise ValueError(f"{path}: class {name!r} is not in the canonical taxonomy")
            if not 0 <= class_id <= 255:
                raise ValueError(f"{path}: class id {class_id} of {name!r} is not 0-255")
            lut[class_id] = TRAIN_ID_BY_NAME[name]
        self._lut = lut
        self._identity = (
            all(lut[i] in (i, -1) for i in range(256) if i != IGNORE_ID) and lut[IGNORE_ID] == 255
        )
        self._table = {"ids_to_train_ids": {str(i): int(v) for i, v in enumerate(lut) if v >= 0}}

    def mapping_table(self) -> dict[str, Any]:
        """The classes.json id → trainId table applied at ingest."""
        return dict(self._table)

    def load(self, frame: SourceFrame) -> LoadedFrame:
        """Validate and convert one frame; raise :class:`BadFrame` naming the file and the reason."""
        if self._lut is None:
            self._read_classes(frame.files["classes"])
        for role in frame.extra.get("unusable", {}):
            require_file(frame, role)  # raises BadFrame: the file is a folder, a FIFO, ...
        for role in ("rgb", "seg"):
            if role not in frame.files:
                some_file = next(p for r, p in frame.files.items() if r != "classes")
                raise BadFrame(frame.key, some_file, f"missing member {role}/ for this frame")
        data = _read(frame, "rgb")
        plain = plain_png_size(data)  # the common case passes through: header and CRCs, no decoding
        if plain is not None:
            member, rgb_bytes, rgb_size, conversion = schema.RGB_PNG, data, plain, None
        else:
            member, rgb_bytes, rgb, conversion = camera_pixels(frame.key, frame.files["rgb"], data)
            rgb_size = rgb.size
        members = {member: rgb_bytes}
        seg_members, train_ids = self._load_seg(frame, rgb_size)
        members.update(seg_members)
        for role, member in (("inst", schema.INST), ("depth", schema.DEPTH)):
            if role in frame.files:
                data = _read(frame, role)
                check_same_size(frame, role, label_size(frame, role, data), rgb_size)
                members[member] = data
        if "boxes" in frame.files:
            data = _read(frame, "boxes")
            check_boxes(frame, data, rgb_size)
            members[schema.BOXES] = data
        meta = self._read_meta(frame)
        meta.setdefault("source", self.name)
        stem = os.path.splitext(file_name(frame.files["rgb"]))[0]
        if stem != frame.key:
            meta.update({"file_stem": stem, **file_names(frame.files)})
        if conversion:
            meta["rgb_converted"] = conversion
        members[schema.META] = convert.json_bytes(meta)
        return LoadedFrame(members=members, seg_train_ids=train_ids)

    @staticmethod
    def _read_meta(frame: SourceFrame) -> dict[str, Any]:
        """The frame's ``meta/`` file as a dict ({} without one); :class:`BadFrame` if not a JSON object."""
        if "meta" not in frame.files:
            return {}
        try:
            meta = json.loads(_read(frame, "meta"))
        except ValueError as exc:
            raise BadFrame(frame.key, frame.files["meta"], f"meta is not valid JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise BadFrame(frame.key, frame.files["meta"], "meta must be a JSON object")
        return meta

    def _load_seg(self, frame: SourceFrame, size: tuple[int, int]) -> tuple[dict[str, bytes], np.ndarray]:
        data = _read(frame, "seg")
        image = decode_image(frame, "seg", data)
        check_same_size(frame, "seg", image, size)
        if image.mode != "L":
            raise BadFrame(
                frame.key, frame.files["seg"], f"seg must be an 8-bit 'L' PNG, got mode {image.mode}"
            )
        ids = np.asarray(image)
        assert self._lut is not None
        mapped = self._lut[ids]
        if (mapped < 0).any():
            unknown = sorted(int(v) for v in np.unique(ids[mapped < 0]))
            raise BadFrame(frame.key, frame.files["seg"], f"unknown class id(s) {unknown[:10]}")
        if self._identity:
            return {schema.SEG: data}, ids
        train_ids = mapped.astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(train_ids, mode="L").save(buffer, format="PNG")
        return {schema.SEG: buffer.getvalue(), schema.SEG_SRC: data}, train_ids
