"""Scoring a translator: train the target-domain reference segmenter, then compare translated vs raw sim.

Every number is computed for the translated frames *and* the raw sim frames, so a report always shows
what translation bought: label fidelity (with the segmenter's own score on held-out real frames as the
reference), the flip matrix, fine-detail retention and the realism distance to real frames.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sim2real.models.metrics.segmentation import confusion_matrix
from sim2real.models.metrics.translation import (
    ReferenceSegmenterConfig,
    TranslationMetricsConfig,
    compare,
    flip_matrix,
    json_safe,
    label_fidelity,
    realism_distance,
    summarize,
)
from sim2real.models.metrics.translation_detail import detail_readings, edge_agreement, retention_summary
from sim2real.models.perception_model import train_one_epoch
from sim2real.models.segmenter import SegmenterConfig, build_segmenter, predict, segmentation_loss
from sim2real.models.translator.data import detail_mask, random_crop_flip
from sim2real.models.translator.inference import translate_batch
from sim2real.models.translator.model import Translator
from sim2real.storage.taxonomy import IGNORE_ID


def is_validation(key: str, fraction: float) -> bool:
    """Deterministic held-out split by key hash: the same key is always on the same side."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 < fraction


def to_tensor(rgbs: Sequence[np.ndarray]) -> torch.Tensor:
    """H×W×3 uint8 arrays of one size → N×3×H×W float in [0, 1]."""
    return torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float().div(255.0)


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """N×3×H×W floats in [0, 1] → H×W×3 uint8 arrays."""
    return list(images.clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy())


def segmenter_batches(
    samples: Iterable[Mapping[str, Any]], config: ReferenceSegmenterConfig, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Random-crop, random-flip ``(images [0,1], trainIds int64)`` batches from decoded samples."""
    rng = np.random.default_rng(seed)
    it = iter(samples)
    while True:
        chunk = list(itertools.islice(it, config.batch_size))
        if len(chunk) < config.batch_size:
            return
        crops = [
            random_crop_flip(
                [s["rgb"], s["seg"]], [None, IGNORE_ID], config.crop_height, config.crop_width, True, rng
            )
            for s in chunk
        ]
        yield (
            to_tensor([c[0] for c in crops]),
            torch.from_numpy(np.stack([c[1] for c in crops]).astype(np.int64)),
        )


def train_reference_segmenter(
    samples: Iterable[Mapping[str, Any]],
    config: ReferenceSegmenterConfig,
    device: torch.device | str,
    seed: int = 0,
) -> nn.Module:
    """A DeepLabV3+ trained for ``config.steps`` steps on target (real) samples; random init, AdamW."""
    torch.manual_seed(seed)
    model = build_segmenter(
        SegmenterConfig(
            backbone=config.backbone,
            output_stride=config.output_stride,
            aspp_channels=config.aspp_channels,
            low_level_channels=config.low_level_channels,
            decoder_channels=config.decoder_channels,
        )
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps)
    batches = itertools.islice(segmenter_batches(samples, config, seed), config.steps)
    stats = train_one_epoch(model, optimizer, batches, segmentation_loss, device, 0, lr_scheduler=schedule)
    if int(stats["steps"]) < config.steps:
        raise RuntimeError(
            f"reference segmenter: data ran out after {int(stats['steps'])}/{config.steps} steps"
        )
    return model.eval()


def segment(segmenter: nn.Module, images: torch.Tensor, device: torch.device, batch: int) -> torch.Tensor:
    return torch.cat(
        [predict(segmenter, images[i : i + batch], device) for i in range(0, len(images), batch)]
    )


def _translate(translator: Translator, images: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat(
        [translate_batch(translator, images[i : i + batch]) for i in range(0, len(images), batch)]
    )


def domain_scores(
    images: torch.Tensor,
    frames: Sequence[Mapping[str, Any]],
    real_images: torch.Tensor,
    segmenter: nn.Module,
    config: TranslationMetricsConfig,
    device: torch.device,
    bitmaps: Mapping[int, np.ndarray],
) -> dict[str, Any]:
    """Fidelity, flips, realism and detail readings of one image set (translated or raw) of ``frames``."""
    labels = np.stack([f["seg"] for f in frames])
    cm = confusion_matrix(segment(segmenter, images, device, config.batch_size), labels)
    counts: Counter[str] = Counter()
    edges = []
    for rgb, frame in zip(to_uint8(images), frames, strict=True):
        counts.update(detail_readings(rgb, frame.get("meta", {}), bitmaps))
        agreement = edge_agreement(frame["rgb"], rgb, detail_mask(frame["seg"], frame.get("meta", {})))
        if agreement is not None:
            edges.append(agreement)
    fidelity = label_fidelity(cm)
    return {
        "miou": fidelity["miou"],
        "fidelity": fidelity,
        "flip_matrix": flip_matrix(cm),
        **realism_distance(images, real_images, config.realism),
        "detail": retention_summary(counts, edges),
    }


def real_reference(
    real_frames: Sequence[Mapping[str, Any]],
    segmenter: nn.Module,
    config: TranslationMetricsConfig,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The held-out real frames as N×3×H×W floats in [0, 1], and the segmenter's label fidelity on them
    (the reference a translation's fidelity is compared with)."""
    real_images = to_tensor([f["rgb"] for f in real_frames])
    real_labels = np.stack([f["seg"] for f in real_frames])
    predicted = segment(segmenter, real_images, device, config.batch_size)
    return real_images, label_fidelity(confusion_matrix(predicted, real_labels))


def evaluate_translation(
    translator: Translator,
    sim_frames: Sequence[Mapping[str, Any]],
    real_frames: Sequence[Mapping[str, Any]],
    segmenter: nn.Module,
    config: TranslationMetricsConfig,
    device: torch.device | str,
    digit_bitmaps: Mapping[int, np.ndarray] | None = None,
) -> dict[str, Any]:
    """All translation metrics on held-out frames, translated vs raw sim, plus the real reference."""
    device = torch.device(device)
    bitmaps = digit_bitmaps or {}
    real_images, reference = real_reference(real_frames, segmenter, config, device)
    raw_images = to_tensor([f["rgb"] for f in sim_frames])
    translated_images = _translate(translator, raw_images, config.batch_size).cpu()
    translated = domain_scores(
        translated_images, sim_frames, real_images, segmenter, config, device, bitmaps
    )
    raw = domain_scores(raw_images, sim_frames, real_images, segmenter, config, device, bitmaps)
    return json_safe(
        {
            "summary": summarize(translated, raw, float(reference["miou"])),
            "translated": translated,
            "raw_sim": raw,
            "real_reference": reference,
            "frames": {"sim": len(sim_frames), "real": len(real_frames)},
        }
    )


def with_teacher(student: Mapping[str, Any], teacher: Mapping[str, Any]) -> dict[str, Any]:
    """A student's :func:`evaluate_translation` result with its teacher's on the same frames: the
    teacher's ``teacher_summary`` and ``vs_teacher`` (:func:`compare`) added."""
    return {
        **student,
        "teacher_summary": teacher["summary"],
        "vs_teacher": compare(student["summary"], teacher["summary"]),
    }
