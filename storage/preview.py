"""A before/after preview of a translated version: source frames beside their translations."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.png import encode_png_rgb
from sim2real.storage.shards import read_shard
from sim2real.storage.versions import DatasetStore, Version

GAP_PX = 8  # white gap between the source frame and its translation


def _images(
    store: DatasetStore, shard_urls: Sequence[str], keys: set[str] | None, count: int
) -> dict[str, bytes]:
    """Image bytes of the given ``keys`` (or the first ``count`` samples) from the shards, in order."""
    found: dict[str, bytes] = {}
    for shard_url in shard_urls:
        for key, members in read_shard(store.fs, shard_url):
            if keys is None or key in keys:
                found[key] = members[schema.rgb_member(members)]
            if len(found) == (count if keys is None else len(keys)):
                return found
    return found


def before_after_pairs(
    store: DatasetStore, source: Version, translated: Version, count: int = 2, min_frame_width: int = 512
) -> list[tuple[str, bytes]]:
    """Up to ``count`` ``(key, PNG)`` images of ``translated``: the source frame left, its translation
    right, side by side at full resolution (never scaled down), enlarged by a whole factor (nearest
    neighbour: every pixel stays a block of one colour) until a frame is ``min_frame_width`` wide, so
    each is large enough to judge in the Prefect UI. Raises ``ValueError`` when there is nothing to show.
    """
    after = _images(store, translated.shard_urls, None, count)
    before = _images(store, source.shard_urls, set(after), count)
    pairs = []
    for key in (k for k in after if k in before):
        left, right = _decoded(before[key]), _decoded(after[key])
        factor = max(1, -(-min_frame_width // left.width))
        size = (left.width * factor, left.height * factor)
        left, right = (im.resize(size, Image.Resampling.NEAREST) for im in (left, right))
        image = Image.new("RGB", (2 * size[0] + GAP_PX, size[1]), (255, 255, 255))
        image.paste(left, (0, 0))
        image.paste(right, (size[0] + GAP_PX, 0))
        # Our Paeth + RLE writer: PIL's adaptive filter and default zlib took ~0.1 s per enlarged pair,
        # a fixed cost of every translate run (the preview is not data: its bytes are free to change).
        pairs.append((key, encode_png_rgb(np.asarray(image))))
    if not pairs:
        raise ValueError(f"{translated.ref}: no frames to preview")
    return pairs


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as opened:
        return opened.convert("RGB")
