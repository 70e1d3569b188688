"""GTA5 importer: generated images/ + palette labels/ with Cityscapes ids."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.sources.base import BadFrame, get_format
from sim2real.storage.taxonomy import CITYSCAPES_LABELS

H, W = 16, 32


def _palette_label(path: str, ids: np.ndarray) -> None:
    """A palette-indexed label PNG like the published ones (index = label id, Cityscapes colours)."""
    image = Image.fromarray(ids, mode="P")
    palette = [0] * 768
    for label in CITYSCAPES_LABELS:
        palette[3 * label.id: 3 * label.id + 3] = label.color
    image.putpalette(palette)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)


@pytest.fixture
def gta5_root(tmp_path, save_image, random_rgb):
    root = str(tmp_path / "gta5")
    originals = {}
    for i in range(1, 4):
        ids = np.full((H, W), 23, np.uint8)  # sky
        ids[8:] = 7  # road
        ids[10:14, 4:12] = 27  # truck
        ids[0, :2] = 1  # ego vehicle: known, ignored
        if i == 3:
            ids[15, 30:] = 34  # not a Cityscapes id
        originals[f"{i:05d}"] = save_image(os.path.join(root, "images", f"{i:05d}.png"), random_rgb(H, W, i))
        _palette_label(os.path.join(root, "labels", f"{i:05d}.png"), ids)
    save_image(os.path.join(root, "images", "00004.png"), random_rgb(H, W + 4, 4))  # size mismatch
    _palette_label(os.path.join(root, "labels", "00004.png"), np.zeros((H, W), np.uint8))
    return root, originals


def test_discover_and_load(gta5_root, decode_png):
    root, originals = gta5_root
    fmt = get_format("gta5")
    frames = fmt.discover(root, {})
    assert [f.key for f in frames] == ["00001", "00002", "00003", "00004"]
    loaded = fmt.load(frames[2])
    seg = decode_png(loaded.members[schema.SEG])
    assert seg[0, 5] == 10 and seg[15, 0] == 0 and seg[11, 5] == 14  # sky, road, truck
    assert seg[0, 0] == 255 and seg[15, 31] == 255  # ego vehicle (known), id 34 (unknown)
    assert loaded.unknown_ids == {34: 2}
    assert loaded.members[schema.RGB_PNG] == originals["00003"]
    with open(frames[2].files["seg"], "rb") as handle:
        assert loaded.members[schema.SEG_SRC] == handle.read()
    assert schema.BOXES not in loaded.members
    with pytest.raises(BadFrame, match="00004.png.*32x16 != image size 36x16"):
        fmt.load(frames[3])


def test_ingest_round_trip(gta5_root, ingest):
    root, originals = gta5_root
    version, raw, decoded = ingest(root, "gta5")
    assert sorted(raw) == sorted(originals) and version.info["quarantined"] == 1
    assert version.info["unknown_ids"] == {"34": 2}
    for key, data in originals.items():
        assert raw[key]["rgb.png"] == data
        assert decoded[key]["seg"][11, 5] == 14 and decoded[key]["boxes"] is None  # no boxes: unknown
