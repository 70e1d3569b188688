"""The sample schema: member names, the key rule and checks shared by every reader and writer.

One WebDataset sample per frame. Member names are defined here once and imported everywhere else.
"""

from __future__ import annotations

import hashlib
import re

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+")

RGB_PNG = "rgb.png"
RGB_JPG = "rgb.jpg"
RGB_MEMBERS: tuple[str, ...] = (RGB_PNG, RGB_JPG)
SEG = "seg.png"  # 8-bit canonical trainIds, 255 = ignore
SEG_SRC = "seg_src.png"  # the importer's original label file, kept when seg.png was converted
INST = "inst.png"  # 16-bit instance ids, 0 = none
BOXES = "boxes.json"  # [{"label": "car", "bbox_xyxy": [x1, y1, x2, y2], "instance": 7}, ...]
DEPTH = "depth.png"  # 16-bit depth
META = "meta.json"  # source, frame, camera, conditions, sha256 of every other member, lineage

#: Members copied byte-exact into translated versions; never decoded and re-encoded.
LABEL_MEMBERS: tuple[str, ...] = (SEG, SEG_SRC, INST, BOXES, DEPTH)
REQUIRED_MEMBERS: tuple[str, ...] = (SEG, META)
KNOWN_MEMBERS: frozenset[str] = frozenset(RGB_MEMBERS + LABEL_MEMBERS + (META,))
#: Longest key: a shard member is named ``{key}.{member}`` in a ustar header's 100-byte name field.
MAX_KEY_LENGTH = 100 - 1 - max(len(m) for m in KNOWN_MEMBERS)


class SchemaError(ValueError):
    """A sample breaks the schema; the message names the key, the member and the reason."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid sample key, else raise :class:`SchemaError`."""
    if not KEY_PATTERN.fullmatch(key):
        raise SchemaError(f"key {key!r}: must match [A-Za-z0-9_-]+ (no dots, no slashes)")
    if len(key) > MAX_KEY_LENGTH:
        raise SchemaError(f"key {key[:20]}...: {len(key)} characters, at most {MAX_KEY_LENGTH} fit a shard")
    return key


def rgb_member(members: dict[str, bytes] | set[str] | list[str]) -> str:
    """The name of the sample's image member, ``rgb.png`` or ``rgb.jpg``."""
    found = [m for m in RGB_MEMBERS if m in members]
    if len(found) != 1:
        raise SchemaError(f"sample needs exactly one of {RGB_MEMBERS}, has {sorted(members)}")
    return found[0]


def check_members(key: str, members: dict[str, bytes]) -> None:
    """Raise :class:`SchemaError` unless ``members`` has one image, the required labels and no strangers."""
    check_key(key)
    try:
        rgb_member(members)
    except SchemaError as exc:
        raise SchemaError(f"key {key!r}: {exc}") from None
    for name in REQUIRED_MEMBERS:
        if name not in members:
            raise SchemaError(f"key {key!r}: missing member {name!r}")
    unknown = sorted(set(members) - KNOWN_MEMBERS)
    if unknown:
        raise SchemaError(f"key {key!r}: unknown members {unknown}")


def sha256_hex(data: bytes) -> str:
    """The sha256 of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()
