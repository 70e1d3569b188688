"""Manifest rows: what a version records about each sample (sha256s, size, class and box counts)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.taxonomy import DETECTION_CLASS_ID, DETECTION_CLASSES, NUM_TRAIN_CLASSES


def sha_column(member: str) -> str:
    """Manifest column holding a member's sha256, e.g. ``sha256_seg_png``."""
    return "sha256_" + member.replace(".", "_")


SHA_COLUMNS = tuple(sha_column(m) for m in schema.RGB_MEMBERS + schema.LABEL_MEMBERS + (schema.META,))
MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("rgb_member", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("bytes", pa.int64()),
        *[(column, pa.string()) for column in SHA_COLUMNS],
        ("class_pixels", pa.list_(pa.int64())),  # index = trainId
        ("ignore_pixels", pa.int64()),
        ("box_counts", pa.list_(pa.int32())),  # index = DETECTION_CLASSES position
    ]
)


def with_member_hashes(
    key: str,
    members: Mapping[str, bytes],
    extra_meta: Mapping[str, Any] | None = None,
    digests: Mapping[str, str] | None = None,
) -> dict[str, bytes]:
    """Members with ``meta.json`` rewritten to list the sha256 of every other member (plus ``extra_meta``).

    ``digests``: those sha256s already computed (every member but ``meta.json``), not computed again.
    Raises :class:`~sim2real.storage.schema.SchemaError` when the sample breaks the schema.
    """
    out = dict(members)
    meta = json.loads(out.get(schema.META, b"{}"))
    meta.update(extra_meta or {})
    meta["sha256"] = {
        name: digests[name] if digests is not None else schema.sha256_hex(data)
        for name, data in sorted(out.items())
        if name != schema.META
    }
    out[schema.META] = json.dumps(meta, sort_keys=True).encode()
    schema.check_members(key, out)
    return out


def manifest_row(
    key: str,
    shard: str,
    members: Mapping[str, bytes],
    digests: Mapping[str, str] | None = None,
    seg_train_ids: np.ndarray | None = None,
) -> dict[str, Any]:
    """The manifest row of one finished sample (decodes ``seg.png`` for the class pixel counts).

    ``digests``: the members' sha256s already computed (e.g. the ``meta.json`` list), not computed again;
    ``seg_train_ids``: ``seg.png`` already decoded (H×W uint8), not decoded again.
    """
    if seg_train_ids is None:
        seg = np.asarray(Image.open(io.BytesIO(members[schema.SEG])))
    else:
        seg = seg_train_ids
    counts = np.bincount(seg.ravel(), minlength=256)
    boxes = json.loads(members[schema.BOXES]) if schema.BOXES in members else []
    box_counts = [0] * len(DETECTION_CLASSES)
    for box in boxes:
        box_counts[DETECTION_CLASS_ID[box["label"]] - 1] += 1
    row: dict[str, Any] = {
        "key": key,
        "shard": shard,
        "rgb_member": schema.rgb_member(members),
        "height": int(seg.shape[0]),
        "width": int(seg.shape[1]),
        "bytes": sum(len(v) for v in members.values()),
        "class_pixels": [int(c) for c in counts[:NUM_TRAIN_CLASSES]],
        "ignore_pixels": int(counts[NUM_TRAIN_CLASSES:].sum()),
        "box_counts": box_counts,
    }
    row.update({column: None for column in SHA_COLUMNS})
    for name, data in members.items():
        known = digests.get(name) if digests is not None else None
        row[sha_column(name)] = known or schema.sha256_hex(data)
    return row


def manifest_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The manifest as an Arrow table with the fixed schema, sorted by key."""
    return pa.Table.from_pylist(sorted(rows, key=lambda r: r["key"]), MANIFEST_SCHEMA)


def rows_digest(rows: Iterable[Mapping[str, Any]]) -> str:
    """sha256 over the rows' keys and member sha256s in order: a shard's content for the version id."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row["key"].encode())
        for column in SHA_COLUMNS:
            digest.update(b"|" + (row[column] or "-").encode())
        digest.update(b"\n")
    return digest.hexdigest()
