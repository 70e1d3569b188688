"""SHIFT importer: generated discrete/images/{split}/front with img/semseg folders or zips + det_2d.json."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.sources.base import BadFrame, get_format

H, W = 16, 32
FRAMES = [("0123-4567", 0), ("0123-4567", 10), ("89ab-cdef", 0)]


def _semseg() -> np.ndarray:
    """SHIFT-style mask: class id in the red channel (legacy CARLA ids)."""
    ids = np.full((H, W), 13, np.uint8)  # sky
    ids[8:] = 7  # road
    ids[13, :] = 6  # road line → road
    ids[9:12, 3:9] = 10  # vehicle → car
    ids[5:14, 24:26] = 4  # pedestrian → person
    ids[0, :4] = 19  # static: known, ignored
    ids[0, 4] = 40  # unknown
    out = np.zeros((H, W, 3), np.uint8)
    out[..., 0] = ids
    return out


def _det_frame(seq: str, number: int) -> dict:
    return {
        "name": f"{number:08d}_img_front.jpg", "videoName": seq, "frameIndex": number // 10,
        "attributes": {"weather_coarse": "rainy", "timeofday_coarse": "night"},
        "labels": [
            {"id": "5", "category": "car", "box2d": {"x1": 3.0, "y1": 9.0, "x2": 8.0, "y2": 11.0}},
            {"id": "6", "category": "pedestrian", "box2d": {"x1": 24.0, "y1": 5.0, "x2": 25.0, "y2": 13.0}},
        ],
    }


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _write_view(view_dir: str, random_rgb, zipped: bool) -> dict[str, bytes]:
    """Write img + semseg (folders or zips) and det_2d.json; the last frame has no mask."""
    members = {}
    originals = {}
    for i, (seq, number) in enumerate(FRAMES):
        data = _encode(random_rgb(H, W, i), "JPEG")
        members[f"img/{seq}/{number:08d}_img_front.jpg"] = data
        originals[f"{seq}_{number:08d}_front"] = data
        if i < 2:
            members[f"semseg/{seq}/{number:08d}_semseg_front.png"] = _encode(_semseg(), "PNG")
    os.makedirs(view_dir, exist_ok=True)
    for group in ("img", "semseg"):
        group_members = {k.split("/", 1)[1]: v for k, v in members.items() if k.startswith(group + "/")}
        if zipped:
            with zipfile.ZipFile(os.path.join(view_dir, f"{group}.zip"), "w") as archive:
                for name, data in sorted(group_members.items()):
                    archive.writestr(name, data)
        else:
            for name, data in group_members.items():
                os.makedirs(os.path.dirname(os.path.join(view_dir, group, name)), exist_ok=True)
                with open(os.path.join(view_dir, group, name), "wb") as handle:
                    handle.write(data)
    with open(os.path.join(view_dir, "det_2d.json"), "w") as handle:
        json.dump({"frames": [_det_frame(s, n) for s, n in FRAMES[:1]], "config": {}}, handle)
    return originals


@pytest.mark.parametrize("zipped", [False, True], ids=["folders", "zips"])
def test_discover_and_load(tmp_path, random_rgb, decode_png, decode_json, zipped):
    root = str(tmp_path / "SHIFT")
    originals = _write_view(os.path.join(root, "discrete/images/val/front"), random_rgb, zipped)
    fmt = get_format("shift")
    frames = fmt.discover(root, {"split": "val"})
    assert [f.key for f in frames] == sorted(originals)
    loaded = fmt.load(frames[0])
    seg = decode_png(loaded.members[schema.SEG])
    assert seg[1, 10] == 10 and seg[15, 0] == 0 and seg[13, 20] == 0 and seg[10, 4] == 13 and seg[6, 24] == 11
    assert seg[0, 0] == 255 and loaded.unknown_ids == {40: 1}
    assert loaded.members[schema.RGB_JPG] == originals[frames[0].key]
    assert decode_json(loaded.members[schema.BOXES]) == [
        {"bbox_xyxy": [3, 9, 9, 12], "instance": 1, "label": "car", "source_id": "5"},
        {"bbox_xyxy": [24, 5, 26, 14], "instance": 2, "label": "person", "source_id": "6"},
    ]
    meta = decode_json(loaded.members[schema.META])
    assert (meta["sequence"], meta["frame"], meta["weather"]) == ("0123-4567", 0, "rainy")
    assert meta["files"]["rgb"] == "00000000_img_front.jpg"
    assert schema.BOXES not in fmt.load(frames[1]).members  # not in det_2d.json
    with pytest.raises(BadFrame, match="00000000_semseg_front.png.*missing seg file"):
        fmt.load(frames[2])


@pytest.mark.parametrize("zipped", [False, True], ids=["folders", "zips"])
def test_ingest_round_trip(tmp_path, random_rgb, ingest, zipped):
    root = str(tmp_path / "shift_images")
    originals = _write_view(os.path.join(root, "train/front"), random_rgb, zipped=zipped)
    version, raw, decoded = ingest(root, "shift", {"split": "train"})
    assert len(raw) == 2 and version.info["quarantined"] == 1 and version.info["unknown_ids"] == {"40": 2}
    for key in raw:
        assert raw[key]["rgb.jpg"] == originals[key]
        assert decoded[key]["seg"][10, 4] == 13
    assert [b["label"] for b in decoded["0123-4567_00000000_front"]["boxes"]] == ["car", "person"]


def test_ego_vehicle_hood_is_ignore_not_car(tmp_path, save_image, random_rgb, decode_png, decode_json):
    """Issue 16 item 6b: SHIFT's front camera sees its own hood as class 10 (vehicle)."""
    from sim2real.storage.sources.shift import ego_vehicle_mask
    from sim2real.storage.taxonomy import TRAIN_ID_BY_NAME

    h, w = 40, 64
    ids = np.full((h, w), 7, np.uint8)  # road
    ids[:10] = 13  # sky
    hood = np.zeros((h, w), bool)
    for y in range(34, h):  # a hood: wider towards the bottom edge
        hood[y, 20 - 2 * (y - 34): 44 + 2 * (y - 34)] = True
    ids[hood] = 10
    ids[14:20, 4:14] = 10  # a car ahead, not touching the hood
    ids[28:34, 28:36] = 10  # a car right ahead, touching the hood: its part above the band stays car
    view = os.path.join(str(tmp_path), "shift", "discrete", "images", "train", "front")
    save_image(os.path.join(view, "img", "seq-a", "00000000_img_front.jpg"), random_rgb(h, w, 0), fmt="JPEG")
    save_image(os.path.join(view, "semseg", "seq-a", "00000000_semseg_front.png"), ids)
    fmt = get_format("shift")
    car = TRAIN_ID_BY_NAME["car"]

    loaded = fmt.load(fmt.discover(os.path.join(str(tmp_path), "shift"), {"ego_band": "0.25"})[0])
    seg = decode_png(loaded.members[schema.SEG])
    assert (seg[hood] == 255).all()  # the ego vehicle is ignore, like Cityscapes' "ego vehicle"
    assert (seg[14:20, 4:14] == car).all()  # other cars stay cars
    assert (seg[28:30, 28:36] == car).all() and (seg[30:34, 28:36] == 255).all()  # band = bottom 10 rows
    meta = decode_json(loaded.members[schema.META])
    assert meta["ego_vehicle_pixels"] == int(hood.sum()) + 4 * 8

    off = fmt.load(fmt.discover(os.path.join(str(tmp_path), "shift"), {"ego_band": "0"})[0])
    assert (decode_png(off.members[schema.SEG])[hood] == car).all()
    assert not ego_vehicle_mask(np.zeros((4, 4), bool), 0.5).any()
    with pytest.raises(ValueError, match="ego_band"):
        fmt.discover(os.path.join(str(tmp_path), "shift"), {"ego_band": "2"})


