"""Fine-detail retention: do edges, lamp colours and sign digits survive translation?

* ``edge_agreement``: Pearson correlation of luminance gradient magnitudes between the sim frame and its
  translation inside the fine-detail mask (traffic signs, lights, lane-mark boxes).
* ``read_light_color``: a fixed, hand-made reader — which of the three lamps (red top, yellow middle,
  green bottom) is brightest and whether its hue agrees. Applied to raw and translated frames against
  the simulator's truth in ``meta.json``.
* ``read_speed_limit``: template matching of the digit area of a round sign against bitmaps of every
  candidate limit (the caller passes them in, e.g. from the toy simulator's font).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LIGHT_COLORS = ("red", "yellow", "green")  # top to bottom in the housing
_HUE_PROTOTYPES = np.array([[1.0, 0.15, 0.1], [1.0, 0.8, 0.1], [0.1, 1.0, 0.5]])
MIN_LIGHT_HEIGHT_PX = 8  # smaller housings are not legible and are skipped
MIN_SIGN_WIDTH_PX = 12  # smaller (or partly hidden, non-square) signs are skipped
DIGIT_BOX_WIDTH = 0.55  # the digits' box as a fraction of the sign's width (toy simulator layout)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 uint8/float → H×W float luma in [0, 1] (uint8) or the input range."""
    rgb = rgb.astype(np.float64) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def gradient_magnitude(gray: np.ndarray) -> np.ndarray:
    """Central-difference gradient magnitude of an H×W image."""
    gy, gx = np.gradient(gray)
    return np.hypot(gx, gy)


def edge_agreement(
    source: np.ndarray, output: np.ndarray, mask: np.ndarray, min_pixels: int = 16
) -> float | None:
    """Pearson correlation of gradient magnitudes inside ``mask`` (None if too few pixels or no edges)."""
    if int(mask.sum()) < min_pixels:
        return None
    a = gradient_magnitude(luminance(source))[mask > 0]
    b = gradient_magnitude(luminance(output))[mask > 0]
    if a.std() < 1e-9 or b.std() < 1e-9:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _crop(rgb: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
    x1, y1, x2, y2 = (int(round(v)) for v in bbox)
    return rgb[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)]


def read_light_color(rgb: np.ndarray, bbox: Sequence[float]) -> str | None:
    """The lit lamp's colour read from a traffic-light housing ``bbox`` (None when too small).

    Position (which third is brightest) and hue (nearest chromaticity prototype) must agree;
    otherwise the reading is ``"unclear"``.
    """
    crop = _crop(rgb, bbox).astype(np.float64)
    if crop.shape[0] < MIN_LIGHT_HEIGHT_PX or crop.shape[1] < 1:
        return None
    thirds = np.array_split(crop, 3, axis=0)
    brightness = [float(luminance(t).max()) if t.size else 0.0 for t in thirds]
    index = int(np.argmax(brightness))
    lamp = thirds[index].reshape(-1, 3)
    top = lamp[np.argsort(luminance(lamp[None])[0])[-max(1, len(lamp) // 3) :]].mean(axis=0)
    chroma = top / max(top.max(), 1e-6)
    hue_index = int(np.argmin(((_HUE_PROTOTYPES - chroma) ** 2).sum(axis=1)))
    return LIGHT_COLORS[index] if hue_index == index else "unclear"


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else -1.0


def _digit_template(bitmap: np.ndarray, height: int, width: int, dy: float, dx: float) -> np.ndarray:
    """Digits on a height×width sign face, sampled as the toy simulator draws them, shifted by (dy, dx)."""
    s = (np.arange(width) + 0.5 - dx) / width
    t = (np.arange(height) + 0.5 - dy) / height
    box_h = DIGIT_BOX_WIDTH * bitmap.shape[0] / bitmap.shape[1]
    u = (s[None, :] - 0.5) / DIGIT_BOX_WIDTH + 0.5
    v = (t[:, None] - 0.5) / box_h + 0.5
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    col = np.clip((u * bitmap.shape[1]).astype(int), 0, bitmap.shape[1] - 1)
    row = np.clip((v * bitmap.shape[0]).astype(int), 0, bitmap.shape[0] - 1)
    return (inside & bitmap[row, col]).astype(np.float64)


def _digit_score(gray: np.ndarray, bitmap: np.ndarray) -> float:
    """Best NCC inside the sign's white face between the dark pixels and ``bitmap``, over ±½ px shifts."""
    height, width = gray.shape
    yy, xx = np.mgrid[0:height, 0:width]
    face = np.hypot((xx + 0.5) / width - 0.5, (yy + 0.5) / height - 0.5) < 0.36  # inside the red ring
    best = -1.0
    for dy in (-0.5, 0.0, 0.5):
        for dx in (-0.5, 0.0, 0.5):
            template = _digit_template(bitmap, height, width, dy, dx)
            best = max(best, _ncc(-gray[face], template[face]))
    return best


def read_speed_limit(rgb: np.ndarray, bbox: Sequence[float], bitmaps: Mapping[int, np.ndarray]) -> int | None:
    """The speed limit whose digit bitmap best matches the sign's dark digit area (None when too small)."""
    crop = _crop(rgb, bbox)
    height, width = crop.shape[:2]
    if min(height, width) < MIN_SIGN_WIDTH_PX or abs(height - width) > 2 or not bitmaps:
        return None
    gray = luminance(crop)
    scores = {value: _digit_score(gray, bitmap) for value, bitmap in bitmaps.items()}
    return max(scores, key=lambda v: scores[v])


def detail_readings(
    rgb: np.ndarray, meta: Mapping[str, Any], bitmaps: Mapping[int, np.ndarray]
) -> dict[str, int]:
    """Counts of legible lights/signs in one frame and of those read correctly against ``meta``."""
    counts = {"lights": 0, "lights_correct": 0, "signs": 0, "signs_correct": 0}
    for light in meta.get("lights", ()):
        color = read_light_color(rgb, light["bbox_xyxy"])
        if color is not None:
            counts["lights"] += 1
            counts["lights_correct"] += int(color == light["color"])
    for sign in meta.get("signs", ()):
        limit = read_speed_limit(rgb, sign["bbox_xyxy"], bitmaps)
        if limit is not None:
            counts["signs"] += 1
            counts["signs_correct"] += int(limit == sign["speed_limit"])
    return counts


def retention_summary(counts: Mapping[str, int], edges: Sequence[float]) -> dict[str, float | int | None]:
    """Accuracy of light colour and sign readings plus the mean edge agreement."""

    def share(correct: str, total: str) -> float | None:
        return counts[correct] / counts[total] if counts[total] else None

    return {
        "light_color_accuracy": share("lights_correct", "lights"),
        "sign_digit_accuracy": share("signs_correct", "signs"),
        "lights_scored": counts["lights"],
        "signs_scored": counts["signs"],
        "edge_agreement": float(np.mean(edges)) if edges else None,
    }
