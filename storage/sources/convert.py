"""Conversion steps shared by the dataset importers: id mapping, colours, boxes, encoding.

Every importer turns its label files into canonical members the same way:

* label ids (or label colours) go through a mapping table; ids the table does not know at all become
  255 and are counted per id (``unknown_ids``), never silently;
* boxes are integer ``[x1, y1, x2, y2]`` with exclusive ``x2``/``y2`` (max pixel + 1);
* PNGs are encoded by one function, so equal arrays give equal bytes.

Reading the files and naming the sample are in ``source_files``; decoding images in ``image_files``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.sources.base import BadFrame, SourceFrame, printable
from sim2real.storage.sources.image_files import load_label, single_channel
from sim2real.storage.taxonomy import DETECTION_CLASSES, IGNORE_ID


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


def seg_members(
    original: bytes, image: Image.Image, train_ids: np.ndarray, converted: bool
) -> dict[str, bytes]:
    """``seg.png`` (plus ``seg_src.png`` when converted); an already-canonical ``L`` PNG passes as is."""
    if not converted and image.mode == "L" and image.format == "PNG":
        return {schema.SEG: original}
    return {schema.SEG: encode_png(train_ids.astype(np.uint8)), schema.SEG_SRC: original}


def add_counts(total: dict[Any, int], more: Mapping[Any, int]) -> dict[Any, int]:
    """Add per-id pixel counts into ``total`` (returned for chaining)."""
    for source_id, count in more.items():
        total[source_id] = total.get(source_id, 0) + count
    return total


def id_label_seg(
    frame: SourceFrame, size: tuple[int, int], table: Mapping[int, int], always_convert: bool = True
) -> tuple[dict[str, bytes], dict[int, int]]:
    """The ``seg`` members of a frame whose ``seg`` file is a one-channel id map (of the camera image's
    ``size``) mapped through ``table``, and its unknown ids counted. The original map is kept as
    ``seg_src.png`` unless ``always_convert`` is off and every id was known (:func:`seg_members`)."""
    seg_bytes, seg_image = load_label(frame, "seg", size)
    ids = single_channel(frame.key, frame.files["seg"], "seg", seg_image)
    train_ids, unknown = ids_to_train(frame, "seg", ids, table)
    return seg_members(seg_bytes, seg_image, train_ids, converted=always_convert or bool(unknown)), unknown


def add_box2d_boxes(
    members: dict[str, bytes],
    meta: dict[str, Any],
    detection: Mapping[str, Any] | None,
    table: Mapping[str, str],
    size: tuple[int, int],
    absent: str,
) -> dict[str, int]:
    """Add ``boxes.json`` from a frame's box2d label record (:func:`boxes_from_box2d`) to ``members``
    and ``dropped_boxes`` to ``meta``; returns the dropped-box counts. A frame without a record gets no
    ``boxes.json`` (missing is not empty) and ``meta["boxes"] = absent`` saying why."""
    if detection is None:
        meta["boxes"] = absent
        return {}
    boxes, dropped = boxes_from_box2d(detection["labels"], table, size)
    members[schema.BOXES] = json_bytes(boxes)
    meta["dropped_boxes"] = dropped
    return dropped
