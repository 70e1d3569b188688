"""Translation-quality metrics: fidelity and flips from a confusion matrix, realism, detail readers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from sim2real.models.metrics.translation import (
    RealismConfig,
    flip_matrix,
    json_safe,
    label_fidelity,
    ratio,
    realism_distance,
)
from sim2real.models.metrics.translation_detail import detail_readings, edge_agreement, retention_summary
from sim2real.models.metrics.translation_eval import is_validation
from sim2real.storage.sources.toysim import ToySimConfig, render_frame
from sim2real.storage.sources.toysim_font import text_bitmap
from sim2real.storage.sources.toysim_scene import SPEED_LIMITS
from sim2real.storage.taxonomy import NUM_TRAIN_CLASSES, TRAIN_ID_BY_NAME

ROAD, CAR, SKY = TRAIN_ID_BY_NAME["road"], TRAIN_ID_BY_NAME["car"], TRAIN_ID_BY_NAME["sky"]


def test_fidelity_and_flip_matrix_from_confusion():
    cm = np.zeros((NUM_TRAIN_CLASSES, NUM_TRAIN_CLASSES), np.int64)
    cm[ROAD, ROAD] = 90
    cm[ROAD, CAR] = 10  # 10% of road pixels flipped to car
    cm[CAR, CAR] = 50
    fidelity = label_fidelity(cm)
    assert fidelity["iou"]["road"] == pytest.approx(0.9)
    assert fidelity["iou"]["car"] == pytest.approx(50 / 60)
    assert set(fidelity["iou"]) == {"road", "car"}
    assert fidelity["miou"] == pytest.approx((0.9 + 50 / 60) / 2)
    flips = flip_matrix(cm)
    assert flips == {"road": {"road": 0.9, "car": 0.1}, "car": {"car": 1.0}}


def test_ratio_and_json_safety():
    assert ratio(0.4, 0.5) == pytest.approx(0.8)
    assert ratio(0.4, 0.0) is None and ratio(float("nan"), 0.5) is None
    assert json_safe({"a": [float("nan"), 1.0], "b": float("inf")}) == {"a": [None, 1.0], "b": None}


def _textured(n: int, seed: int, tint: tuple[float, float, float], noise: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(tint).view(1, 3, 1, 1).expand(n, 3, 48, 64)
    return (base + noise * torch.randn(n, 3, 48, 64, generator=g)).clamp(0, 1)


def test_realism_distance_orders_domains():
    config = RealismConfig(levels=2, patch_size=5, patches_per_image=64, projections=64)
    reference = _textured(8, 0, (0.4, 0.4, 0.45), 0.08)
    same_domain = _textured(8, 1, (0.4, 0.4, 0.45), 0.08)
    other_colour = _textured(8, 2, (0.7, 0.3, 0.2), 0.08)
    too_clean = _textured(8, 3, (0.4, 0.4, 0.45), 0.0)
    near = realism_distance(same_domain, reference, config)["swd"]
    assert near < 0.5 * realism_distance(other_colour, reference, config)["swd"]
    assert near < 0.5 * realism_distance(too_clean, reference, config)["swd"]
    result = realism_distance(same_domain, reference, config)
    assert result["swd"] == near and len(result["swd_levels"]) == 3, "deterministic; bands + low-pass"


def test_edge_agreement():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
    mask = np.ones((20, 20), np.uint8)
    assert edge_agreement(image, image, mask) == pytest.approx(1.0)
    other = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
    assert abs(edge_agreement(image, other, mask)) < 0.3
    assert edge_agreement(image, image, np.zeros((20, 20), np.uint8)) is None


@pytest.fixture(scope="module")
def sim_frames():
    return [render_frame(ToySimConfig(style="sim", height=192, width=384, seed=5), i) for i in range(16)]


def _readings(frames, transform) -> dict:
    bitmaps = {v: text_bitmap(str(v)) for v in SPEED_LIMITS}
    counts: Counter = Counter()
    for frame in frames:
        counts.update(detail_readings(transform(frame.rgb), frame.meta, bitmaps))
    return retention_summary(counts, [])


def test_detail_readers_read_raw_frames_and_notice_damage(sim_frames):
    raw = _readings(sim_frames, lambda rgb: rgb)
    assert raw["lights_scored"] >= 5 and raw["signs_scored"] >= 5
    assert raw["light_color_accuracy"] >= 0.6 and raw["sign_digit_accuracy"] >= 0.6
    gray = _readings(sim_frames, lambda rgb: np.repeat(rgb.mean(2, keepdims=True), 3, 2).astype(np.uint8))
    assert gray["light_color_accuracy"] <= 0.2, "a grey lamp has no colour to read"
    blurred = _readings(
        sim_frames, lambda rgb: np.asarray(Image.fromarray(rgb).filter(ImageFilter.BoxBlur(2)))
    )
    assert blurred["sign_digit_accuracy"] <= 0.5 * raw["sign_digit_accuracy"], "blur erases the digits"


def test_validation_split_is_deterministic():
    keys = [f"frame-{i:05d}" for i in range(2000)]
    held_out = [k for k in keys if is_validation(k, 0.2)]
    assert held_out == [k for k in keys if is_validation(k, 0.2)]
    assert 0.16 < len(held_out) / len(keys) < 0.24
    assert set(held_out) <= {k for k in keys if is_validation(k, 0.3)}
