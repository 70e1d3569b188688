"""Decoded samples → tensors, flips, resizing and seeded mixing of several versions."""

from __future__ import annotations

import numpy as np
import torch

from sim2real.models.perception_data import (
    detection_batches,
    frames,
    hflip,
    segmentation_batches,
    to_tensors,
)
from sim2real.storage.taxonomy import DETECTION_CLASS_ID


def _sample(key: str = "k0", height: int = 8, width: int = 16) -> dict:
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[:, : width // 2] = 255
    seg = np.full((height, width), 255, dtype=np.uint8)
    seg[:, : width // 2] = 0
    boxes = [
        {"label": "car", "bbox_xyxy": [2, 1, 6, 5], "instance": 1},
        {"label": "traffic sign", "bbox_xyxy": [0, 0, 2, 2], "instance": 2},  # not a detection class
        {"label": "person", "bbox_xyxy": [10, 3, 10, 7], "instance": 3},  # zero width: dropped
    ]
    return {"__key__": key, "rgb": rgb, "seg": seg, "boxes": boxes, "meta": {}}


def test_to_tensors_keeps_detection_classes_and_drops_degenerate_boxes() -> None:
    frame = to_tensors(_sample())
    assert frame.image.shape == (3, 8, 16) and frame.image.dtype == torch.float32
    assert float(frame.image.max()) == 1.0 and float(frame.image.min()) == 0.0
    assert frame.seg.dtype == torch.int64 and int(frame.seg[0, -1]) == 255
    assert frame.boxes.tolist() == [[2.0, 1.0, 6.0, 5.0]]
    assert frame.labels.tolist() == [DETECTION_CLASS_ID["car"]]


def test_resize_scales_boxes_and_keeps_label_ids() -> None:
    frame = to_tensors(_sample(), image_size=(16, 32))
    assert frame.image.shape == (3, 16, 32) and frame.seg.shape == (16, 32)
    assert set(frame.seg.unique().tolist()) == {0, 255}  # nearest: no invented ids
    assert frame.boxes.tolist() == [[4.0, 2.0, 12.0, 10.0]]


def test_hflip_mirrors_image_labels_and_boxes_together() -> None:
    frame = to_tensors(_sample())
    flipped = hflip(frame)
    assert torch.equal(flipped.image, frame.image.flip(-1)) and torch.equal(flipped.seg, frame.seg.flip(-1))
    assert flipped.boxes.tolist() == [[10.0, 1.0, 14.0, 5.0]]
    assert torch.equal(hflip(flipped).boxes, frame.boxes)


def test_batches_have_the_shapes_the_models_take() -> None:
    samples = [_sample(f"k{i}") for i in range(5)]
    seg_batches = list(segmentation_batches(frames(samples, None), batch_size=2))
    assert [b[0].shape[0] for b in seg_batches] == [2, 2, 1]
    assert seg_batches[0][1].shape == (2, 8, 16)
    images, targets = next(detection_batches(frames(samples, None, flip_probability=1.0, limit=3), 4))
    assert len(images) == 3 and targets[0]["boxes"].tolist() == [[10.0, 1.0, 14.0, 5.0]]
