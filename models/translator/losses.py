"""Translator losses beyond LSGAN: reconstruction, and the two label-aware terms.

* ``semantic_loss``: cross-entropy of the seg head on a content code against the simulator's labels.
  Applied to the content of the sim image *and* of its translation, so a translation that turns a
  car into road (semantics flipping) is penalised.
* ``high_frequency_loss``: L1 between Laplacian pyramids of the luminance of the sim image and its
  translation, weighted ``1 + detail_gain`` inside fine-detail pixels (traffic signs, lights, lane marks)
  so the translator may repaint colours and textures but must keep digits, lamp shapes and edges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sim2real.storage.taxonomy import IGNORE_ID

_BINOMIAL_5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
_LUMA = (0.299, 0.587, 0.114)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """B×3×H×W → B×1×H×W Rec.601 luma (same value range as the input)."""
    r, g, b = images.float().unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap binomial blur of a B×C×H×W tensor, edges replicated."""
    channels = x.shape[1]
    k = _BINOMIAL_5.to(x.device, x.dtype)
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(channels, 1, 1, 5), groups=channels)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(channels, 1, 5, 1), groups=channels)


def laplacian_pyramid(x: torch.Tensor, levels: int, residual: bool = False) -> list[torch.Tensor]:
    """Band-pass images ``g_l - blur(g_l)`` at ``levels`` octaves (g_0 = x, g_{l+1} = pool(blur(g_l))),
    then, with ``residual``, the low-pass ``g_levels``."""
    bands = []
    for _ in range(levels):
        low = blur(x)
        bands.append(x - low)
        x = F.avg_pool2d(low, 2, ceil_mode=True)
    return [*bands, x] if residual else bands


def opponent_chroma(images: torch.Tensor) -> torch.Tensor:
    """B×3×H×W → B×2×H×W colour-opponent channels (red–green, yellow–blue), luminance-free."""
    r, g, b = images.float().unbind(1)
    return torch.stack([r - g, 0.5 * (r + g) - b], dim=1)


def _weighted_band_l1(
    source: torch.Tensor, translated: torch.Tensor, weight: torch.Tensor, levels: int
) -> torch.Tensor:
    """Σ over pyramid levels of the ``weight``-weighted mean |band difference| (weight max-pooled down)."""
    loss = source.new_zeros((), dtype=torch.float32)
    for band_src, band_out in zip(
        laplacian_pyramid(source, levels), laplacian_pyramid(translated, levels), strict=True
    ):
        if weight.shape[-2:] != band_src.shape[-2:]:
            weight = F.adaptive_max_pool2d(weight, band_src.shape[-2:])
        loss = loss + (weight * (band_src - band_out).abs()).sum() / weight.sum().clamp(min=1e-6)
    return loss


def high_frequency_loss(
    source: torch.Tensor,
    translated: torch.Tensor,
    detail_mask: torch.Tensor | None,
    levels: int,
    detail_gain: float,
    detail_chroma: float = 0.0,
) -> torch.Tensor:
    """Weighted L1 between the luminance Laplacian pyramids of ``source`` and ``translated``.

    ``detail_mask`` is B×1×H×W in {0, 1} (1 = fine detail) or ``None`` for uniform weights. The weight
    map follows the pyramid down by max-pooling, so thin details keep their weight at coarse levels.
    With ``detail_chroma`` > 0 the colour-opponent bands inside the mask count too (lamp colours, the
    red ring of a sign), weighted by that factor; outside the mask colours are free to change.
    """
    lum_src, lum_out = luminance(source), luminance(translated)
    mask = None if detail_mask is None else detail_mask.float()
    weight = torch.ones_like(lum_src) if mask is None else 1 + detail_gain * mask
    loss = _weighted_band_l1(lum_src, lum_out, weight, levels)
    if detail_chroma > 0 and mask is not None and bool(mask.any()):
        chroma_weight = mask.expand(-1, 2, -1, -1)
        loss = loss + detail_chroma * _weighted_band_l1(
            opponent_chroma(source), opponent_chroma(translated), chroma_weight, levels
        )
    return loss


def semantic_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of B×K×H×W logits against B×H×W trainIds, ignoring 255 (0 when all are ignored)."""
    valid = (labels != IGNORE_ID).sum()
    total = F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_ID, reduction="sum")
    return total / valid.clamp(min=1)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference, computed in float32."""
    return (a.float() - b.float()).abs().mean()
