"""BDD100K importer: generated 10k images, sem_seg masks and a det_20 JSON."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from sim2real.storage import schema
from sim2real.storage.sources.base import get_format

from .conftest import load_errors

H, W = 16, 32
NAMES = ["7d06fefd-f7be05a6", "7d128593-0ccfea4c", "a91b7555-00000590"]


def _det_record(name: str) -> dict:
    return {
        "name": name + ".jpg",
        "attributes": {"weather": "clear", "timeofday": "daytime", "scene": "city street"},
        "timestamp": 10000,
        "labels": [
            {"id": "0", "category": "car", "attributes": {"occluded": False},
             "box2d": {"x1": 2.4, "y1": 3.0, "x2": 9.6, "y2": 7.0}},
            {"id": "1", "category": "pedestrian", "box2d": {"x1": 20.0, "y1": 1.0, "x2": 40.0, "y2": 15.0}},
            {"id": "2", "category": "traffic sign", "box2d": {"x1": 0.0, "y1": 0.0, "x2": 3.0, "y2": 3.0}},
            {"id": "3", "category": "car", "box2d": {"x1": 50.0, "y1": 0.0, "x2": 60.0, "y2": 3.0}},
        ],
    }


@pytest.fixture
def bdd_root(tmp_path, save_image, random_rgb):
    root = str(tmp_path / "bdd100k")
    mask = np.zeros((H, W), np.uint8)
    mask[:4] = 10  # sky
    mask[8:, 16:] = 13  # car
    mask[0, :5] = 255  # ignore (known)
    originals = {}
    for i, name in enumerate(NAMES):
        originals[name] = save_image(os.path.join(root, "images/10k/train", name + ".jpg"),
                                     random_rgb(H, W, i), fmt="JPEG")
        frame_mask = mask.copy()
        if i == 1:
            frame_mask[15, :3] = 42  # not a trainId: unknown
        save_image(os.path.join(root, "labels/sem_seg/masks/train", name + ".png"), frame_mask)
    det = [_det_record(NAMES[0]), _det_record(NAMES[1])]  # the third image has no detection record
    os.makedirs(os.path.join(root, "labels/det_20"))
    with open(os.path.join(root, "labels/det_20/det_train.json"), "w") as handle:
        json.dump(det, handle)
    return root, originals


def test_load_masks_boxes_and_bytes(bdd_root, decode_png, decode_json):
    root, originals = bdd_root
    fmt = get_format("bdd100k")
    frames = fmt.discover(root, {"split": "train"})
    assert [f.key for f in frames] == NAMES
    first, second, third = (fmt.load(f) for f in frames)

    assert first.members[schema.RGB_JPG] == originals[NAMES[0]]
    assert schema.SEG_SRC not in first.members and first.unknown_ids == {}  # canonical mask passes as is
    with open(frames[0].files["seg"], "rb") as handle:
        assert first.members[schema.SEG] == handle.read()
    boxes = decode_json(first.members[schema.BOXES])
    assert boxes == [
        {"bbox_xyxy": [2, 3, 10, 8], "instance": 1, "label": "car", "source_id": "0"},
        {"bbox_xyxy": [20, 1, 32, 16], "instance": 2, "label": "person", "source_id": "1"},
    ]
    meta = decode_json(first.members[schema.META])
    assert meta["dropped_boxes"] == {"traffic sign": 1, "box outside the image": 1}
    assert meta["weather"] == "clear" and meta["time_of_day"] == "daytime" and meta["source"] == "bdd100k"

    seg = decode_png(second.members[schema.SEG])
    assert second.unknown_ids == {42: 3} and seg[15, 0] == 255 and seg[15, 20] == 13 and seg[0, 10] == 10
    assert schema.SEG_SRC in second.members

    assert schema.BOXES not in third.members  # no detection record: unknown, not "no objects"
    assert decode_json(third.members[schema.META])["boxes"].startswith("absent")
    for frame, loaded in zip(frames, (first, second, third), strict=True):
        schema.check_members(frame.key, loaded.members)


def test_missing_mask_and_bad_image(bdd_root, save_image, random_rgb):
    root, _ = bdd_root
    save_image(os.path.join(root, "images/10k/train/zz-nomask.jpg"), random_rgb(H, W, 7), fmt="JPEG")
    with open(os.path.join(root, "images/10k/train/zz-truncated.jpg"), "wb") as handle:
        handle.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    save_image(os.path.join(root, "labels/sem_seg/masks/train/zz-truncated.png"), np.zeros((H, W), np.uint8))
    errors = load_errors("bdd100k", root, {"split": "train"})
    assert re.search("zz-nomask.png.*missing seg file", errors["zz-nomask"])
    assert re.search("zz-truncated.jpg.*unreadable rgb", errors["zz-truncated"])


def test_ingest_round_trip(bdd_root, ingest):
    root, originals = bdd_root
    version, raw, decoded = ingest(root, "bdd100k", {"split": "train"})
    assert sorted(raw) == NAMES and version.info["unknown_ids"] == {"42": 3}
    for name in NAMES:
        assert raw[name]["rgb.jpg"] == originals[name]
    assert decoded[NAMES[1]]["seg"][15, 0] == 255 and decoded[NAMES[1]]["seg"][15, 20] == 13
    assert [b["label"] for b in decoded[NAMES[0]]["boxes"]] == ["car", "person"]
    assert "boxes.json" not in raw[NAMES[2]]


def _record_2018(name: str) -> dict:
    """A frame of BDD100K's 2018 label files: ``person``/``bike``/``motor`` and poly2d-only labels."""
    box = {"x1": 1.0, "y1": 1.0, "x2": 5.0, "y2": 5.0}
    return {
        "name": name + ".jpg",
        "attributes": {"weather": "rainy", "timeofday": "night", "scene": "highway"},
        "labels": [
            {"id": 0, "category": "person", "box2d": box},
            {"id": 1, "category": "bike", "box2d": box},
            {"id": 2, "category": "motor", "box2d": box},
            {"id": 3, "category": "traffic light", "box2d": box},
            {"id": 4, "category": "lane", "poly2d": [{"vertices": [[0, 0], [4, 4]]}]},
            {"id": 5, "category": "drivable area", "poly2d": [{"vertices": [[0, 0], [4, 4]]}]},
        ],
    }


