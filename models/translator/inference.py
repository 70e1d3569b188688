"""Batched, deterministic sim → real inference for any image size."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sim2real.models.translator.model import Translator
from sim2real.models.translator.training import autocast_for


def padded_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """The smallest size ≥ (height, width) divisible by ``stride`` and at least two strides wide.

    Two strides keep the reflect padding of the innermost convolutions valid on tiny inputs.
    """

    def up(n: int) -> int:
        return max(-(-n // stride) * stride, 2 * stride)

    return up(height), up(width)


def pad_to_stride(images: torch.Tensor, stride: int) -> torch.Tensor:
    """Edge-pad B×C×H×W at the bottom and right to :func:`padded_size`."""
    height, width = images.shape[-2:]
    target_h, target_w = padded_size(height, width, stride)
    if (target_h, target_w) == (height, width):
        return images
    return F.pad(images, (0, target_w - width, 0, target_h - height), mode="replicate")


@torch.inference_mode()
def translate_batch(model: Translator, images: torch.Tensor) -> torch.Tensor:
    """Translate B×3×H×W sim images in [0, 1] to real style: same shape, [0, 1], on the input's device.

    The input is edge-padded to the network's stride and the output cropped back, so any H×W works and
    pixels stay aligned with the source labels. Uses the fixed real style stored in the weights, so the
    result depends only on weights and input.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"translate_batch: expected B×3×H×W images, got shape {tuple(images.shape)}")
    if model.training:
        model.eval()
    device = next(model.parameters()).device
    height, width = images.shape[-2:]
    x = pad_to_stride(images.to(device, torch.float32).mul(2).sub(1), model.stride)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast_for(device):
        out = model.translate(x)
    out = out[..., :height, :width].float().add(1).div(2).clamp(0, 1)
    return out.to(images.device).contiguous()
