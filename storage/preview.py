"""A before/after preview of a translated version: source frames beside their translations, one PNG."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image

from sim2real.storage import schema
from sim2real.storage.shards import read_shard
from sim2real.storage.versions import DatasetStore, Version


def _thumbnail(data: bytes, width: int) -> Image.Image:
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.Resampling.BILINEAR) if image.width > width else image


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


def before_after_grid(
    store: DatasetStore, source: Version, translated: Version, count: int = 4, max_width: int = 256
) -> bytes:
    """A PNG with up to ``count`` frames of ``translated``: source image left, translation right."""
    after = _images(store, translated.shard_urls, None, count)
    before = _images(store, source.shard_urls, set(after), count)
    pairs = [
        (_thumbnail(before[k], max_width), _thumbnail(after[k], max_width)) for k in after if k in before
    ]
    if not pairs:
        raise ValueError(f"{translated.ref}: no frames to preview")
    width = max(b.width for b, _ in pairs)
    grid = Image.new("RGB", (2 * width + 4, sum(b.height + 4 for b, _ in pairs)), (255, 255, 255))
    top = 0
    for left_image, right_image in pairs:
        grid.paste(left_image, (0, top))
        grid.paste(right_image, (width + 4, top))
        top += left_image.height + 4
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()
