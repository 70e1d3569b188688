"""Detection metrics through pycocotools' COCOeval: per-class AP@[.5:.95], AP50 and their means.

Values are percentages (0–100) as in the COCO and Cityscapes tables. A class with no ground-truth box
in the evaluated set has NaN AP (COCOeval marks it -1) and is left out of the means, never counted as 0.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sim2real.storage.taxonomy import DETECTION_CLASSES

ArrayLike = np.ndarray | torch.Tensor | Sequence
Detections = Mapping[str, ArrayLike]  # boxes N×4 xyxy pixels, labels N (1-based), scores N (predictions)


@dataclass(frozen=True)
class DetectionMetrics:
    """Per-class AP and AP50 (percent, NaN = no ground truth) and their NaN-skipping means."""

    ap: dict[str, float] = field(default_factory=dict)
    ap50: dict[str, float] = field(default_factory=dict)
    mean_ap: float = float("nan")
    mean_ap50: float = float("nan")


def _rows(value: ArrayLike, width: int | None = None) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    array = array.astype(np.float64)
    return array.reshape(-1, width) if width else array.reshape(-1)


def _coco(images: list[dict], annotations: list[dict], class_names: Sequence[str]) -> COCO:
    coco = COCO()
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _annotations(per_image: Sequence[Detections], with_scores: bool) -> list[dict]:
    annotations: list[dict] = []
    for image_id, detections in enumerate(per_image):
        boxes = _rows(detections["boxes"], 4)
        labels = _rows(detections["labels"]).astype(np.int64)
        scores = _rows(detections["scores"]) if with_scores else np.ones(len(labels))
        if not (len(boxes) == len(labels) == len(scores)):
            counts = f"{len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores"
            raise ValueError(f"image {image_id}: {counts}")
        for box, label, score in zip(boxes, labels, scores, strict=True):
            width, height = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [float(box[0]), float(box[1]), width, height],
                    "area": width * height,
                    "iscrowd": 0,
                    "score": float(score),
                }
            )
    return annotations


def coco_eval(
    ground_truth: Sequence[Detections],
    predictions: Sequence[Detections],
    class_names: Sequence[str] = DETECTION_CLASSES,
    min_box_area: float = 0.0,
) -> COCOeval:
    """Run COCOeval (bbox) over aligned per-image ground truth and predictions; return the evaluator.

    ``min_box_area`` (pixels²) raises the lower bound of COCO's "all" area range: smaller ground-truth
    boxes are ignored (neither hits nor misses) and so are unmatched detections that small.
    0 is the plain COCO protocol.
    """
    if len(ground_truth) != len(predictions):
        raise ValueError(
            f"coco_eval: {len(ground_truth)} ground-truth images but {len(predictions)} predictions"
        )
    images = [{"id": i} for i in range(len(ground_truth))]
    coco_gt = _coco(images, _annotations(ground_truth, with_scores=False), class_names)
    coco_dt = _coco(images, _annotations(predictions, with_scores=True), class_names)
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    evaluator.params.areaRng[0] = [float(min_box_area), evaluator.params.areaRng[0][1]]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _mean_valid(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(valid.mean() * 100) if valid.size else float("nan")


def detection_metrics(
    ground_truth: Sequence[Detections],
    predictions: Sequence[Detections],
    class_names: Sequence[str] = DETECTION_CLASSES,
    min_box_area: float = 0.0,
) -> DetectionMetrics:
    """Per-class COCO AP@[.5:.95] and AP50 from COCOeval's precision array (area "all", 100 detections).

    A class whose every ground-truth box is ignored (see :func:`coco_eval`) counts as absent (NaN).
    """
    evaluator = coco_eval(ground_truth, predictions, class_names, min_box_area)
    # precision: [IoU thresholds T, recall points R, classes K, area ranges A, max detections M]
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    iou_50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
    ap = {name: _mean_valid(precision[:, :, k]) for k, name in enumerate(class_names)}
    ap50 = {name: _mean_valid(precision[iou_50, :, k]) for k, name in enumerate(class_names)}
    return DetectionMetrics(
        ap=ap, ap50=ap50, mean_ap=_nanmean(ap.values()), mean_ap50=_nanmean(ap50.values())
    )


def _nanmean(values) -> float:
    array = np.asarray(list(values), dtype=np.float64)
    return float(np.nanmean(array)) if np.any(~np.isnan(array)) else float("nan")
