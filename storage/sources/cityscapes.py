"""Cityscapes (fine annotations) as the dataset ships it.

Layout (``ROOT`` holds the unpacked ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``)::

    ROOT/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png      8-bit label ids 0..33
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png   16-bit: id*1000+n or id

Label ids map to trainIds through the taxonomy's Cityscapes table. Instance pixels are those with
value >= 1000 (class = value // 1000); they are kept in ``inst.png`` (other pixels 0) and give one box
each for the detection classes; caravan/trailer instances have no detection class and are counted in
``meta.json`` under ``dropped_instances`` (and in the version's ``dropped_boxes``). File extensions
may be in any case (``.PNG``). Option ``split``: ``train`` (default), ``val``, ``test``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from sim2real.storage import schema
from sim2real.storage.sources import convert
from sim2real.storage.sources.base import LoadedFrame, SourceFrame, register_format
from sim2real.storage.sources.image_files import load_camera, load_label
from sim2real.storage.sources.source_files import (
    file_names,
    find_by_stem,
    present_files,
    sanitize_key,
    unique_keys,
)
from sim2real.storage.taxonomy import CITYSCAPES_LABELS, DETECTION_CLASSES

IMAGE_SUFFIX = "_leftImg8bit.png"
IMAGE_STEM_SUFFIX = "_leftImg8bit"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
INSTANCE_MIN = 1000  # instance pixels hold class_id * 1000 + instance number

#: Cityscapes label id → trainId (255 = ignored but known).
LABEL_TO_TRAIN: dict[int, int] = {label.id: label.train_id for label in CITYSCAPES_LABELS}
#: Cityscapes label id → detection class, for the classes that have instances and a detection class.
LABEL_TO_DETECTION: dict[int, str] = {
    label.id: label.name for label in CITYSCAPES_LABELS if label.name in DETECTION_CLASSES
}
LABEL_NAME: dict[int, str] = {label.id: label.name for label in CITYSCAPES_LABELS}


def instance_boxes(inst: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Boxes of the detection-class instances (value >= 1000) and counts of the others by class."""
    ids = [int(v) for v in np.unique(inst) if v >= INSTANCE_MIN]
    classes = {i: i // INSTANCE_MIN for i in ids}
    label_of = {i: LABEL_TO_DETECTION[c] for i, c in classes.items() if c in LABEL_TO_DETECTION}
    dropped: dict[str, int] = {}
    for i, c in classes.items():
        if i not in label_of:
            name = LABEL_NAME.get(c, f"id{c}")
            dropped[name] = dropped.get(name, 0) + 1
    return convert.boxes_from_instances(inst, label_of), dropped


@register_format("cityscapes")
class CityscapesFormat:
    """Importer of Cityscapes ``leftImg8bit`` + ``gtFine``."""

    name = "cityscapes"

    def discover(self, root: str, options: Mapping[str, Any]) -> list[SourceFrame]:
        """Every ``*_leftImg8bit.png`` of the split, sorted by city then file name."""
        split = str(options.get("split") or "train")
        image_dir = os.path.join(root, "leftImg8bit", split)
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"{image_dir}: no such folder (cityscapes split {split!r})")
        frames = []
        for city in sorted(os.listdir(image_dir)):
            city_dir = os.path.join(image_dir, city)
            if not os.path.isdir(city_dir):
                continue
            labels = find_by_stem(os.path.join(root, "gtFine", split, city), (".png",))
            for entry in sorted(os.listdir(city_dir)):
                stem, ext = os.path.splitext(entry)
                if stem.endswith(IMAGE_STEM_SUFFIX) and ext.lower() == ".png":
                    frames.append(self._frame(root, split, city, entry, labels))
        if not frames:
            raise FileNotFoundError(f"{image_dir}: no {{city}}/*{IMAGE_SUFFIX} files")
        return unique_keys(frames)

    @staticmethod
    def _frame(root: str, split: str, city: str, entry: str, labels: Mapping[str, str]) -> SourceFrame:
        label_dir = os.path.join(root, "gtFine", split, city)
        stem = os.path.splitext(entry)[0][: -len(IMAGE_STEM_SUFFIX)]
        seg_stem, inst_stem = stem + LABEL_SUFFIX[:-4], stem + INSTANCE_SUFFIX[:-4]
        files, extra = present_files({
            "rgb": os.path.join(root, "leftImg8bit", split, city, entry),
            "seg": labels.get(seg_stem, os.path.join(label_dir, seg_stem + ".png")),
            "inst": labels.get(inst_stem, os.path.join(label_dir, inst_stem + ".png")),
        })
        extra.update({"split": split, "city": city})
        return SourceFrame(key=sanitize_key(stem), files=files, extra=extra)

    def mapping_table(self) -> dict[str, Any]:
        """Label id → trainId, and label id → detection class for instance boxes."""
        return {
            "label_id_to_train_id": {str(k): v for k, v in sorted(LABEL_TO_TRAIN.items())},
            "instance_class_to_detection": {str(k): v for k, v in sorted(LABEL_TO_DETECTION.items())},
            "instance_rule": "value >= 1000: class = value // 1000",
        }

    def load(self, frame: SourceFrame) -> LoadedFrame:
        """Original PNG, trainId ``seg.png`` (+ ``seg_src.png``), ``inst.png``, ``boxes.json``, meta."""
        members, rgb, notes = load_camera(frame)
        seg, unknown = convert.id_label_seg(frame, rgb.size, LABEL_TO_TRAIN)
        members.update(seg)

        _, inst_image = load_label(frame, "inst", rgb.size)
        inst = convert.instance_ids(frame, "inst", inst_image)
        inst = np.where(inst >= INSTANCE_MIN, inst, 0).astype(np.uint16)
        boxes, dropped = instance_boxes(inst)
        members[schema.INST] = convert.encode_png(inst)
        members[schema.BOXES] = convert.json_bytes(boxes)
        members[schema.META] = convert.json_bytes({**self._meta(frame, dropped), **notes})
        return LoadedFrame(members=members, unknown_ids=unknown, dropped_boxes=dropped)

    def _meta(self, frame: SourceFrame, dropped: dict[str, int]) -> dict[str, Any]:
        city, seq, number = (frame.key.split("_") + ["", "", ""])[:3]
        return {
            "source": self.name,
            "split": frame.extra.get("split"),
            "city": frame.extra.get("city", city),
            "sequence": f"{city}_{seq}",
            "frame": int(number) if number.isdigit() else number,
            **file_names(frame.files),
            "dropped_instances": dropped,
        }
