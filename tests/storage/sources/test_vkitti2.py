"""Virtual KITTI 2 importer: generated Scene*/variation/frames tree, colors.txt, bbox.txt, info.txt."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.sources.base import BadFrame, get_format
from sim2real.storage.sources.vkitti2 import DEFAULT_COLOURS

H, W = 16, 32
COLORS_TXT = "Category r g b\n" + "".join(f"{n} {r} {g} {b}\n" for n, (r, g, b) in DEFAULT_COLOURS.items())
INFO_TXT = "trackID label model color\n0 Car Sedan4Door Black\n1 Van Van Red\n2 Truck Truck White\n"
BBOX_TXT = (
    "frame cameraID trackID left right top bottom number_pixels truncation_ratio occupancy_ratio isMoving\n"
    "0 0 0 2 8 9 12 28 0 1 False\n"
    "0 0 1 20 24 4 10 35 0 1 True\n"
    "0 0 2 25 31 0 3 0 0 0 False\n"  # no visible pixel: dropped
    "0 1 0 3 9 9 12 28 0 1 False\n"
)


def _class_colours() -> np.ndarray:
    seg = np.zeros((H, W, 3), np.uint8)
    seg[:] = DEFAULT_COLOURS["Sky"]
    seg[8:] = DEFAULT_COLOURS["Road"]
    seg[9:13, 2:9] = DEFAULT_COLOURS["Car"]
    seg[4:11, 20:25] = DEFAULT_COLOURS["Van"]
    seg[0, :3] = DEFAULT_COLOURS["Misc"]  # known, ignored
    return seg


def _instances() -> np.ndarray:
    inst = np.zeros((H, W), np.uint8)
    inst[9:13, 2:9] = 1  # track 0
    inst[4:11, 20:25] = 2  # track 1
    return inst


def _save_palette(path: str) -> None:
    """Instance maps ship as palette PNGs: index = trackID + 1, each index its own colour."""
    image = Image.fromarray(_instances(), mode="P")
    image.putpalette([v for i in range(256) for v in (i, (37 * i) % 256, (91 * i) % 256)])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)


def _write_variation(root, save_image, random_rgb, scene, variation, textgt: bool) -> dict[str, bytes]:
    base = os.path.join(root, scene, variation)
    originals = {}
    for camera in ("Camera_0", "Camera_1"):
        for number in (0, 1):
            rgb_path = os.path.join(base, "frames/rgb", camera, f"rgb_{number:05d}.jpg")
            key = f"{scene}_{variation}_{camera}_{number:05d}"
            originals[key] = save_image(rgb_path, random_rgb(H, W, number), fmt="JPEG")
            seg = _class_colours()
            if camera == "Camera_1" and number == 1:
                seg[15, :2] = (1, 2, 3)  # not in colors.txt
            stem = f"{number:05d}.png"
            save_image(os.path.join(base, "frames/classSegmentation", camera, "classgt_" + stem), seg)
            _save_palette(os.path.join(base, "frames/instanceSegmentation", camera, "instancegt_" + stem))
    text_dir = os.path.join(base, "textgt") if textgt else base
    os.makedirs(text_dir, exist_ok=True)
    files = {"info.txt": INFO_TXT, **({"colors.txt": COLORS_TXT, "bbox.txt": BBOX_TXT} if textgt else {})}
    for name, text in files.items():
        with open(os.path.join(text_dir, name), "w") as handle:
            handle.write(text)
    return originals


@pytest.fixture
def vkitti_root(tmp_path, save_image, random_rgb):
    root = str(tmp_path / "vkitti2")
    originals = _write_variation(root, save_image, random_rgb, "Scene01", "15-deg-left", textgt=True)
    originals.update(_write_variation(root, save_image, random_rgb, "Scene02", "fog", textgt=False))
    return root, originals


def test_discover_and_load(vkitti_root, decode_png, decode_json):
    root, originals = vkitti_root
    fmt = get_format("vkitti2")
    frames = {f.key: f for f in fmt.discover(root, {})}
    assert list(frames) == sorted(originals)
    loaded = fmt.load(frames["Scene01_15-deg-left_Camera_0_00000"])
    seg = decode_png(loaded.members[schema.SEG])
    assert seg[1, 10] == 10 and seg[15, 0] == 0 and seg[10, 4] == 13 and seg[5, 21] == 13 and seg[0, 0] == 255
    assert loaded.unknown_ids == {}
    assert loaded.members[schema.RGB_JPG] == originals["Scene01_15-deg-left_Camera_0_00000"]
    assert decode_png(loaded.members[schema.INST])[10, 4] == 1
    assert decode_json(loaded.members[schema.BOXES]) == [  # from bbox.txt, instance = trackID + 1
        {"bbox_xyxy": [2, 9, 9, 13], "instance": 1, "label": "car"},
        {"bbox_xyxy": [20, 4, 25, 11], "instance": 2, "label": "car"},
    ]
    meta = decode_json(loaded.members[schema.META])
    assert meta["dropped_boxes"] == {"not visible": 1} and meta["variation"] == "15-deg-left"
    other = fmt.load(frames["Scene01_15-deg-left_Camera_1_00001"])
    assert other.unknown_ids == {"#010203 (1,2,3)": 2} and decode_json(other.members[schema.BOXES]) == []
    # no bbox.txt and no colors.txt: boxes from the instance map, built-in colours
    fog = fmt.load(frames["Scene02_fog_Camera_0_00001"])
    fog_boxes = decode_json(fog.members[schema.BOXES])
    assert [b["bbox_xyxy"] for b in fog_boxes] == [[2, 9, 9, 13], [20, 4, 25, 11]]
    assert decode_png(fog.members[schema.SEG])[10, 4] == 13
    assert [f.key for f in fmt.discover(root, {"variation": "fog"})][0].startswith("Scene02_fog")


def test_bad_label_size(vkitti_root, save_image):
    root, _ = vkitti_root
    save_image(os.path.join(root, "Scene02/fog/frames/classSegmentation/Camera_0/classgt_00000.png"),
               np.zeros((H, W - 1, 3), np.uint8))
    fmt = get_format("vkitti2")
    frame = next(f for f in fmt.discover(root, {}) if f.key == "Scene02_fog_Camera_0_00000")
    with pytest.raises(BadFrame, match="classgt_00000.png.*31x16 != image size 32x16"):
        fmt.load(frame)


def test_ingest_round_trip(vkitti_root, ingest):
    root, originals = vkitti_root
    version, raw, decoded = ingest(root, "vkitti2", {"variation": "15-deg-left"})
    assert len(raw) == 4 and version.info["unknown_ids"] == {"#010203 (1,2,3)": 2}
    for key in raw:
        assert raw[key]["rgb.jpg"] == originals[key]
        assert decoded[key]["seg"][10, 4] == 13 and decoded[key]["inst"][5, 21] == 2
    camera_1_boxes = decoded["Scene01_15-deg-left_Camera_1_00000"]["boxes"]
    assert [b["bbox_xyxy"] for b in camera_1_boxes] == [[3, 9, 10, 13]]


def test_stray_files_and_short_bbox_rows(vkitti_root):
    """A file named like a scene (``SceneList.txt``) is not a scene (was NotADirectoryError); a bbox.txt
    row cut short is a ValueError naming the file and the row at discovery (was an unnamed unpacking
    error aborting the shard)."""
    root, originals = vkitti_root
    with open(os.path.join(root, "SceneList.txt"), "w") as handle:
        handle.write("Scene01\nScene02\n")
    fmt = get_format("vkitti2")
    assert sorted(f.key for f in fmt.discover(root, {})) == sorted(originals)
    bbox = os.path.join(root, "Scene01", "15-deg-left", "textgt", "bbox.txt")
    with open(bbox, "a") as handle:
        handle.write("1 0 0 2\n")
    with pytest.raises(ValueError, match=r"15-deg-left: malformed .*bbox.txt row '1 0 0 2' has 4 fields"):
        fmt.discover(root, {})
