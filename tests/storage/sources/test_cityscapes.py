"""Cityscapes importer: a generated leftImg8bit/gtFine tree, discovered and loaded."""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np
import pytest

from sim2real.storage import schema
from sim2real.storage.sources.base import get_format

from .conftest import load_errors

H, W = 16, 32


def _label_maps() -> tuple[np.ndarray, np.ndarray]:
    """Label ids and instance ids: road, a car (26001), a person (24000), a caravan (29000), junk."""
    labels = np.full((H, W), 7, dtype=np.uint8)  # road
    labels[:4, :] = 4  # static: known, ignored
    labels[4:6, :8] = 40  # not a Cityscapes id: unknown
    inst = labels.astype(np.uint16).copy()
    labels[8:12, 2:10] = 26
    inst[8:12, 2:10] = 26001
    labels[6:14, 20:23] = 24
    inst[6:14, 20:23] = 24000
    labels[10:13, 26:30] = 29
    inst[10:13, 26:30] = 29000
    return labels, inst


def _write_frame(root, save_image, rgb, split, city, seq, frame, labels=None, inst=None) -> bytes:
    stem = f"{city}_{seq:06d}_{frame:06d}"
    data = save_image(os.path.join(root, "leftImg8bit", split, city, stem + "_leftImg8bit.png"), rgb)
    gt = os.path.join(root, "gtFine", split, city, stem)
    if labels is not None:
        save_image(gt + "_gtFine_labelIds.png", labels)
        save_image(gt + "_gtFine_instanceIds.png", inst)
        save_image(gt + "_gtFine_color.png", np.zeros((H, W, 3), np.uint8))  # ignored by the importer
    return data


@pytest.fixture
def cityscapes_root(tmp_path, save_image, random_rgb):
    root = str(tmp_path / "cityscapes")
    labels, inst = _label_maps()
    originals = {}
    for i, (city, seq, frame) in enumerate([("aachen", 0, 19), ("aachen", 1, 19), ("bochum", 0, 3)]):
        originals[f"{city}_{seq:06d}_{frame:06d}"] = _write_frame(
            root, save_image, random_rgb(H, W, i), "train", city, seq, frame, labels, inst)
    _write_frame(root, save_image, random_rgb(H, W, 9), "val", "lindau", 0, 0, labels, inst)
    return root, originals


def test_discover_lists_split_sorted(cityscapes_root):
    root, originals = cityscapes_root
    frames = get_format("cityscapes").discover(root, {"split": "train"})
    assert [f.key for f in frames] == sorted(originals)
    val = get_format("cityscapes").discover(root, {"split": "val"})
    assert [f.key for f in val] == ["lindau_000000_000000"]
    with pytest.raises(FileNotFoundError, match="test"):
        get_format("cityscapes").discover(root, {"split": "test"})


def test_load_maps_ids_boxes_and_keeps_bytes(cityscapes_root, decode_png, decode_json):
    root, originals = cityscapes_root
    fmt = get_format("cityscapes")
    frame = fmt.discover(root, {"split": "train"})[0]
    loaded = fmt.load(frame)
    m = loaded.members
    assert hashlib.sha256(m[schema.RGB_PNG]).digest() == hashlib.sha256(originals[frame.key]).digest()
    seg = decode_png(m[schema.SEG])
    assert seg.dtype == np.uint8 and seg.shape == (H, W)
    assert seg[15, 0] == 0 and seg[0, 0] == 255 and seg[4, 0] == 255  # road, static, unknown 40
    assert seg[9, 5] == 13 and seg[7, 21] == 11 and seg[11, 27] == 255  # car, person, caravan
    assert loaded.unknown_ids == {40: 16}  # only the id Cityscapes does not define; static is known
    with open(frame.files["seg"], "rb") as handle:
        assert m[schema.SEG_SRC] == handle.read()
    inst = decode_png(m[schema.INST])
    assert inst.dtype == np.uint16 and inst[9, 5] == 26001 and inst[0, 0] == 0
    boxes = decode_json(m[schema.BOXES])
    assert boxes == [
        {"bbox_xyxy": [20, 6, 23, 14], "instance": 24000, "label": "person"},
        {"bbox_xyxy": [2, 8, 10, 12], "instance": 26001, "label": "car"},
    ]
    meta = decode_json(m[schema.META])
    assert meta["source"] == "cityscapes" and meta["city"] == "aachen" and meta["frame"] == 19
    assert meta["dropped_instances"] == {"caravan": 1}
    schema.check_members(frame.key, m)


def test_bad_frames_name_the_file(cityscapes_root, save_image, random_rgb):
    root, _ = cityscapes_root
    labels, inst = _label_maps()
    _write_frame(root, save_image, random_rgb(H, W, 5), "train", "zurich", 0, 1)  # no labels
    _write_frame(root, save_image, random_rgb(H + 2, W, 6), "train", "zurich", 0, 2, labels, inst)
    errors = load_errors("cityscapes", root, {"split": "train"})
    assert re.search("labelIds.png.*missing seg file", errors["zurich_000000_000001"])
    assert "32x16 != image size 32x18" in errors["zurich_000000_000002"]


def test_mapping_table_is_json_and_complete():
    table = get_format("cityscapes").mapping_table()
    assert table["label_id_to_train_id"]["7"] == 0 and table["label_id_to_train_id"]["33"] == 18
    assert table["instance_class_to_detection"]["24"] == "person"


def test_ingest_round_trip(cityscapes_root, ingest, save_image, random_rgb):
    root, originals = cityscapes_root
    _write_frame(root, save_image, random_rgb(H, W, 5), "train", "zurich", 0, 1)  # no labels: quarantined
    version, raw, decoded = ingest(root, "cityscapes", {"split": "train"})
    assert sorted(raw) == sorted(originals) and version.info["quarantined"] == 1
    assert version.quarantine().to_pylist()[0]["reason"] == "missing seg file"
    assert version.info["unknown_ids"] == {"40": 16 * len(originals)}
    assert version.info["mapping_table"]["label_id_to_train_id"]["26"] == 13
    for key, data in originals.items():
        assert raw[key]["rgb.png"] == data  # original bytes preserved
        sample = decoded[key]
        assert sample["seg"][9, 5] == 13 and sample["seg"][15, 0] == 0 and sample["seg"][4, 0] == 255
        assert sample["inst"][7, 21] == 24000
        assert [(b["label"], b["bbox_xyxy"]) for b in sample["boxes"]] == [
            ("person", [20, 6, 23, 14]), ("car", [2, 8, 10, 12])]
        assert sample["meta"]["sha256"]["rgb.png"] == hashlib.sha256(data).hexdigest()
