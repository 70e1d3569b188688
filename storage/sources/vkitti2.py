"""Virtual KITTI 2 (Naver Labs): RGB, class-colour segmentation, instance maps and tracked 2D boxes.

Layout (``ROOT`` holds the unpacked ``vkitti_2.0.3_{rgb,classSegmentation,instanceSegmentation,textgt}``
archives, merged)::

    ROOT/Scene{01,02,06,18,20}/{variation}/frames/rgb/Camera_{0,1}/rgb_{frame:05d}.jpg
    ROOT/Scene*/{variation}/frames/classSegmentation/Camera_*/classgt_{frame:05d}.png       RGB colours
    ROOT/Scene*/{variation}/frames/instanceSegmentation/Camera_*/instancegt_{frame:05d}.png  trackID + 1
    ROOT/Scene*/{variation}/colors.txt    "Category r g b" (class colours)
    ROOT/Scene*/{variation}/bbox.txt      "frame cameraID trackID left right top bottom number_pixels ..."
    ROOT/Scene*/{variation}/info.txt      "trackID label model color"

The three text files may also sit in ``{variation}/textgt/``. ``{variation}`` is ``clone``, ``fog``,
``morning``, ``overcast``, ``rain``, ``sunset``, ``15-deg-left`` … (option ``variation``: a
comma-separated subset). Class colours are read from ``colors.txt`` (built-in defaults when absent)
and mapped to trainIds by class name; colours not in the table become 255 and are counted as unknown,
reported as ``#rrggbb (r,g,b)``. Boxes come from ``bbox.txt`` (inclusive pixel bounds → exclusive
``x2``/``y2``; objects with no visible pixel dropped), labelled through ``info.txt`` (Car, Van → car;
Truck → truck); without ``bbox.txt`` they are taken from the instance map. ``inst.png`` is the
instance map (trackID + 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sim2real.storage import schema
from sim2real.storage.sources import convert
from sim2real.storage.sources.base import LoadedFrame, SourceFrame, register_format
from sim2real.storage.sources.image_files import channels_rgb, load_camera, load_label
from sim2real.storage.sources.source_files import (
    file_names,
    find_by_stem,
    present_files,
    sanitize_key,
    unique_keys,
)
from sim2real.storage.taxonomy import IGNORE_ID, TRAIN_ID_BY_NAME

#: VKITTI2 class name → trainId.
CLASS_TO_TRAIN: dict[str, int] = {
    "Terrain": TRAIN_ID_BY_NAME["terrain"],
    "Sky": TRAIN_ID_BY_NAME["sky"],
    "Tree": TRAIN_ID_BY_NAME["vegetation"],
    "Vegetation": TRAIN_ID_BY_NAME["vegetation"],
    "Building": TRAIN_ID_BY_NAME["building"],
    "Road": TRAIN_ID_BY_NAME["road"],
    "GuardRail": IGNORE_ID,
    "TrafficSign": TRAIN_ID_BY_NAME["traffic sign"],
    "TrafficLight": TRAIN_ID_BY_NAME["traffic light"],
    "Pole": TRAIN_ID_BY_NAME["pole"],
    "Misc": IGNORE_ID,
    "Truck": TRAIN_ID_BY_NAME["truck"],
    "Car": TRAIN_ID_BY_NAME["car"],
    "Van": TRAIN_ID_BY_NAME["car"],
    "Undefined": IGNORE_ID,
}
#: ``colors.txt`` as the dataset ships it, used when a variation has none.
DEFAULT_COLOURS: dict[str, tuple[int, int, int]] = {
    "Terrain": (210, 0, 200), "Sky": (90, 200, 255), "Tree": (0, 199, 0), "Vegetation": (90, 240, 0),
    "Building": (140, 140, 140), "Road": (100, 60, 100), "GuardRail": (250, 100, 255),
    "TrafficSign": (255, 255, 0), "TrafficLight": (200, 200, 0), "Pole": (255, 130, 0), "Misc": (80, 80, 80),
    "Truck": (160, 60, 60), "Car": (255, 127, 80), "Van": (0, 139, 139), "Undefined": (0, 0, 0),
}
#: ``info.txt`` label → detection class.
LABEL_TO_DETECTION: dict[str, str] = {"Car": "car", "Van": "car", "Truck": "truck"}
GROUPS = {"rgb": ("rgb", "rgb", ".jpg"), "seg": ("classSegmentation", "classgt", ".png"),
          "inst": ("instanceSegmentation", "instancegt", ".png")}


def _text_rows(variation_dir: str, name: str) -> list[list[str]] | None:
    """Whitespace-split rows (header dropped) of ``{name}`` in the variation or its ``textgt/``."""
    for path in (os.path.join(variation_dir, name), os.path.join(variation_dir, "textgt", name)):
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                return [line.split() for line in handle.read().splitlines()[1:] if line.strip()]
    return None


def read_annotations(variation_dir: str) -> dict[str, Any]:
    """Colours, track labels and per-(frame, camera) boxes of one variation; ``ValueError`` if malformed."""
    try:
        colour_rows = _text_rows(variation_dir, "colors.txt") or []
        colours = {" ".join(r[:-3]): [int(v) for v in r[-3:]] for r in colour_rows}
        tracks = {int(r[0]): r[1] for r in _text_rows(variation_dir, "info.txt") or []}
        boxes_rows = _text_rows(variation_dir, "bbox.txt")
        boxes: dict[str, list[list[int]]] | None = None
        if boxes_rows is not None:
            boxes = {}
            for r in boxes_rows:  # frame camera track left right top bottom pixels ...
                if len(r) < 8:
                    raise ValueError(f"bbox.txt row {' '.join(r)!r} has {len(r)} fields, expected 8 or more")
                boxes.setdefault(f"{int(r[0])}/{int(r[1])}", []).append([int(v) for v in r[2:8]])
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{variation_dir}: malformed colors.txt/info.txt/bbox.txt: {exc}") from None
    return {"colours": colours or {k: list(v) for k, v in DEFAULT_COLOURS.items()}, "tracks": tracks,
            "boxes": boxes}


def boxes_from_bbox_rows(
    rows: list[list[int]], tracks: Mapping[int, str], size: tuple[int, int]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Our boxes from ``bbox.txt`` rows ``[track, left, right, top, bottom, pixels]``; drops counted."""
    boxes: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    for track, left, right, top, bottom, pixels in rows:
        label = LABEL_TO_DETECTION.get(tracks.get(track, ""))
        xyxy = convert.box_from_inclusive(left, top, right, bottom, size)
        reason = None if label else f"label {tracks.get(track, '?')}"
        reason = reason or ("not visible" if pixels <= 0 or xyxy is None else None)
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        boxes.append({"label": label, "bbox_xyxy": xyxy, "instance": track + 1})
    return sorted(boxes, key=lambda b: b["instance"]), dropped


