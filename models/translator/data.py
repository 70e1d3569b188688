"""Training batches from decoded samples: random crops, flips, detail masks, tensors.

Input samples are the reader's dicts (``rgb`` H×W×3 uint8, ``seg`` H×W trainIds, ``meta``); sim and real
streams are unpaired, so they are consumed independently and zipped batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sim2real.models.translator.config import TrainConfig
from sim2real.storage.taxonomy import FINE_DETAIL_TRAIN_IDS, IGNORE_ID

#: ``meta.json`` keys whose entries carry a ``bbox_xyxy`` of extra fine detail (the toy sim's lane marks).
DETAIL_BOX_KEYS: tuple[str, ...] = ("lane_marks",)


@dataclass(frozen=True)
class TranslatorBatch:
    """One unpaired batch. Images B×3×H×W in [-1, 1]; label maps B×H×W int64 (255 = ignore); detail B×1×H×W.

    ``real_seg`` is the target's own labels where it has them (all 255 otherwise); they are never paired
    with the sim frames.
    """

    sim: torch.Tensor
    sim_seg: torch.Tensor
    detail: torch.Tensor
    real: torch.Tensor
    real_seg: torch.Tensor

    def to(self, device: torch.device | str, channels_last: bool = False) -> TranslatorBatch:
        """The batch on ``device`` (images in channels_last memory format when asked)."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format

        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, non_blocking=True, memory_format=fmt) if x.dim() == 4 else x.to(device)

        return TranslatorBatch(
            move(self.sim),
            self.sim_seg.to(device),
            move(self.detail),
            move(self.real),
            self.real_seg.to(device),
        )


def detail_mask(seg: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """H×W uint8: 1 on traffic-sign/light pixels and inside the meta's lane-mark boxes, else 0."""
    mask = np.isin(seg, FINE_DETAIL_TRAIN_IDS).astype(np.uint8)
    height, width = seg.shape
    for key in DETAIL_BOX_KEYS:
        for entry in meta.get(key, ()) or ():
            x1, y1, x2, y2 = (int(round(v)) for v in entry["bbox_xyxy"])
            mask[max(y1, 0) : min(y2, height), max(x1, 0) : min(x2, width)] = 1
    return mask


def _pad_to(array: np.ndarray, height: int, width: int, fill: int | None) -> np.ndarray:
    pad_h, pad_w = max(height - array.shape[0], 0), max(width - array.shape[1], 0)
    if not (pad_h or pad_w):
        return array
    pads = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    if fill is None:
        return np.pad(array, pads, mode="edge")
    return np.pad(array, pads, mode="constant", constant_values=fill)


def random_crop_flip(
    arrays: list[np.ndarray],
    fills: list[int | None],
    height: int,
    width: int,
    hflip: bool,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """The same random ``height``×``width`` crop (and flip) of aligned H×W(×C) arrays; small ones padded."""
    arrays = [_pad_to(a, height, width, fill) for a, fill in zip(arrays, fills, strict=True)]
    full_h, full_w = arrays[0].shape[:2]
    top = int(rng.integers(0, full_h - height + 1))
    left = int(rng.integers(0, full_w - width + 1))
    flip = hflip and bool(rng.integers(0, 2))
    out = []
    for a in arrays:
        crop = a[top : top + height, left : left + width]
        out.append(np.ascontiguousarray(crop[:, ::-1] if flip else crop))
    return out


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 → 3×H×W float in [-1, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(127.5).sub(1.0)


def translator_batches(
    sim_samples: Iterable[Mapping[str, Any]],
    real_samples: Iterable[Mapping[str, Any]],
    train: TrainConfig,
    seed: int = 0,
) -> Iterator[TranslatorBatch]:
    """Endless-as-the-inputs stream of unpaired batches with random crops and flips."""
    rng = np.random.default_rng(seed)
    sim_iter, real_iter = iter(sim_samples), iter(real_samples)
    size = (train.crop_height, train.crop_width)
    while True:
        sims, segs, details, reals, real_segs = [], [], [], [], []
        for _ in range(train.batch_size):
            try:
                sim, real = next(sim_iter), next(real_iter)
            except StopIteration:
                return
            detail = detail_mask(sim["seg"], sim.get("meta", {}))
            rgb, seg, det = random_crop_flip(
                [sim["rgb"], sim["seg"], detail], [None, IGNORE_ID, 0], *size, train.hflip, rng
            )
            real_labels = real.get("seg")
            if real_labels is None:
                real_labels = np.full(real["rgb"].shape[:2], IGNORE_ID, np.uint8)
            real_rgb, real_seg = random_crop_flip(
                [real["rgb"], real_labels], [None, IGNORE_ID], *size, train.hflip, rng
            )
            sims.append(image_tensor(rgb))
            segs.append(torch.from_numpy(seg.astype(np.int64)))
            details.append(torch.from_numpy(det).float()[None])
            reals.append(image_tensor(real_rgb))
            real_segs.append(torch.from_numpy(real_seg.astype(np.int64)))
        yield TranslatorBatch(
            torch.stack(sims),
            torch.stack(segs),
            torch.stack(details),
            torch.stack(reals),
            torch.stack(real_segs),
        )
