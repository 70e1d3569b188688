"""The canonical taxonomy: Cityscapes label ids, their 19 trainIds, and the detection classes.

Every dataset version stores semantics as Cityscapes trainIds (``seg.png``, 255 = ignore) and boxes
with the detection class names below. Importers map their own ids onto these once, at ingest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_ID = 255


@dataclass(frozen=True)
class LabelClass:
    """One Cityscapes label: its id, name, trainId (255 = ignored) and palette colour."""

    id: int
    name: str
    train_id: int
    color: tuple[int, int, int]


# Cityscapes' 34 label ids (cityscapesScripts `labels.py`; the values are the dataset's definition).
CITYSCAPES_LABELS: tuple[LabelClass, ...] = (
    LabelClass(0, "unlabeled", IGNORE_ID, (0, 0, 0)),
    LabelClass(1, "ego vehicle", IGNORE_ID, (0, 0, 0)),
    LabelClass(2, "rectification border", IGNORE_ID, (0, 0, 0)),
    LabelClass(3, "out of roi", IGNORE_ID, (0, 0, 0)),
    LabelClass(4, "static", IGNORE_ID, (0, 0, 0)),
    LabelClass(5, "dynamic", IGNORE_ID, (111, 74, 0)),
    LabelClass(6, "ground", IGNORE_ID, (81, 0, 81)),
    LabelClass(7, "road", 0, (128, 64, 128)),
    LabelClass(8, "sidewalk", 1, (244, 35, 232)),
    LabelClass(9, "parking", IGNORE_ID, (250, 170, 160)),
    LabelClass(10, "rail track", IGNORE_ID, (230, 150, 140)),
    LabelClass(11, "building", 2, (70, 70, 70)),
    LabelClass(12, "wall", 3, (102, 102, 156)),
    LabelClass(13, "fence", 4, (190, 153, 153)),
    LabelClass(14, "guard rail", IGNORE_ID, (180, 165, 180)),
    LabelClass(15, "bridge", IGNORE_ID, (150, 100, 100)),
    LabelClass(16, "tunnel", IGNORE_ID, (150, 120, 90)),
    LabelClass(17, "pole", 5, (153, 153, 153)),
    LabelClass(18, "polegroup", IGNORE_ID, (153, 153, 153)),
    LabelClass(19, "traffic light", 6, (250, 170, 30)),
    LabelClass(20, "traffic sign", 7, (220, 220, 0)),
    LabelClass(21, "vegetation", 8, (107, 142, 35)),
    LabelClass(22, "terrain", 9, (152, 251, 152)),
    LabelClass(23, "sky", 10, (70, 130, 180)),
    LabelClass(24, "person", 11, (220, 20, 60)),
    LabelClass(25, "rider", 12, (255, 0, 0)),
    LabelClass(26, "car", 13, (0, 0, 142)),
    LabelClass(27, "truck", 14, (0, 0, 70)),
    LabelClass(28, "bus", 15, (0, 60, 100)),
    LabelClass(29, "caravan", IGNORE_ID, (0, 0, 90)),
    LabelClass(30, "trailer", IGNORE_ID, (0, 0, 110)),
    LabelClass(31, "train", 16, (0, 80, 100)),
    LabelClass(32, "motorcycle", 17, (0, 0, 230)),
    LabelClass(33, "bicycle", 18, (119, 11, 32)),
)

#: The 19 evaluated classes, index = trainId.
TRAIN_CLASSES: tuple[str, ...] = tuple(
    label.name for label in sorted(CITYSCAPES_LABELS, key=lambda c: c.train_id) if label.train_id != IGNORE_ID
)
NUM_TRAIN_CLASSES = len(TRAIN_CLASSES)
TRAIN_ID_BY_NAME: dict[str, int] = {name: i for i, name in enumerate(TRAIN_CLASSES)}
TRAIN_ID_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    next(c.color for c in CITYSCAPES_LABELS if c.train_id == i) for i in range(NUM_TRAIN_CLASSES)
)

#: Classes with fine detail the translator must keep (sign digits, lamp colours).
FINE_DETAIL_TRAIN_IDS: tuple[int, ...] = (TRAIN_ID_BY_NAME["traffic light"], TRAIN_ID_BY_NAME["traffic sign"])

#: Detection classes (Cityscapes' instance classes); category id = index + 1 (0 is background).
DETECTION_CLASSES: tuple[str, ...] = (
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
DETECTION_CLASS_ID: dict[str, int] = {name: i + 1 for i, name in enumerate(DETECTION_CLASSES)}


def label_id_to_train_id_lut() -> np.ndarray:
    """A 256-entry lookup table from Cityscapes label id to trainId (unknown ids → 255)."""
    lut = np.full(256, IGNORE_ID, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        lut[label.id] = label.train_id
    return lut


def colorize_train_ids(seg: np.ndarray) -> np.ndarray:
    """An H×W×3 uint8 palette image of a trainId map (ignore = black), for previews and grids."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:NUM_TRAIN_CLASSES] = np.asarray(TRAIN_ID_COLORS, dtype=np.uint8)
    return palette[seg]