@register_format("vkitti2")
class Vkitti2Format:
    """Importer of Virtual KITTI 2 scenes."""

    name = "vkitti2"

    def discover(self, root: str, options: Mapping[str, Any]) -> list[SourceFrame]:
        """Every ``rgb_*.jpg`` sorted by scene, variation, camera and frame, with its annotations."""
        wanted = {v.strip() for v in str(options.get("variation") or "").split(",") if v.strip()}
        scenes = sorted(d for d in os.listdir(root)
                        if d.startswith("Scene") and os.path.isdir(os.path.join(root, d)))
        frames = []
        for scene in scenes:
            for variation in sorted(os.listdir(os.path.join(root, scene))):
                variation_dir = os.path.join(root, scene, variation)
                if wanted and variation not in wanted:
                    continue
                if not os.path.isdir(os.path.join(variation_dir, "frames", "rgb")):
                    continue
                frames.extend(self._variation_frames(variation_dir, scene, variation))
        if not frames:
            raise FileNotFoundError(f"{root}: no Scene*/{{variation}}/frames/rgb/Camera_*/rgb_*.jpg frames")
        return unique_keys(frames)

    @staticmethod
    def _variation_frames(variation_dir: str, scene: str, variation: str) -> list[SourceFrame]:
        annotations = read_annotations(variation_dir)
        rgb_root = os.path.join(variation_dir, "frames", "rgb")
        frames = []
        for camera in sorted(c for c in os.listdir(rgb_root) if c.startswith("Camera_")):
            found = {role: find_by_stem(os.path.join(variation_dir, "frames", group, camera), (ext,))
                     for role, (group, _, ext) in GROUPS.items()}
            for stem, path in sorted(found["rgb"].items()):
                if not stem.startswith("rgb_") or not stem[len("rgb_"):].isdigit():
                    continue
                number = stem[len("rgb_"):]
                candidates = {"rgb": path}
                for role, (group, prefix, ext) in GROUPS.items():
                    default = os.path.join(variation_dir, "frames", group, camera, f"{prefix}_{number}{ext}")
                    candidates[role] = found[role].get(f"{prefix}_{number}", default)
                if not os.path.isdir(os.path.dirname(candidates["inst"])):
                    del candidates["inst"]
                files, extra = present_files(candidates)
                camera_id = int(camera.split("_")[1]) if camera.split("_")[1].isdigit() else camera
                extra.update({"scene": scene, "variation": variation, "camera": camera, "frame": int(number),
                              "colours": annotations["colours"], "tracks": annotations["tracks"]})
                if annotations["boxes"] is not None:
                    extra["bbox_rows"] = annotations["boxes"].get(f"{int(number)}/{camera_id}", [])
                key = sanitize_key(scene, variation, camera, number)
                frames.append(SourceFrame(key=key, files=files, extra=extra))
        return frames

    def mapping_table(self) -> dict[str, Any]:
        """Class name → trainId, default class colours and track label → detection class."""
        return {
            "class_to_train_id": dict(sorted(CLASS_TO_TRAIN.items())),
            "default_colours": {k: list(v) for k, v in sorted(DEFAULT_COLOURS.items())},
            "label_to_detection": dict(sorted(LABEL_TO_DETECTION.items())),
            "unknown_colour_ids": "#rrggbb (r,g,b)",
        }

    def load(self, frame: SourceFrame) -> LoadedFrame:
        """Original JPEG, trainId ``seg.png`` + original ``seg_src.png``, ``inst.png``, boxes, meta."""
        members, rgb, notes = load_camera(frame)
        seg_bytes, seg_image = load_label(frame, "seg", rgb.size)
        table = {tuple(rgb_value): CLASS_TO_TRAIN[name]
                 for name, rgb_value in frame.extra["colours"].items() if name in CLASS_TO_TRAIN}
        colours = channels_rgb(frame.key, frame.files["seg"], "seg", seg_image)
        train_ids, unknown = convert.map_colours(colours, table)
        members.update(convert.seg_members(seg_bytes, seg_image, train_ids, converted=True))
        tracks = {int(k): v for k, v in frame.extra.get("tracks", {}).items()}
        inst = None
        if "inst" in frame.files or "inst" in frame.extra.get("missing", {}):
            _, inst_image = load_label(frame, "inst", rgb.size)
            inst = convert.instance_ids(frame, "inst", inst_image)
            members[schema.INST] = convert.encode_png(inst)
        dropped: dict[str, int] = {}
        if "bbox_rows" in frame.extra:  # tracks without a detection class count as dropped
            boxes, dropped = boxes_from_bbox_rows(frame.extra["bbox_rows"], tracks, rgb.size)
            members[schema.BOXES] = convert.json_bytes(boxes)
        elif inst is not None:
            label_of = {t + 1: LABEL_TO_DETECTION[v] for t, v in tracks.items() if v in LABEL_TO_DETECTION}
            members[schema.BOXES] = convert.json_bytes(convert.boxes_from_instances(inst, label_of))
        members[schema.META] = convert.json_bytes({**self._meta(frame, dropped), **notes})
        return LoadedFrame(members=members, unknown_ids=unknown, dropped_boxes=dropped)

    def _meta(self, frame: SourceFrame, dropped: dict[str, int]) -> dict[str, Any]:
        extra = frame.extra
        return {
            "source": self.name,
            "scene": extra["scene"],
            "variation": extra["variation"],
            "sequence": f"{extra['scene']}_{extra['variation']}",
            "camera": extra["camera"],
            "frame": extra["frame"],
            "dropped_boxes": dropped,
            **file_names(frame.files),
        }