def test_2018_vocabulary_is_mapped_and_drops_are_counted_per_class(bdd_root, ingest):
    """Issue 16 item 3a: person/bike/motor (2018) are detection classes; drops are counted per class."""
    root, _ = bdd_root
    os.remove(os.path.join(root, "labels/det_20/det_train.json"))
    with open(os.path.join(root, "labels/bdd100k_labels_images_train.json"), "w") as handle:
        json.dump([_record_2018(name) for name in NAMES], handle)
    version, _, decoded = ingest(root, "bdd100k", {"split": "train"})
    for name in NAMES:
        assert sorted(b["label"] for b in decoded[name]["boxes"]) == ["bicycle", "motorcycle", "person"]
        assert decoded[name]["meta"]["dropped_boxes"] == {"drivable area": 1, "lane": 1, "traffic light": 1}
    assert version.info["dropped_boxes"] == {"drivable area": 3, "lane": 3, "traffic light": 3}


def test_2020_drops_are_summed_in_version_json(bdd_root, ingest):
    root, _ = bdd_root
    version, _, _ = ingest(root, "bdd100k", {"split": "train"})
    # two frames with records: each drops one traffic sign and one box outside the image
    assert version.info["dropped_boxes"] == {"box outside the image": 2, "traffic sign": 2}
    # the third image has no detection record: no boxes.json, counted as "without labels", not empty
    assert version.info["frames_without_labels"] == {"boxes.json": 1, "seg.png": 0, "inst.png": 3}
