"""CARLA importer: generated rgb/ semantic/ instance/ camera folders (raw tags and CityScapesPalette)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sim2real.storage import schema
from sim2real.storage.sources.base import BadFrame, get_format
from sim2real.storage.sources.carla import CARLA_LEGACY_TAGS, CARLA_TAGS

H, W = 16, 32


def _tag_map() -> np.ndarray:
    tags = np.full((H, W), 11, np.uint8)  # sky
    tags[8:] = 1  # roads
    tags[12, :] = 24  # road line → road
    tags[9:13, 2:9] = 14  # car
    tags[6:14, 20:22] = 12  # pedestrian
    tags[0, :3] = 22  # other: known, ignored
    return tags


def _raw(tags: np.ndarray) -> np.ndarray:
    """How save_to_disk stores the raw semantic camera: tag in red, green = blue = 0, alpha 255."""
    out = np.zeros((H, W, 4), np.uint8)
    out[..., 0], out[..., 3] = tags, 255
    return out


def _palette(tags: np.ndarray) -> np.ndarray:
    colours = np.zeros((256, 3), np.uint8)
    for tag in CARLA_TAGS:
        colours[tag.tag] = tag.color
    return colours[tags]


def _instance(tags: np.ndarray) -> np.ndarray:
    out = np.zeros((H, W, 4), np.uint8)
    out[..., 0], out[..., 3] = tags, 255
    out[9:13, 2:9, 1:3] = (7, 1)  # car: id 7 + 256 * 1 = 263
    out[6:14, 20:22, 1] = 9  # pedestrian: id 9
    return out


@pytest.fixture
def carla_root(tmp_path, save_image, random_rgb):
    root = str(tmp_path / "carla_out")
    tags = _tag_map()
    originals = {}
    for frame in (120, 121, 122):
        stem = f"{frame:06d}"
        originals[stem] = save_image(os.path.join(root, "rgb", stem + ".png"), random_rgb(H, W, frame))
        save_image(os.path.join(root, "instance", stem + ".png"), _instance(tags))
    save_image(os.path.join(root, "semantic", "000120.png"), _raw(tags))
    palette = _palette(tags)
    palette[15, 28:] = (1, 2, 3)  # a colour outside the palette
    save_image(os.path.join(root, "semantic", "000121.png"), palette)
    return root, originals  # 000122 has no semantic image


def test_raw_and_palette_frames(carla_root, decode_png, decode_json):
    root, originals = carla_root
    fmt = get_format("carla")
    frames = fmt.discover(root, {})
    assert [f.key for f in frames] == ["000120", "000121", "000122"]
    raw, palette = fmt.load(frames[0]), fmt.load(frames[1])
    for loaded in (raw, palette):
        seg = decode_png(loaded.members[schema.SEG])
        assert seg[0, 10] == 10 and seg[15, 0] == 0 and seg[12, 15] == 0 and seg[10, 4] == 13
        assert seg[7, 20] == 11 and seg[0, 0] == 255
        assert decode_json(loaded.members[schema.BOXES]) == [
            {"bbox_xyxy": [20, 6, 22, 14], "instance": 9, "label": "person"},
            {"bbox_xyxy": [2, 9, 9, 13], "instance": 263, "label": "car"},
        ]
        assert decode_png(loaded.members[schema.INST])[10, 4] == 263
    assert raw.unknown_ids == {} and palette.unknown_ids == {"#010203 (1,2,3)": 4}
    assert decode_json(raw.members[schema.META])["label_encoding"] == "raw"
    assert decode_json(palette.members[schema.META])["label_encoding"] == "palette"
    assert raw.members[schema.RGB_PNG] == originals["000120"]
    with pytest.raises(BadFrame, match="semantic/000122.png.*missing seg file"):
        fmt.load(frames[2])


def test_legacy_tags_in_sequences(tmp_path, save_image, random_rgb, decode_png):
    root = str(tmp_path / "runs")
    tags = np.full((H, W), 13, np.uint8)  # legacy sky
    tags[8:] = 7  # legacy road
    tags[9:12, 3:8] = 10  # legacy vehicles → car
    tags[0, 0] = 23  # not a legacy tag
    for seq in ("town01", "town02"):
        save_image(os.path.join(root, seq, "rgb", "00005.jpg"), random_rgb(H, W, 1), fmt="JPEG")
        save_image(os.path.join(root, seq, "semantic", "00005.png"), _raw(tags))
    fmt = get_format("carla")
    frames = fmt.discover(root, {"tags": "0.9.13"})
    assert [f.key for f in frames] == ["town01_00005", "town02_00005"]
    loaded = fmt.load(frames[1])
    seg = decode_png(loaded.members[schema.SEG])
    assert seg[1, 1] == 10 and seg[15, 0] == 0 and seg[10, 4] == 13 and seg[0, 0] == 255
    assert loaded.unknown_ids == {23: 1} and schema.RGB_JPG in loaded.members
    assert schema.BOXES not in loaded.members  # no instance camera: boxes unknown
    assert len(CARLA_LEGACY_TAGS) == 23 and len(CARLA_TAGS) == 29
    with pytest.raises(ValueError, match="expected a CARLA release"):
        fmt.discover(root, {"tags": "0.9.x"})


def test_ingest_round_trip(carla_root, ingest):
    root, originals = carla_root
    version, raw, decoded = ingest(root, "carla")
    assert sorted(raw) == ["000120", "000121"] and version.info["quarantined"] == 1
    assert version.info["unknown_ids"] == {"#010203 (1,2,3)": 4}
    assert version.info["mapping_table"]["tag_tables"]["0.9.14"]["14"]["name"] == "Car"
    for key in raw:
        assert raw[key]["rgb.png"] == originals[key]
        assert decoded[key]["seg"][10, 4] == 13 and len(decoded[key]["boxes"]) == 2


def test_carla_0_9_9_palette_has_its_own_table(tmp_path, save_image, random_rgb, decode_png):
    """Issue 16 item 6a: a 0.9.6 CityScapesPalette export (fence (190,153,153), other (250,170,160))."""
    from sim2real.storage.sources.carla import CARLA_0_9_9_TAGS, tag_table_name
    from sim2real.storage.taxonomy import TRAIN_ID_BY_NAME

    colour = {tag.name: tag.color for tag in CARLA_0_9_9_TAGS}
    seg = np.zeros((H, W, 3), np.uint8) + np.array(colour["Road"], np.uint8)
    seg[:4] = colour["Building"]
    seg[4:6] = colour["Fence"]
    seg[6, :5] = colour["Other"]
    seg[7, :5] = colour["Vehicles"]
    root = str(tmp_path / "carla096")
    save_image(os.path.join(root, "rgb", "000001.png"), random_rgb(H, W, 1))
    save_image(os.path.join(root, "semantic", "000001.png"), seg)
    fmt = get_format("carla")
    assert tag_table_name("0.9.6") == tag_table_name("0.8.4") == "0.9.9"
    assert tag_table_name("0.9.10") == "0.9.13" and tag_table_name("0.9.15") == "0.9.14"
    loaded = fmt.load(fmt.discover(root, {"tags": "0.9.6"})[0])
    train = decode_png(loaded.members[schema.SEG])
    assert loaded.unknown_ids == {}  # every pixel known
    assert (train[4:6] == TRAIN_ID_BY_NAME["fence"]).all() and (train[6, :5] == 255).all()
    assert (train[7, :5] == TRAIN_ID_BY_NAME["car"]).all()
    assert (train[:4] == TRAIN_ID_BY_NAME["building"]).all()
    # the README's old advice: the 0.9.13 table does not know the old fence colour
    wrong = fmt.load(fmt.discover(root, {"tags": "0.9.13"})[0])
    assert wrong.unknown_ids["#be9999 (190,153,153)"] == 2 * W
    assert wrong.unknown_ids["#faaaa0 (250,170,160)"] == 5
    with pytest.raises(ValueError, match="tags='latest'"):
        fmt.discover(root, {"tags": "latest"})
