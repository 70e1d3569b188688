"""Translation quality: label fidelity (FCN-score), the flip matrix and a realism distance.

* Label fidelity follows the FCN-score protocol of pix2pix/CycleGAN: a segmenter trained on the target
  (real) domain labels translated frames, scored against the *source* labels (per-class IoU, mIoU).
  Its score on held-out real frames is the reference: a faithful, realistic translation scores close.
* The flip matrix is the row-normalised confusion matrix: for each source class, where its pixels go.
* The realism distance needs no pretrained network: a sliced Wasserstein distance between random
  7×7 patches of the Laplacian pyramids of two image sets (bands plus the low-pass residual, so both
  texture and colour count), each level normalised by the *reference* set's channel statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from sim2real.models.metrics.segmentation import iou_per_class, mean_iou, pixel_accuracy
from sim2real.models.translator.losses import laplacian_pyramid
from sim2real.storage.taxonomy import TRAIN_CLASSES


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReferenceSegmenterConfig(_Frozen):
    """The target-trained segmenter behind label fidelity: architecture and training budget."""

    backbone: str = Field(default="resnet18", description="models.segmenter backbone registry key")
    output_stride: int = Field(default=16, description="backbone output stride: 8, 16 or 32")
    aspp_channels: int = Field(default=64, ge=8)
    low_level_channels: int = Field(default=24, ge=4)
    decoder_channels: int = Field(default=64, ge=8)
    steps: int = Field(default=300, ge=1, description="optimizer steps on target training frames")
    batch_size: int = Field(default=8, ge=1)
    crop_height: int = Field(default=128, ge=16)
    crop_width: int = Field(default=128, ge=16)
    lr: float = Field(default=1e-3, gt=0, description="AdamW learning rate (cosine-decayed)")


class RealismConfig(_Frozen):
    """Sliced Wasserstein distance over Laplacian-pyramid patches."""

    levels: int = Field(
        default=3, ge=1, le=6, description="band-pass levels; the low-pass residual is one more"
    )
    patch_size: int = Field(default=7, ge=1, description="patch side (pixels at each level)")
    patches_per_image: int = Field(default=64, ge=1, description="random patches drawn per image and level")
    projections: int = Field(default=128, ge=1, description="random directions of the sliced distance")
    seed: int = 0


class TranslationMetricsConfig(_Frozen):
    """What the translator's evaluation computes and on how many frames."""

    frames: int = Field(
        default=32, ge=1, description="held-out sim frames translated and scored (and real frames)"
    )
    val_fraction: float = Field(default=0.2, gt=0, lt=1, description="share of keys held out for evaluation")
    batch_size: int = Field(default=8, ge=1, description="frames per inference batch")
    segmenter: ReferenceSegmenterConfig = ReferenceSegmenterConfig()
    realism: RealismConfig = RealismConfig()
    sign_glyphs: Literal["toysim"] | None = Field(
        default=None,
        description="glyph set to read speed-limit sign digits against: the toy simulator's ('toysim'); "
        "None: sign digits are not read (real simulators draw their own)",
    )


def label_fidelity(cm: np.ndarray) -> dict[str, object]:
    """mIoU, pixel accuracy and per-class IoU (classes present in the target or prediction only)."""
    ious = iou_per_class(cm)
    return {
        "miou": mean_iou(cm),
        "pixel_accuracy": pixel_accuracy(cm),
        "iou": {TRAIN_CLASSES[i]: float(v) for i, v in enumerate(ious) if not math.isnan(v)},
    }


def flip_matrix(cm: np.ndarray, min_fraction: float = 0.01) -> dict[str, dict[str, float]]:
    """For each source class with pixels: the fractions of its pixels predicted as each class (≥ min)."""
    cm = np.asarray(cm, dtype=np.float64)
    flips: dict[str, dict[str, float]] = {}
    for src, row in enumerate(cm):
        total = row.sum()
        if total == 0:
            continue
        shares = row / total
        flips[TRAIN_CLASSES[src]] = {
            TRAIN_CLASSES[dst]: round(float(share), 4)
            for dst, share in sorted(enumerate(shares), key=lambda kv: -kv[1])
            if share >= min_fraction
        }
    return flips


