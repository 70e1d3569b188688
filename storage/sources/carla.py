"""CARLA camera output: RGB frames with the semantic (and optionally instance) segmentation camera.

Layout (what ``image.save_to_disk(f"{out}/{role}/{frame:06d}.png")`` gives per sensor; one folder per
sensor, the same file stem for the same frame; sequences are optional sub-folders)::

    ROOT/[{sequence}/]rgb/{frame}.png|.jpg      sensor.camera.rgb
    ROOT/[{sequence}/]semantic/{frame}.png      sensor.camera.semantic_segmentation, saved raw (tag in
                                                the red channel) or with the CityScapesPalette converter
    ROOT/[{sequence}/]instance/{frame}.png      optional sensor.camera.instance_segmentation (tag in red,
                                                instance id in green + 256 * blue)

When ``ROOT/rgb`` exists the export is one sequence; otherwise every sub-folder holding ``rgb/`` is a
sequence and the key is ``{sequence}_{frame}``.

Tags follow the CARLA release that wrote the export, option ``tags`` (default ``0.9.14``; any release
number picks its table, e.g. ``tags=0.9.6``): three tables, ``CARLA_TAGS`` (0.9.14 and later, 29 tags,
Cityscapes-like), ``CARLA_LEGACY_TAGS`` (0.9.10 to 0.9.13, 23 tags) and ``CARLA_0_9_9_TAGS`` (0.9.9 and
older, 13 tags, whose palette colours Fence and Other differently). Raw or palette is detected per
frame (raw: green and blue all zero); option ``encoding`` (``raw``/``palette``) forces it. Boxes
come from the instance camera (one per instance id of a detection-class tag; pixels with id 0 are
not instances). Releases newer than 0.9.14 use its table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.sources import convert
from sim2real.storage.sources.base import BadFrame, LoadedFrame, SourceFrame, register_format
from sim2real.storage.sources.image_files import channels_rgb, load_camera, load_label
from sim2real.storage.sources.source_files import (
    file_names,
    find_by_stem,
    present_files,
    sanitize_key,
    unique_keys,
)
from sim2real.storage.taxonomy import IGNORE_ID, TRAIN_ID_BY_NAME


@dataclass(frozen=True)
class CarlaTag:
    """One CARLA semantic tag: its value, name, CityScapesPalette colour, trainId and detection class."""

    tag: int
    name: str
    color: tuple[int, int, int]
    train_id: int
    detection: str | None = None


def _t(name: str) -> int:
    return TRAIN_ID_BY_NAME[name]


#: CARLA >= 0.9.14 (docs "Sensors reference", semantic segmentation camera). Road lines count as road.
CARLA_TAGS: tuple[CarlaTag, ...] = (
    CarlaTag(0, "Unlabeled", (0, 0, 0), IGNORE_ID),
    CarlaTag(1, "Roads", (128, 64, 128), _t("road")),
    CarlaTag(2, "SideWalks", (244, 35, 232), _t("sidewalk")),
    CarlaTag(3, "Building", (70, 70, 70), _t("building")),
    CarlaTag(4, "Wall", (102, 102, 156), _t("wall")),
    CarlaTag(5, "Fence", (190, 153, 153), _t("fence")),
    CarlaTag(6, "Pole", (153, 153, 153), _t("pole")),
    CarlaTag(7, "TrafficLight", (250, 170, 30), _t("traffic light")),
    CarlaTag(8, "TrafficSign", (220, 220, 0), _t("traffic sign")),
    CarlaTag(9, "Vegetation", (107, 142, 35), _t("vegetation")),
    CarlaTag(10, "Terrain", (152, 251, 152), _t("terrain")),
    CarlaTag(11, "Sky", (70, 130, 180), _t("sky")),
    CarlaTag(12, "Pedestrian", (220, 20, 60), _t("person"), "person"),
    CarlaTag(13, "Rider", (255, 0, 0), _t("rider"), "rider"),
    CarlaTag(14, "Car", (0, 0, 142), _t("car"), "car"),
    CarlaTag(15, "Truck", (0, 0, 70), _t("truck"), "truck"),
    CarlaTag(16, "Bus", (0, 60, 100), _t("bus"), "bus"),
    CarlaTag(17, "Train", (0, 80, 100), _t("train"), "train"),
    CarlaTag(18, "Motorcycle", (0, 0, 230), _t("motorcycle"), "motorcycle"),
    CarlaTag(19, "Bicycle", (119, 11, 32), _t("bicycle"), "bicycle"),
    CarlaTag(20, "Static", (110, 190, 160), IGNORE_ID),
    CarlaTag(21, "Dynamic", (170, 120, 50), IGNORE_ID),
    CarlaTag(22, "Other", (55, 90, 80), IGNORE_ID),
    CarlaTag(23, "Water", (45, 60, 150), IGNORE_ID),
    CarlaTag(24, "RoadLine", (157, 234, 50), _t("road")),
    CarlaTag(25, "Ground", (81, 0, 81), IGNORE_ID),
    CarlaTag(26, "Bridge", (150, 100, 100), IGNORE_ID),
    CarlaTag(27, "RailTrack", (230, 150, 140), IGNORE_ID),
    CarlaTag(28, "GuardRail", (180, 165, 180), IGNORE_ID),
)

#: CARLA <= 0.9.13 (23 tags; also SHIFT's semantic masks). "Vehicles" is one tag: mapped to car.
CARLA_LEGACY_TAGS: tuple[CarlaTag, ...] = (
    CarlaTag(0, "Unlabeled", (0, 0, 0), IGNORE_ID),
    CarlaTag(1, "Building", (70, 70, 70), _t("building")),
    CarlaTag(2, "Fence", (100, 40, 40), _t("fence")),
    CarlaTag(3, "Other", (55, 90, 80), IGNORE_ID),
    CarlaTag(4, "Pedestrian", (220, 20, 60), _t("person"), "person"),
    CarlaTag(5, "Pole", (153, 153, 153), _t("pole")),
    CarlaTag(6, "RoadLine", (157, 234, 50), _t("road")),
    CarlaTag(7, "Road", (128, 64, 128), _t("road")),
    CarlaTag(8, "SideWalk", (244, 35, 232), _t("sidewalk")),
    CarlaTag(9, "Vegetation", (107, 142, 35), _t("vegetation")),
    CarlaTag(10, "Vehicles", (0, 0, 142), _t("car"), "car"),
    CarlaTag(11, "Wall", (102, 102, 156), _t("wall")),
    CarlaTag(12, "TrafficSign", (220, 220, 0), _t("traffic sign")),
    CarlaTag(13, "Sky", (70, 130, 180), _t("sky")),
    CarlaTag(14, "Ground", (81, 0, 81), IGNORE_ID),
    CarlaTag(15, "Bridge", (150, 100, 100), IGNORE_ID),
    CarlaTag(16, "RailTrack", (230, 150, 140), IGNORE_ID),
    CarlaTag(17, "GuardRail", (180, 165, 180), IGNORE_ID),
    CarlaTag(18, "TrafficLight", (250, 170, 30), _t("traffic light")),
    CarlaTag(19, "Static", (110, 190, 160), IGNORE_ID),
    CarlaTag(20, "Dynamic", (170, 120, 50), IGNORE_ID),
    CarlaTag(21, "Water", (45, 60, 150), IGNORE_ID),
    CarlaTag(22, "Terrain", (145, 170, 100), _t("terrain")),
)

#: CARLA <= 0.9.9 (and 0.8.x): 13 tags, 0..12. Source: LibCarla/source/carla/image/CityScapesPalette.h
#: before 0.9.10 (13 palette rows: fence (190,153,153), other (250,170,160), the rest as in 0.9.10) and
#: the 0.9.10 CHANGELOG ("Added new semantic segmentation tags: RailTrack, GuardRail, TrafficLight,
#: Static, Dynamic, Water and Terrain"; Sky, Ground and Bridge came with them as tags 13-15, and fence
#: and other were recoloured to (100,40,40) and (55,90,80)). Raw tag ids 0..12 mean the same in both.
CARLA_0_9_9_TAGS: tuple[CarlaTag, ...] = tuple(
    replace(tag, color={"Fence": (190, 153, 153), "Other": (250, 170, 160)}.get(tag.name, tag.color))
    for tag in CARLA_LEGACY_TAGS if tag.tag <= 12
)

#: Each table under the newest release it describes; :func:`tag_table_name` maps any release to one.
TAG_TABLES: dict[str, tuple[CarlaTag, ...]] = {
    "0.9.9": CARLA_0_9_9_TAGS, "0.9.13": CARLA_LEGACY_TAGS, "0.9.14": CARLA_TAGS,
}
DEFAULT_TAGS = "0.9.14"


def tag_table_name(release: str) -> str:
    """The ``TAG_TABLES`` key for a CARLA release number (``"0.9.6"`` → ``"0.9.9"``); ``ValueError``."""
    try:
        wanted = tuple(int(part) for part in release.strip().split("."))
    except ValueError:
        wanted = ()
    if len(wanted) < 2:
        raise ValueError(f"carla option tags={release!r}: expected a CARLA release such as 0.9.6, 0.9.13 "
                         f"or 0.9.14")
    for name in sorted(TAG_TABLES, key=lambda n: tuple(int(p) for p in n.split("."))):
        if wanted <= tuple(int(p) for p in name.split(".")):
            return name
    return DEFAULT_TAGS
ROLE_DIRS = {"rgb": "rgb", "seg": "semantic", "inst": "instance"}
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def tag_table_json(tags: tuple[CarlaTag, ...]) -> dict[str, Any]:
    """A tag table as JSON (recorded in ``version.json``)."""
    return {
        str(t.tag): {"name": t.name, "color": list(t.color), "train_id": t.train_id, "detection": t.detection}
        for t in tags
    }


def tags_to_train_ids(
    key: str, location: str, tags: np.ndarray, table: tuple[CarlaTag, ...]
) -> tuple[np.ndarray, dict[int, int]]:
    """(trainIds, unknown counts) of a tag map through ``table``."""
    try:
        return convert.map_ids(tags, {t.tag: t.train_id for t in table})
    except ValueError as exc:
        raise BadFrame(key, location, str(exc)) from None


def semantic_tags(
    key: str, location: str, image: Image.Image, table: tuple[CarlaTag, ...], encoding: str
) -> tuple[np.ndarray, dict[int, int], str]:
    """(trainIds, unknown counts, encoding used) of a semantic camera image, raw or palette."""
    if image.mode in ("L", "P"):
        return (*tags_to_train_ids(key, location, np.asarray(image).astype(np.int64), table), "raw")
    colours = channels_rgb(key, location, "seg", image)
    if encoding == "auto":
        encoding = "raw" if not colours[..., 1:].any() else "palette"
    if encoding == "raw":
        return (*tags_to_train_ids(key, location, colours[..., 0].astype(np.int64), table), "raw")
    train_ids, unknown = convert.map_colours(colours, {t.color: t.train_id for t in table})
    return train_ids, unknown, "palette"


def instance_members(
    key: str, location: str, image: Image.Image, table: tuple[CarlaTag, ...]
) -> tuple[bytes, bytes]:
    """``inst.png`` and ``boxes.json`` bytes from an instance-camera image."""
    colours = channels_rgb(key, location, "inst", image).astype(np.int64)
    tags, ids = colours[..., 0], colours[..., 1] + 256 * colours[..., 2]
    detection = {t.tag: t.detection for t in table if t.detection}
    is_thing = np.isin(tags, list(detection)) & (ids > 0)
    inst = np.where(is_thing, ids, 0).astype(np.uint16)
    label_of = {}
    for instance in np.unique(inst[is_thing]):
        instance_tags = tags[inst == instance]
        label_of[int(instance)] = detection[int(np.bincount(instance_tags).argmax())]
    return convert.encode_png(inst), convert.json_bytes(convert.boxes_from_instances(inst, label_of))


@register_format("carla")
class CarlaFormat:
    """Importer of CARLA rgb/semantic(/instance) camera folders."""

    name = "carla"

    def discover(self, root: str, options: Mapping[str, Any]) -> list[SourceFrame]:
        """Every rgb frame of every sequence, sorted by sequence then file name."""
        tags = tag_table_name(str(options.get("tags") or DEFAULT_TAGS))
        encoding = str(options.get("encoding") or "auto")
        if encoding not in ("auto", "raw", "palette"):
            raise ValueError(f"carla option encoding={encoding!r}: expected auto, raw or palette")
        if os.path.isdir(os.path.join(root, "rgb")):
            sequences = [""]
        else:
            sequences = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "rgb")))
        frames = [frame for seq in sequences for frame in self._sequence_frames(root, seq, tags, encoding)]
        if not frames:
            raise FileNotFoundError(f"{root}: no CARLA frames (expected rgb/ and semantic/ folders)")
        return unique_keys(frames)

    @staticmethod
    def _sequence_frames(root: str, sequence: str, tags: str, encoding: str) -> list[SourceFrame]:
        base = os.path.join(root, sequence)
        seg_dir, inst_dir = os.path.join(base, ROLE_DIRS["seg"]), os.path.join(base, ROLE_DIRS["inst"])
        segs, insts = find_by_stem(seg_dir, (".png",)), find_by_stem(inst_dir, (".png",))
        frames = []
        for entry in sorted(os.listdir(os.path.join(base, "rgb"))):
            stem, ext = os.path.splitext(entry)
            if ext.lower() not in IMAGE_EXTS:
                continue
            candidates = {"rgb": os.path.join(base, "rgb", entry),
                          "seg": segs.get(stem, os.path.join(seg_dir, stem + ".png"))}
            if os.path.isdir(inst_dir):
                candidates["inst"] = insts.get(stem, os.path.join(inst_dir, stem + ".png"))
            files, extra = present_files(candidates)
            extra.update({"sequence": sequence, "tags": tags, "encoding": encoding})
            frames.append(SourceFrame(key=sanitize_key(sequence, stem), files=files, extra=extra))
        return frames

    def mapping_table(self) -> dict[str, Any]:
        """Both CARLA tag tables (tag → name, palette colour, trainId, detection class)."""
        tables = {version: tag_table_json(tags) for version, tags in TAG_TABLES.items()}
        return {"default_tags": DEFAULT_TAGS, "tag_tables": tables}

    def load(self, frame: SourceFrame) -> LoadedFrame:
        """Original image, trainId ``seg.png`` + original ``seg_src.png``, instance members, meta."""
        table = TAG_TABLES[frame.extra.get("tags", DEFAULT_TAGS)]
        members, rgb, notes = load_camera(frame)
        seg_bytes, seg_image = load_label(frame, "seg", rgb.size)
        train_ids, unknown, used = semantic_tags(frame.key, frame.files["seg"], seg_image, table,
                                                 frame.extra.get("encoding", "auto"))
        members.update(convert.seg_members(seg_bytes, seg_image, train_ids, converted=True))
        if "inst" in frame.files or "inst" in frame.extra.get("missing", {}):
            _, inst_image = load_label(frame, "inst", rgb.size)
            inst_png, boxes_json = instance_members(frame.key, frame.files["inst"], inst_image, table)
            members.update({schema.INST: inst_png, schema.BOXES: boxes_json})
        stem = os.path.splitext(os.path.basename(frame.files["rgb"]))[0]
        meta = {
            "source": self.name,
            "sequence": frame.extra.get("sequence", ""),
            "frame": int(stem) if stem.isdigit() else stem,
            "carla_tags": frame.extra.get("tags", DEFAULT_TAGS),
            "label_encoding": used,
            **file_names(frame.files),
            **notes,
        }
        members[schema.META] = convert.json_bytes(meta)
        return LoadedFrame(members=members, unknown_ids=unknown)
