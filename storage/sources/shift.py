"""SHIFT (ETH VIS, CARLA-rendered): discrete-shift images, semantic masks and 2D boxes.

Layout as the SHIFT download script writes it (``ROOT`` = the dataset root)::

    ROOT/discrete/images/{split}/{view}/img.zip       {seq}/{frame:08d}_img_{view}.jpg
    ROOT/discrete/images/{split}/{view}/semseg.zip    {seq}/{frame:08d}_semseg_{view}.png (class id in red)
    ROOT/discrete/images/{split}/{view}/det_2d.json   Scalabel: {"frames": [{"name", "videoName",
                                                      "attributes", "labels": [{"id", "category", "box2d"}]}]}

``img/`` and ``semseg/`` folders (the zips unpacked in place) work the same, and ``ROOT`` may also be
``discrete/images`` itself (``{split}/{view}/…``) or one view folder; extensions may be in any case.
Options: ``split`` (default ``train``), ``view`` (default ``front``), ``ego_band`` (default ``0.1``;
``0`` turns the ego-vehicle rule below off).

The ego vehicle: SHIFT's masks have no class of their own for it (the devkit's class list is CARLA's
23 tags) and its cameras sit on the car's roof (``config/sensors.yaml``: 1.6 m up), so the car's own
hood and body carry the vehicle class at the bottom of the frame (~18,000 pixels in a front frame).
Cityscapes labels its ego vehicle ``ego vehicle`` (ignored); here the vehicle pixels connected to the
bottom edge of the frame, within its bottom ``ego_band`` (a fraction of the height), become 255 and
their count is ``meta.json``'s ``ego_vehicle_pixels``. A car that touches the hood in the image loses
at most its part inside that band to ignore; it never becomes another class.

SHIFT's 23 semantic classes are CARLA's tags before 0.9.14, mapped through ``CARLA_LEGACY_TAGS``
(the one table, in ``carla.py``); "vehicle" is a single class there and becomes car. Boxes come from
``det_2d.json`` (pedestrian → person; car, truck, bus, motorcycle, bicycle kept). Instance masks
(``det_insseg_2d.json``, RLE) are not read.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from sim2real.storage import schema
from sim2real.storage.sources import convert
from sim2real.storage.sources.base import LoadedFrame, SourceFrame, register_format
from sim2real.storage.sources.carla import CARLA_LEGACY_TAGS, tag_table_json
from sim2real.storage.sources.image_files import load_camera, load_label, single_channel
from sim2real.storage.sources.source_files import file_names, sanitize_key, unique_keys, zip_location
from sim2real.storage.taxonomy import IGNORE_ID

#: SHIFT semantic class id → trainId (CARLA's legacy tag table).
CLASS_TO_TRAIN: dict[int, int] = {tag.tag: tag.train_id for tag in CARLA_LEGACY_TAGS}
#: SHIFT's class id of vehicles (its ego vehicle included): CARLA's legacy tag 10.
VEHICLE_CLASS = next(tag.tag for tag in CARLA_LEGACY_TAGS if tag.name == "Vehicles")
DEFAULT_EGO_BAND = 0.1
#: SHIFT det_2d category → our detection class.
CATEGORY_TO_DETECTION: dict[str, str] = {
    "pedestrian": "person",
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "motorcycle": "motorcycle",
    "bicycle": "bicycle",
}


def _ego_band(value: Any) -> float:
    """Option ``ego_band`` as a fraction of the frame height in [0, 1]; ``ValueError`` otherwise."""
    if value is None or value == "":
        return DEFAULT_EGO_BAND
    try:
        band = float(value)
    except (TypeError, ValueError):
        band = -1.0
    if not 0.0 <= band <= 1.0:
        raise ValueError(f"shift option ego_band={value!r}: expected a fraction of the height in [0, 1]")
    return band


def ego_vehicle_mask(vehicle: np.ndarray, band: float) -> np.ndarray:
    """H×W bool: the ``vehicle`` pixels 8-connected to the bottom row inside the bottom ``band`` × H rows.

    Grows row by row from the bottom edge: a run of vehicle pixels in a row belongs to the ego vehicle
    when it touches (8-connectivity) an ego pixel in the row below.
    """
    height = vehicle.shape[0]
    ego = np.zeros_like(vehicle, dtype=bool)
    top = height - int(round(band * height))
    if top >= height:
        return ego
    ego[-1] = vehicle[-1]
    for y in range(height - 2, top - 1, -1):
        below = ego[y + 1]
        if not below.any():
            break
        near = below.copy()
        near[1:] |= below[:-1]
        near[:-1] |= below[1:]
        row = vehicle[y]
        runs = np.cumsum(np.diff(row.astype(np.int8), prepend=0) == 1) * row
        keep = np.unique(runs[row & near])
        ego[y] = np.isin(runs, keep[keep > 0])
    return ego


def find_view_dir(root: str, split: str, view: str) -> str:
    """The folder holding ``img``/``img.zip`` for ``split``/``view`` (see the module layouts)."""
    nested = os.path.join(root, "discrete", "images", split, view)
    for base in (nested, os.path.join(root, split, view), root):
        if any(os.path.exists(os.path.join(base, name)) for name in ("img", "img.zip")):
            return base
    raise FileNotFoundError(f"{root}: no SHIFT img/ or img.zip for split {split!r}, view {view!r}")


class MemberIndex:
    """The entries of a data group stored as ``{group}.zip`` or an unpacked ``{group}/`` folder."""

    def __init__(self, view_dir: str, group: str) -> None:
        self.archive = os.path.join(view_dir, f"{group}.zip")
        self.folder = os.path.join(view_dir, group)
        if os.path.isdir(self.folder):
            self.names = {os.path.relpath(os.path.join(d, f), self.folder).replace(os.sep, "/")
                          for d, _, files in os.walk(self.folder) for f in files}
            self.is_zip = False
        elif os.path.exists(self.archive):
            try:
                with zipfile.ZipFile(self.archive) as archive:
                    self.names = {n for n in archive.namelist() if not n.endswith("/")}
            except (zipfile.BadZipFile, OSError) as exc:  # a whole-input error: one line, exit 2
                raise ValueError(f"{self.archive}: cannot read the zip file ({exc}); "
                                 f"download it again") from None
            self.is_zip = True
        else:
            self.names, self.is_zip = set(), False

    def location(self, member: str) -> str:
        """A readable location of ``member`` (a path, or a ``zip://…::…`` URL)."""
        if self.is_zip:
            return zip_location(self.archive, member)
        return os.path.join(self.folder, *member.split("/"))


def read_det_2d(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``det_2d.json`` as ``{(sequence, image name): {"attributes", "labels"}}``."""
    try:
        with open(path, "rb") as handle:
            content = json.load(handle)
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    records = content.get("frames", []) if isinstance(content, dict) else content
    try:
        return {
            (str(r.get("videoName", "")), str(r["name"])): {
                "attributes": r.get("attributes") or {},
                "labels": [convert.slim_box2d_label(label) for label in r.get("labels") or []],
            }
            for r in records
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a Scalabel det_2d file (a frame without name, or not an "
                         f"object: {exc!r})") from None


@register_format("shift")
class ShiftFormat:
    """Importer of SHIFT discrete-shift camera images, semseg masks and det_2d boxes."""

    name = "shift"

    def discover(self, root: str, options: Mapping[str, Any]) -> list[SourceFrame]:
        """Every ``{seq}/{frame}_img_{view}.jpg`` of the view, sorted by sequence and frame."""
        split, view = str(options.get("split") or "train"), str(options.get("view") or "front")
        view_dir = find_view_dir(root, split, view)
        images, masks = MemberIndex(view_dir, "img"), MemberIndex(view_dir, "semseg")
        det_path = os.path.join(view_dir, "det_2d.json")
        detections = read_det_2d(det_path) if os.path.exists(det_path) else None
        ego_band = _ego_band(options.get("ego_band"))
        pattern = re.compile(rf"([^/]+)/(\d+)_img_{re.escape(view)}\.(?i:jpg|jpeg|png)")
        mask_names = {os.path.splitext(n)[0]: n for n in sorted(masks.names, reverse=True)
                      if os.path.splitext(n)[1].lower() == ".png"}
        frames = []
        for name in sorted(images.names):
            match = pattern.fullmatch(name)
            if not match:
                continue
            seq, number = match.groups()
            mask_stem = f"{seq}/{number}_semseg_{view}"
            files = {"rgb": images.location(name)}
            extra: dict[str, Any] = {"split": split, "view": view, "sequence": seq, "frame": int(number),
                                     "ego_band": ego_band}
            if mask_stem in mask_names:
                files["seg"] = masks.location(mask_names[mask_stem])
            else:
                extra["missing"] = {"seg": masks.location(mask_stem + ".png")}
            if detections is not None and (seq, os.path.basename(name)) in detections:
                extra["detection"] = detections[(seq, os.path.basename(name))]
            frames.append(SourceFrame(key=sanitize_key(seq, number, view), files=files, extra=extra))
        if not frames:
            raise FileNotFoundError(f"{view_dir}: no *_img_{view}.jpg frames")
        return unique_keys(frames)

    def mapping_table(self) -> dict[str, Any]:
        """Semantic class → trainId (CARLA legacy tags) and det_2d category → detection class."""
        return {
            "class_to_train_id": tag_table_json(CARLA_LEGACY_TAGS),
            "category_to_detection": dict(sorted(CATEGORY_TO_DETECTION.items())),
            "ego_vehicle": f"class {VEHICLE_CLASS} pixels connected to the bottom edge within the "
                           f"bottom ego_band of the height (default {DEFAULT_EGO_BAND}) -> 255",
        }

    def load(self, frame: SourceFrame) -> LoadedFrame:
        """Original JPEG, trainId ``seg.png`` + original ``seg_src.png``, boxes from det_2d, meta."""
        members, rgb, notes = load_camera(frame)
        seg_bytes, seg_image = load_label(frame, "seg", rgb.size)
        if seg_image.mode in ("RGB", "RGBA"):
            ids = np.asarray(seg_image)[..., 0].astype(np.int64)
        else:
            ids = single_channel(frame.key, frame.files["seg"], "seg", seg_image)
        train_ids, unknown = convert.ids_to_train(frame, "seg", ids, CLASS_TO_TRAIN)
        ego = ego_vehicle_mask(ids == VEHICLE_CLASS, float(frame.extra.get("ego_band", DEFAULT_EGO_BAND)))
        train_ids[ego] = IGNORE_ID
        members.update(convert.seg_members(seg_bytes, seg_image, train_ids, converted=True))
        meta = {**self._meta(frame), **notes, "ego_vehicle_pixels": int(ego.sum())}
        detection = frame.extra.get("detection")
        absent = "absent: frame not in det_2d.json"
        dropped = convert.add_box2d_boxes(members, meta, detection, CATEGORY_TO_DETECTION, rgb.size, absent)
        if detection is not None:
            meta["attributes"] = attributes = detection["attributes"]
            meta["weather"] = attributes.get("weather_coarse")
            meta["time_of_day"] = attributes.get("timeofday_coarse")
        members[schema.META] = convert.json_bytes(meta)
        return LoadedFrame(members=members, unknown_ids=unknown, dropped_boxes=dropped)

    def _meta(self, frame: SourceFrame) -> dict[str, Any]:
        extra = frame.extra
        return {
            "source": self.name,
            "split": extra.get("split"),
            "view": extra.get("view"),
            "sequence": extra.get("sequence"),
            "frame": extra.get("frame"),
            **file_names(frame.files),
        }