def pyramid_levels(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``levels`` Laplacian bands of N×3×H×W images, then the low-pass residual."""
    return laplacian_pyramid(images.float(), levels, residual=True)


def patch_descriptors(
    level: torch.Tensor, patch: int, count: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` random patch×patch patches per image, flattened: (N·count)×(3·patch²)."""
    n, c, h, w = level.shape
    if h < patch or w < patch:
        level = F.pad(level, (0, max(patch - w, 0), 0, max(patch - h, 0)), mode="replicate")
        h, w = level.shape[-2:]
    patches = F.unfold(level, patch)  # N × (C·p²) × L
    index = torch.randint(0, patches.shape[-1], (n, count), generator=generator)
    picked = torch.gather(patches, 2, index[:, None, :].expand(-1, patches.shape[1], -1))
    return picked.permute(0, 2, 1).reshape(n * count, c * patch * patch)


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, projections: int, generator: torch.Generator
) -> float:
    """Sliced 1-Wasserstein distance between two point sets (rows) of equal dimension."""
    count = min(a.shape[0], b.shape[0])
    a = a[torch.randperm(a.shape[0], generator=generator)[:count]]
    b = b[torch.randperm(b.shape[0], generator=generator)[:count]]
    directions = torch.randn(a.shape[1], projections, generator=generator)
    directions = directions / directions.norm(dim=0, keepdim=True)
    proj_a, _ = (a @ directions).sort(dim=0)
    proj_b, _ = (b @ directions).sort(dim=0)
    return float((proj_a - proj_b).abs().mean())


def realism_distance(
    images: torch.Tensor, reference: torch.Tensor, config: RealismConfig
) -> dict[str, object]:
    """SWD between two sets of N×3×H×W images in [0, 1]; lower = closer to ``reference``."""
    generator = torch.Generator().manual_seed(config.seed)
    per_level = []
    for level_x, level_ref in zip(
        pyramid_levels(images, config.levels), pyramid_levels(reference, config.levels), strict=True
    ):
        mean = level_ref.mean(dim=(0, 2, 3), keepdim=True)
        std = level_ref.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
        desc_x = patch_descriptors(
            (level_x - mean) / std, config.patch_size, config.patches_per_image, generator
        )
        desc_r = patch_descriptors(
            (level_ref - mean) / std, config.patch_size, config.patches_per_image, generator
        )
        per_level.append(sliced_wasserstein(desc_x, desc_r, config.projections, generator))
    return {"swd": float(np.mean(per_level)), "swd_levels": [round(v, 5) for v in per_level]}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; None when either is missing, NaN or the denominator is 0."""
    if numerator is None or denominator is None or math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator if denominator else None


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None (strict JSON for cards and artifacts)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def summarize(translated: Mapping[str, Any], raw: Mapping[str, Any], reference_miou: float) -> dict[str, Any]:
    """The headline numbers a card and a report show side by side (translated vs raw sim)."""
    summary = {
        "segmenter_miou_real": reference_miou,
        "fidelity_miou_translated": translated["miou"],
        "fidelity_miou_raw_sim": raw["miou"],
        "fidelity_ratio_translated": ratio(translated["miou"], reference_miou),
        "fidelity_ratio_raw_sim": ratio(raw["miou"], reference_miou),
        "realism_swd_translated": translated["swd"],
        "realism_swd_raw_sim": raw["swd"],
        "edge_agreement_translated": translated["detail"]["edge_agreement"],
    }
    for name in ("light_color_accuracy", "sign_digit_accuracy"):
        summary[f"{name}_translated"] = translated["detail"][name]
        summary[f"{name}_raw_sim"] = raw["detail"][name]
    return summary


#: Summary metrics compared student vs teacher: (name, whether higher is better).
COMPARED_METRICS: tuple[tuple[str, bool], ...] = (
    ("fidelity_miou_translated", True),
    ("edge_agreement_translated", True),
    ("light_color_accuracy_translated", True),
    ("sign_digit_accuracy_translated", True),
    ("realism_swd_translated", False),
)


def relative_difference(student: float | None, teacher: float | None) -> float | None:
    """``(student - teacher) / |teacher|`` in percent; None when either is missing or the teacher is 0."""
    if student is None or teacher is None or teacher == 0:
        return None
    return 100.0 * (student - teacher) / abs(teacher)


def compare(student: Mapping[str, Any], teacher: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per compared metric: both values, the student's % difference, and whether it is worse by > 5 %."""
    rows = {}
    for name, higher_is_better in COMPARED_METRICS:
        s, t = student.get(name), teacher.get(name)
        diff = relative_difference(s, t)
        worse = None if diff is None else (-diff if higher_is_better else diff) > 5.0
        rows[name] = {"student": s, "teacher": t, "difference_pct": diff, "worse_by_over_5pct": worse}
    return rows
