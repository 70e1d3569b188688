"""BDD100K: the 10k semantic-segmentation images with their masks and 2D detection labels.

Layout (``ROOT`` holds the unpacked ``bdd100k_images_10k``, ``bdd100k_sem_seg_labels_trainval`` and
``bdd100k_det_20_labels_trainval`` archives)::

    ROOT/images/10k/{split}/{name}.jpg
    ROOT/labels/sem_seg/masks/{split}/{name}.png     8-bit trainIds 0..18, 255 = ignore
    ROOT/labels/det_20/det_{split}.json              [{"name": "{name}.jpg", "attributes": {...},
                                                       "labels": [{"id", "category", "box2d"}]}]
    ROOT/labels/bdd100k_labels_images_{split}.json   the 2018 release's labels (same form), used when
                                                     there is no det_20 file

Masks already hold trainIds; a mask that holds nothing else is stored byte for byte, otherwise other
values become 255 (counted as unknown) and the original is kept as ``seg_src.png``. Detection
categories map to ours in both of BDD100K's vocabularies: the 2020 ``det_20`` one (pedestrian → person;
rider, car, truck, bus, train, motorcycle, bicycle kept) and the 2018 one of ``bdd100k_labels_images_*``
(person, rider, car, truck, bus, train, ``motor`` → motorcycle, ``bike`` → bicycle). Other categories
(traffic light, traffic sign, other vehicle, other person, trailer, and the 2018 ``lane``/``drivable
area`` poly2d labels) are dropped and counted by category, per frame in ``meta.json`` and per version
in ``version.json``'s ``dropped_boxes``. ``box2d`` is in inclusive pixel coordinates; boxes become
integer, exclusive ``x2``/``y2``, clipped to the image. A frame absent from the detection file gets
no ``boxes.json`` (unknown is not "no objects"). Option ``split``: ``train`` (default) or ``val``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from sim2real.storage import schema
from sim2real.storage.sources import convert
from sim2real.storage.sources.base import LoadedFrame, SourceFrame, register_format
from sim2real.storage.sources.image_files import load_camera
from sim2real.storage.sources.source_files import (
    file_names,
    find_by_stem,
    present_files,
    sanitize_key,
    unique_keys,
)
from sim2real.storage.taxonomy import IGNORE_ID, NUM_TRAIN_CLASSES

#: Mask value → trainId: the masks are trainIds already.
MASK_TO_TRAIN: dict[int, int] = {**{i: i for i in range(NUM_TRAIN_CLASSES)}, IGNORE_ID: IGNORE_ID}
#: BDD100K detection category → our detection class, both vocabularies (2020 ``det_20`` and 2018
#: ``bdd100k_labels_images``: ``person``, ``bike``, ``motor``); others are dropped (counted per category).
CATEGORY_TO_DETECTION: dict[str, str] = {
    "pedestrian": "person",
    "person": "person",  # 2018
    "rider": "rider",
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "train": "train",
    "motorcycle": "motorcycle",
    "motor": "motorcycle",  # 2018
    "bicycle": "bicycle",
    "bike": "bicycle",  # 2018
}


def read_detections(path: str) -> dict[str, dict[str, Any]]:
    """The detection file as ``{image name: frame record}``; ``ValueError`` naming the file if malformed."""
    try:
        with open(path, "rb") as handle:
            records = json.load(handle)
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(records, dict):  # scalabel "dataset" form
        records = records.get("frames", [])
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of frames")
    frames = {}
    try:
        for record in records:
            labels = [convert.slim_box2d_label(label) for label in record.get("labels") or []]
            frames[str(record["name"])] = {"attributes": record.get("attributes") or {}, "labels": labels}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a BDD100K label file (a frame without name, or not an "
                         f"object: {exc!r})") from None
    return frames


@register_format("bdd100k")
class Bdd100kFormat:
    """Importer of BDD100K 10k images, semantic masks and det_20 boxes."""

    name = "bdd100k"

    def discover(self, root: str, options: Mapping[str, Any]) -> list[SourceFrame]:
        """Every ``images/10k/{split}/*.jpg``, sorted by name, with its detection record attached."""
        split = str(options.get("split") or "train")
        image_dir = os.path.join(root, "images", "10k", split)
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"{image_dir}: no such folder (bdd100k split {split!r})")
        det_paths = [os.path.join(root, "labels", "det_20", f"det_{split}.json"),
                     os.path.join(root, "labels", f"bdd100k_labels_images_{split}.json")]
        det_path = next((p for p in det_paths if os.path.exists(p)), None)
        detections = read_detections(det_path) if det_path else None
        mask_dir = os.path.join(root, "labels", "sem_seg", "masks", split)
        masks = find_by_stem(mask_dir, (".png",))
        frames = []
        for entry in sorted(os.listdir(image_dir)):
            stem, ext = os.path.splitext(entry)
            if ext.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            extra: dict[str, Any] = {"split": split, "name": entry}
            if detections is not None and entry in detections:
                extra["detection"] = detections[entry]
            seg = masks.get(stem, os.path.join(mask_dir, stem + ".png"))
            files, missing = present_files({"rgb": os.path.join(image_dir, entry), "seg": seg})
            extra.update(missing)
            frames.append(SourceFrame(key=sanitize_key(stem), files=files, extra=extra))
        if not frames:
            raise FileNotFoundError(f"{image_dir}: no images")
        return unique_keys(frames)

    def mapping_table(self) -> dict[str, Any]:
        """Mask value → trainId (identity) and category → detection class."""
        return {
            "mask_value_to_train_id": {str(k): v for k, v in sorted(MASK_TO_TRAIN.items())},
            "category_to_detection": dict(sorted(CATEGORY_TO_DETECTION.items())),
        }

    def load(self, frame: SourceFrame) -> LoadedFrame:
        """Original JPEG, ``seg.png``, ``boxes.json`` when the frame has detection labels, meta."""
        members, rgb, notes = load_camera(frame)
        seg, unknown = convert.id_label_seg(frame, rgb.size, MASK_TO_TRAIN, always_convert=False)
        members.update(seg)

        meta: dict[str, Any] = {"source": self.name, "split": frame.extra.get("split"),
                                **file_names(frame.files), **notes}
        detection = frame.extra.get("detection")
        absent = "absent: frame not in the detection file"
        dropped = convert.add_box2d_boxes(members, meta, detection, CATEGORY_TO_DETECTION, rgb.size, absent)
        if detection is not None:
            names = {"weather": "weather", "timeofday": "time_of_day", "scene": "scene"}
            meta.update({names[k]: v for k, v in detection["attributes"].items() if k in names})
        members[schema.META] = convert.json_bytes(meta)
        return LoadedFrame(members=members, unknown_ids=unknown, dropped_boxes=dropped)
