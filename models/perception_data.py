"""Decoded samples → perception tensors and batches.

Input samples are what ``sim2real.storage.reader.decoded_samples`` yields (``rgb`` H×W×3 uint8,
``seg`` H×W uint8 trainIds, ``boxes`` list of ``{"label", "bbox_xyxy", ...}``). Each step is a small
generator so the caller chains them: samples → :func:`frames` → batches. Randomness (flips) comes
from explicit seeds, so a rerun sees the same batches.

Missing is not empty: ``boxes`` None (no ``boxes.json``) means "no detection labels", not "no
objects", and ``seg`` None "no segmentation labels". :func:`labelled` leaves such frames out of a
task's training and evaluation and counts them; an endless stream must be filtered by the reader
(``decoded_samples(require=label_members(task))``), which fails fast when nothing is left.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sim2real.storage import schema
from sim2real.storage.taxonomy import DETECTION_CLASS_ID, IGNORE_ID

Sample = dict[str, Any]
DetectionTarget = dict[str, torch.Tensor]
#: Per perception task: the decoded sample field holding its labels, and the shard member it comes from.
TASK_LABELS: dict[str, tuple[str, str]] = {"detection": ("boxes", schema.BOXES),
                                           "segmentation": ("seg", schema.SEG)}


class NoLabelledFrames(ValueError):
    """A finite stream held no frame with the labels a task needs (the message gives the counts)."""


def label_members(task: str) -> tuple[str, ...]:
    """The shard members a frame must have to be used for ``task`` (``ValueError`` for an unknown task)."""
    if task not in TASK_LABELS:
        raise ValueError(f"unknown perception task {task!r}; known: {sorted(TASK_LABELS)}")
    return (TASK_LABELS[task][1],)


def labelled(
    samples: Iterable[Sample], task: str, left_out: dict[str, int] | None = None
) -> Iterator[Sample]:
    """The samples that carry ``task``'s labels; the others are skipped and counted in ``left_out``
    (keys ``frames_without_labels`` and ``frames_with_labels``).

    Raises :class:`NoLabelledFrames` when a finite stream ends without a single labelled frame.
    """
    member = label_members(task)[0]
    field = TASK_LABELS[task][0]
    counts = left_out if left_out is not None else {}
    counts.setdefault("frames_without_labels", 0)
    counts.setdefault("frames_with_labels", 0)
    for sample in samples:
        if sample.get(field) is None:
            counts["frames_without_labels"] += 1
            continue
        counts["frames_with_labels"] += 1
        yield sample
    if counts["frames_with_labels"] == 0:
        raise NoLabelledFrames(f"no frame has {task} labels ({counts['frames_without_labels']} frame(s) "
                               f"without {member}): nothing to train or evaluate {task} on")


@dataclass(frozen=True)
class FrameTensors:
    """One frame as tensors: image 3×H×W float in [0, 1], seg H×W int64, boxes N×4, labels N."""

    key: str
    image: torch.Tensor
    seg: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor


def _boxes_from_json(boxes: Sequence[dict[str, Any]], key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Detection classes only (others, e.g. traffic signs, are not detection targets)."""
    coords, labels = [], []
    for box in boxes:
        label = DETECTION_CLASS_ID.get(box.get("label", ""))
        if label is None:
            continue
        try:
            x1, y1, x2, y2 = (float(v) for v in box["bbox_xyxy"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"key {key!r}: boxes.json entry {box!r} has no valid bbox_xyxy") from exc
        coords.append([x1, y1, x2, y2])
        labels.append(label)
    return (
        torch.tensor(coords, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
    )


def to_tensors(
    sample: Sample, image_size: tuple[int, int] | None = None, min_box_px: float = 1.0
) -> FrameTensors:
    """Convert a decoded sample; optionally resize to ``image_size`` (H, W), scaling boxes with it.

    Boxes narrower or shorter than ``min_box_px`` after resizing are dropped (Faster R-CNN rejects them).
    """
    key = sample["__key__"]
    image = torch.from_numpy(np.array(sample["rgb"], dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    if sample.get("seg") is None:  # no segmentation labels: all ignore (a detection-only frame)
        seg = torch.full(image.shape[1:], IGNORE_ID, dtype=torch.int64)
    else:
        seg = torch.from_numpy(np.array(sample["seg"], dtype=np.int64))
    if seg.shape != image.shape[1:]:
        raise ValueError(f"key {key!r}: seg is {tuple(seg.shape)} but rgb is {tuple(image.shape[1:])}")
    boxes, labels = _boxes_from_json(sample.get("boxes") or [], key)
    if image_size is not None and tuple(image_size) != tuple(image.shape[1:]):
        scale_y, scale_x = image_size[0] / image.shape[1], image_size[1] / image.shape[2]
        image = F.interpolate(image[None], size=image_size, mode="bilinear", align_corners=False)[0]
        seg = F.interpolate(seg[None, None].float(), size=image_size, mode="nearest")[0, 0].long()
        boxes = boxes * torch.tensor([scale_x, scale_y, scale_x, scale_y])
    height, width = image.shape[1:]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_box_px) & ((boxes[:, 3] - boxes[:, 1]) >= min_box_px)
    return FrameTensors(key, image.clamp(0, 1), seg, boxes[keep], labels[keep])


def hflip(frame: FrameTensors) -> FrameTensors:
    """Mirror a frame left–right (image, labels and boxes together)."""
    width = frame.image.shape[-1]
    boxes = frame.boxes.clone()
    boxes[:, 0], boxes[:, 2] = width - frame.boxes[:, 2], width - frame.boxes[:, 0]
    return FrameTensors(frame.key, frame.image.flip(-1), frame.seg.flip(-1), boxes, frame.labels)


def frames(
    samples: Iterable[Sample],
    image_size: tuple[int, int] | None,
    flip_probability: float = 0.0,
    seed: int = 0,
    limit: int | None = None,
    min_box_px: float = 1.0,
    task: str | None = None,
    left_out: dict[str, int] | None = None,
) -> Iterator[FrameTensors]:
    """Samples → :class:`FrameTensors`, randomly mirrored, at most ``limit`` of them; with ``task``,
    only the frames that carry its labels (:func:`labelled`, counted in ``left_out``)."""
    rng = random.Random(seed)
    if task is not None:
        samples = labelled(samples, task, left_out)
    for count, sample in enumerate(samples):
        if limit is not None and count >= limit:
            return
        frame = to_tensors(sample, image_size, min_box_px)
        yield hflip(frame) if rng.random() < flip_probability else frame


def _chunks(items: Iterable[FrameTensors], batch_size: int) -> Iterator[list[FrameTensors]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunk: list[FrameTensors] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == batch_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def segmentation_batches(
    items: Iterable[FrameTensors], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images B×3×H×W, targets B×H×W int64 with 255 = ignore)``; frames must share one size."""
    for chunk in _chunks(items, batch_size):
        yield torch.stack([f.image for f in chunk]), torch.stack([f.seg for f in chunk])


def detection_batches(
    items: Iterable[FrameTensors], batch_size: int
) -> Iterator[tuple[list[torch.Tensor], list[DetectionTarget]]]:
    """``(images, targets)`` in torchvision's detection format (lists, one entry per image)."""
    for chunk in _chunks(items, batch_size):
        yield [f.image for f in chunk], [{"boxes": f.boxes, "labels": f.labels} for f in chunk]

