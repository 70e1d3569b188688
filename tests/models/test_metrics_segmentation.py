"""Segmentation metrics against a small case checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sim2real.models.metrics.segmentation import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy


def test_miou_with_ignore_pixels_matches_hand_count() -> None:
    # 3 classes; 255 = ignore. Prediction under ignore pixels must not count.
    target = np.array([[0, 0, 1, 1], [0, 255, 1, 255], [2, 2, 255, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 2, 1, 0], [2, 0, 1, 1]], dtype=np.int64)
    cm = confusion_matrix(pred, target, num_classes=3)
    # valid pixels: class 0 at (0,0) (0,1) (1,0) -> pred 0,1,0 ; class 1 at (0,2)(0,3)(1,2) -> 1,1,1 ;
    # class 2 at (2,0)(2,1) -> 2,0
    assert cm.tolist() == [[2, 1, 0], [0, 3, 0], [1, 0, 1]]
    assert cm.dtype == np.int64
    # IoU0 = 2/(3+3-2)=0.5 ; IoU1 = 3/(3+4-3)=0.75 ; IoU2 = 1/(2+1-1)=0.5
    np.testing.assert_allclose(iou_per_class(cm), [0.5, 0.75, 0.5])
    assert mean_iou(cm) == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert pixel_accuracy(cm) == pytest.approx(6 / 8)


def test_absent_class_is_nan_and_skipped_but_false_positive_class_is_zero() -> None:
    target = torch.tensor([[0, 0], [1, 1]])
    pred = torch.tensor([[0, 0], [1, 3]])
    ious = iou_per_class(confusion_matrix(pred, target, num_classes=5))
    assert ious[0] == 1.0 and ious[1] == 0.5 and ious[3] == 0.0
    assert math.isnan(ious[2]) and math.isnan(ious[4])
    assert mean_iou(confusion_matrix(pred, target, num_classes=5)) == pytest.approx(1.5 / 3)


def test_default_is_19_classes_and_all_ignore_gives_nan() -> None:
    target = np.full((4, 4), 255, dtype=np.uint8)
    cm = confusion_matrix(np.zeros((4, 4)), target)
    assert cm.shape == (19, 19) and cm.sum() == 0
    assert math.isnan(mean_iou(cm))


def test_shape_mismatch_and_out_of_range_prediction_raise() -> None:
    with pytest.raises(ValueError, match="pixels"):
        confusion_matrix(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([19]), np.array([0]))
