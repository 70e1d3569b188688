"""Semantic segmentation metrics from a confusion matrix (Cityscapes protocol).

Pixels whose target is ``ignore_index`` (255) are not counted. Per-class IoU = TP / (TP + FP + FN);
a class absent from both target and prediction has IoU NaN and is skipped by the mean.
"""

from __future__ import annotations

import numpy as np
import torch

from sim2real.storage.taxonomy import IGNORE_ID, NUM_TRAIN_CLASSES


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def confusion_matrix(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    num_classes: int = NUM_TRAIN_CLASSES,
    ignore_index: int = IGNORE_ID,
) -> np.ndarray:
    """``num_classes × num_classes`` int64 counts, rows = target class, columns = predicted class.

    Target pixels equal to ``ignore_index`` or outside ``[0, num_classes)`` are skipped. A prediction
    outside the range on a valid pixel is an error (it would silently vanish otherwise).
    """
    pred_np, target_np = _as_numpy(pred).astype(np.int64).ravel(), _as_numpy(target).astype(np.int64).ravel()
    if pred_np.shape != target_np.shape:
        raise ValueError(f"confusion_matrix: pred has {pred_np.size} pixels, target {target_np.size}")
    valid = (target_np != ignore_index) & (target_np >= 0) & (target_np < num_classes)
    pred_np, target_np = pred_np[valid], target_np[valid]
    if pred_np.size and (pred_np.min() < 0 or pred_np.max() >= num_classes):
        raise ValueError(f"confusion_matrix: predictions outside [0, {num_classes}) on valid pixels")
    counts = np.bincount(target_np * num_classes + pred_np, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of every class (float64); NaN where the class is in neither target nor prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    true_positive = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of :func:`iou_per_class` over classes that are not NaN (NaN if every class is)."""
    ious = iou_per_class(cm)
    if np.all(np.isnan(ious)):
        return float("nan")
    return float(np.nanmean(ious))


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of valid pixels predicted correctly (NaN for an empty matrix)."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")
