"""Detection metrics: perfect and empty detectors, and agreement with a direct pycocotools COCOeval run."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sim2real.models.metrics.detection import detection_metrics
from sim2real.storage.taxonomy import DETECTION_CLASSES


def _ground_truth(images: int = 6, seed: int = 0) -> list[dict]:
    """Boxes of classes 1..4 only (person, rider, car, truck); classes 5..8 never appear."""
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(images):
        count = int(rng.integers(1, 6))
        xy = rng.uniform(0, 200, size=(count, 2))
        wh = rng.uniform(8, 60, size=(count, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        result.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                       "labels": torch.tensor(rng.integers(1, 5, size=count))})
    return result


def test_ground_truth_detector_scores_100_and_empty_detector_scores_0() -> None:
    gt = _ground_truth()
    perfect = [{**g, "scores": torch.ones(len(g["labels"]))} for g in gt]
    metrics = detection_metrics(gt, perfect)
    present = {DETECTION_CLASSES[i - 1] for g in gt for i in g["labels"].tolist()}
    for name in DETECTION_CLASSES:
        if name in present:
            assert metrics.ap[name] == pytest.approx(100.0) and metrics.ap50[name] == pytest.approx(100.0)
        else:  # no ground truth: reported as NaN, not 0
            assert math.isnan(metrics.ap[name]) and math.isnan(metrics.ap50[name])
    assert metrics.mean_ap == pytest.approx(100.0)

    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "scores": torch.zeros(0)} for _ in gt]
    metrics = detection_metrics(gt, empty)
    assert all(metrics.ap[name] == 0.0 for name in present)
    assert metrics.mean_ap == 0.0 and metrics.mean_ap50 == 0.0


def _noisy_predictions(gt: list[dict], seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    result = []
    for g in gt:
        boxes = g["boxes"].numpy() + rng.normal(0, 4, size=g["boxes"].shape)
        labels = g["labels"].numpy().copy()
        flip = rng.random(len(labels)) < 0.25
        labels[flip] = rng.integers(1, 9, size=int(flip.sum()))
        extra = rng.uniform(0, 200, size=(3, 2))
        boxes = np.concatenate([boxes, np.concatenate([extra, extra + 20], axis=1)])
        labels = np.concatenate([labels, rng.integers(1, 9, size=3)])
        result.append({"boxes": boxes, "labels": labels, "scores": rng.uniform(0.05, 1, size=len(labels))})
    return result


def _direct_cocoeval(gt: list[dict], preds: list[dict], category: int) -> tuple[float, float]:
    """Independent reference: pycocotools' own loadRes path, restricted to one category."""
    annotations = []
    for image_id, g in enumerate(gt):
        for box, label in zip(g["boxes"].tolist(), g["labels"].tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    results = [{"image_id": image_id, "category_id": int(label), "score": float(score),
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
               for image_id, p in enumerate(preds)
               for b, label, score in zip(p["boxes"], p["labels"], p["scores"], strict=True)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": [{"id": i} for i in range(len(gt))], "annotations": annotations,
                           "categories": [{"id": i + 1, "name": n} for i, n in enumerate(DETECTION_CLASSES)]}
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        evaluator.params.catIds = [category]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[0] * 100, evaluator.stats[1] * 100


def test_per_class_ap_equals_pycocotools_per_category_run() -> None:
    gt = _ground_truth(images=8, seed=3)
    preds = _noisy_predictions(gt)
    metrics = detection_metrics(gt, preds)
    checked = 0
    for category, name in enumerate(DETECTION_CLASSES, start=1):
        ap, ap50 = _direct_cocoeval(gt, preds, category)
        if ap < 0:  # pycocotools' -1: no ground truth for this class
            assert math.isnan(metrics.ap[name])
            continue
        assert metrics.ap[name] == pytest.approx(ap, abs=1e-9)
        assert metrics.ap50[name] == pytest.approx(ap50, abs=1e-9)
        checked += 1
    assert checked == 4
    assert 0 < metrics.mean_ap < 100


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="ground-truth images"):
        detection_metrics(_ground_truth(2), [])


def test_min_box_area_ignores_tiny_ground_truth_and_tiny_detections() -> None:
    gt = [{"boxes": torch.tensor([[0.0, 0.0, 40.0, 40.0], [50.0, 50.0, 53.0, 53.0]]),
           "labels": torch.tensor([3, 3])}]
    # Finds the big car, misses the 3×3 one, and adds a 2×2 false positive with a high score.
    preds = [{"boxes": torch.tensor([[0.0, 0.0, 40.0, 40.0], [90.0, 90.0, 92.0, 92.0]]),
              "labels": torch.tensor([3, 3]), "scores": torch.tensor([0.5, 0.9])}]
    plain = detection_metrics(gt, preds)
    assert plain.ap["car"] < 60.0  # the miss and the false positive both count
    ignoring = detection_metrics(gt, preds, min_box_area=8 * 8)
    assert ignoring.ap["car"] == pytest.approx(100.0)
    tiny_only = [{"boxes": torch.tensor([[50.0, 50.0, 53.0, 53.0]]), "labels": torch.tensor([1])}]
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "scores": torch.zeros(0)}]
    assert math.isnan(detection_metrics(tiny_only, empty, min_box_area=64).ap["person"])
