"""GTA5 ("Playing for Data", Richter et al. 2016): game frames with Cityscapes-id label maps.

Layout (``ROOT`` holds the unpacked ``NN_images.zip`` and ``NN_labels.zip`` parts)::

    ROOT/images/{frame:05d}.png     the game frame
    ROOT/labels/{frame:05d}.png     8-bit (palette-indexed) Cityscapes label ids 0..33

File names may use any case for the extension (``.PNG``, ``.Jpg``); the label map is the file in
``labels/`` with the image's stem and a ``.png`` extension in any case. Label ids map to trainIds
through the taxonomy's Cityscapes table (the same ids as Cityscapes' ``labelIds``); ids outside it
become 255 and are counted as unknown. The dataset has no instance
maps, so there are no boxes. A handful of the published frames have a label map of a different size
than the image: those are bad frames (quarantined), never resized. Option ``split`` is not used.
"""

from __future__ import annotations

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
from sim2real.storage.taxonomy import CITYSCAPES_LABELS

#: GTA5 label id (= Cityscapes label id) → trainId.
LABEL_TO_TRAIN: dict[int, int] = {label.id: label.train_id for label in CITYSCAPES_LABELS}
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


@register_format("gta5")
class Gta5Format:
    """Importer of the GTA5 images/labels folders."""

    name = "gta5"

    def discover(self, root: str, options: Mapping[str, Any]) -> list[SourceFrame]:
        """Every image in ``images/`` (sorted by name) with its label map in ``labels/``."""
        image_dir, label_dir = os.path.join(root, "images"), os.path.join(root, "labels")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"{image_dir}: no such folder (gta5 expects images/ and labels/)")
        labels = find_by_stem(label_dir, (".png",))
        frames = []
        for entry in sorted(os.listdir(image_dir)):
            stem, ext = os.path.splitext(entry)
            if ext.lower() not in IMAGE_EXTS:
                continue
            seg = labels.get(stem, os.path.join(label_dir, stem + ".png"))
            files, extra = present_files({"rgb": os.path.join(image_dir, entry), "seg": seg})
            frames.append(SourceFrame(key=sanitize_key(stem), files=files, extra=extra))
        if not frames:
            raise FileNotFoundError(f"{image_dir}: no images (.png/.jpg/.jpeg)")
        return unique_keys(frames)

    def mapping_table(self) -> dict[str, Any]:
        """Label id → trainId (Cityscapes' table)."""
        return {"label_id_to_train_id": {str(k): v for k, v in sorted(LABEL_TO_TRAIN.items())}}

    def load(self, frame: SourceFrame) -> LoadedFrame:
        """Original image, trainId ``seg.png`` + the original label map as ``seg_src.png``, meta."""
        members, rgb, notes = load_camera(frame)
        seg, unknown = convert.id_label_seg(frame, rgb.size, LABEL_TO_TRAIN)
        members.update(seg)
        stem = os.path.splitext(os.path.basename(frame.files["rgb"]))[0]
        meta = {
            "source": self.name,
            "frame": int(stem) if stem.isdigit() else stem,
            **file_names(frame.files),
            **notes,
        }
        members[schema.META] = convert.json_bytes(meta)
        return LoadedFrame(members=members, unknown_ids=unknown)