@pytest.mark.parametrize("damage", ["not_a_zip", "cut_in_half"])
def test_damaged_zip_file_is_one_user_error_naming_it(tmp_path, random_rgb, damage):
    """A SHIFT zip that is not a zip (or cut short by a download) is a ValueError naming the archive,
    which the CLI prints as one line with exit code 2 (was: zipfile.BadZipFile, a traceback)."""
    view = os.path.join(str(tmp_path), "discrete/images/train/front")
    _write_view(view, random_rgb, zipped=True)
    archive = os.path.join(view, "semseg.zip")
    with open(archive, "rb") as handle:
        data = handle.read()
    with open(archive, "wb") as handle:
        handle.write(os.urandom(64) if damage == "not_a_zip" else data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{archive}: cannot read the zip file"):
        get_format("shift").discover(str(tmp_path), {})


def test_damaged_zip_member_is_a_bad_frame(tmp_path, random_rgb):
    """A member whose bytes do not match its CRC (or do not inflate) is a quarantined frame."""
    from sim2real.storage.sources.source_files import read_bytes

    view = os.path.join(str(tmp_path), "discrete/images/train/front")
    _write_view(view, random_rgb, zipped=True)
    archive = os.path.join(view, "img.zip")
    with zipfile.ZipFile(archive) as handle:
        info = handle.infolist()[0]
    with open(archive, "r+b") as handle:
        handle.seek(info.header_offset + 30 + len(info.filename) + 20)  # inside the member's data
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    frames = get_format("shift").discover(str(tmp_path), {})
    frame = next(f for f in frames if info.filename in f.files["rgb"])
    with pytest.raises(BadFrame, match="cannot read rgb file: .*CRC"):
        read_bytes(frame.key, frame.files["rgb"], "rgb")
