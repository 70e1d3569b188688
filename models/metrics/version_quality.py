"""Quality of a translated *version*: its stored frames against their source frames and real frames.

The translator's own evaluation (``translation_eval.evaluate_translation``) scores a checkpoint on
held-out frames it translates itself. The nightly gate asks a narrower question about the frames a
version actually holds: given the same real-trained reference segmenter, how well do the translated
frames keep their labels (label fidelity), their fine detail (edge agreement, lamp colours, sign
digits) and how close do they come to real frames (realism distance), each next to the raw sim frames.
The result has the same shape as ``evaluate_translation``'s, so one report reader serves both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sim2real.models.metrics.translation import (
    TranslationMetricsConfig,
    summarize,
)
from sim2real.models.metrics.translation_eval import domain_scores, real_reference, to_tensor

Frame = Mapping[str, Any]  # a decoded sample: rgb (H×W×3 uint8), seg, meta


def score_translated_version(
    translated: Sequence[Frame],
    source: Sequence[Frame],
    real: Sequence[Frame],
    segmenter: nn.Module,
    config: TranslationMetricsConfig,
    device: torch.device | str,
    digit_bitmaps: Mapping[int, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Translated frames vs the raw sim frames they came from (same keys, same order) and held-out real."""
    if [f["__key__"] for f in translated] != [f["__key__"] for f in source]:
        raise ValueError(
            "score_translated_version: translated and source frames must have the same keys in order"
        )
    if not translated or not real:
        raise ValueError(
            f"score_translated_version: need frames (translated {len(translated)}, real {len(real)})"
        )
    device = torch.device(device)
    bitmaps = digit_bitmaps or {}
    real_images, reference = real_reference(real, segmenter, config, device)
    scored = {
        name: domain_scores(
            to_tensor([f["rgb"] for f in frames]), source, real_images, segmenter, config, device, bitmaps
        )
        for name, frames in (("translated", translated), ("raw_sim", source))
    }
    return {
        "summary": summarize(scored["translated"], scored["raw_sim"], float(reference["miou"])),
        **scored,
        "real_reference": reference,
        "frames": {"sim": len(source), "real": len(real)},
    }
