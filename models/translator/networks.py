"""MUNIT-style generator pieces: content encoder, style encoder, MLP and AdaIN decoder.

An image (B×3×H×W in [-1, 1]) splits into a spatial *content* code (domain-invariant; shared with the
segmentation head) and a global *style* vector. The decoder redraws content in a style by modulating
instance-normalised residual features with scale/shift parameters an MLP computes from the style.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sim2real.models.translator.config import GeneratorConfig, PadType


def conv_block(
    in_ch: int, out_ch: int, kernel: int, stride: int, norm: str, pad_type: PadType, act: bool = True
) -> nn.Sequential:
    """Padded conv → optional norm (``instance``, ``layer`` or ``none``) → optional ReLU."""
    # (kernel - 1) // 2 keeps H for odd kernels and halves an even H exactly for 4×4 stride-2 convs.
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, padding_mode=pad_type)
    ]
    if norm == "instance":
        layers.append(nn.InstanceNorm2d(out_ch, affine=False))
    elif norm == "layer":
        # GroupNorm with one group = normalise over C, H, W per sample, with a per-channel affine.
        layers.append(nn.GroupNorm(1, out_ch))
    elif norm != "none":
        raise ValueError(f"unknown norm {norm!r}; known: instance, layer, none")
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Two 3×3 convs with instance norm and an identity shortcut."""

    def __init__(self, ch: int, pad_type: PadType) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_block(ch, ch, 3, 1, "instance", pad_type),
            conv_block(ch, ch, 3, 1, "instance", pad_type, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AdaINResBlock(nn.Module):
    """Residual block whose two norms take their scale and shift from the style (AdaIN)."""

    # Per-sample, per-channel normalisation (no affine); the inference engine swaps in a formulation
    # its compiler vectorises better.
    instance_norm: Callable[[torch.Tensor], torch.Tensor] = staticmethod(F.instance_norm)
    # ``(x, 1 + scale, shift)`` → the whole AdaIN in one call where set (the inference engine's fused form);
    # None: ``instance_norm`` then the modulation.
    modulated_norm: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __init__(self, ch: int, pad_type: PadType) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, 1, 1, padding_mode=pad_type)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, padding_mode=pad_type)

    def _adain(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        # (1 + scale) keeps the block near identity while the MLP is still untrained.
        if self.modulated_norm is not None:
            return self.modulated_norm(x, 1 + scale, shift)
        return self.instance_norm(x) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        s1, b1, s2, b2 = params.chunk(4, dim=1)
        y = F.relu(self._adain(self.conv1(x), s1, b1))
        return x + self._adain(self.conv2(y), s2, b2)


class ContentEncoder(nn.Module):
    """Image → spatial content code at 1/2**n_downsample resolution."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_block(3, cfg.dim, 7, 1, "instance", cfg.pad_type)]
        ch = cfg.dim
        for _ in range(cfg.n_downsample):
            layers.append(conv_block(ch, ch * 2, 4, 2, "instance", cfg.pad_type))
            ch *= 2
        layers += [ResBlock(ch, cfg.pad_type) for _ in range(cfg.n_res)]
        self.net = nn.Sequential(*layers)
        self.out_channels = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StyleEncoder(nn.Module):
    """Image → global style vector (no normalisation: norms would erase the style statistics)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_block(3, cfg.dim, 7, 1, "none", cfg.pad_type)]
        ch = cfg.dim
        for i in range(cfg.style_n_downsample):
            out = ch * 2 if i < 2 else ch
            layers.append(conv_block(ch, out, 4, 2, "none", cfg.pad_type))
            ch = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, cfg.style_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class StyleMLP(nn.Module):
    """Style vector → all AdaIN parameters of the decoder."""

    def __init__(self, style_dim: int, hidden: int, out: int, n_layers: int) -> None:
        super().__init__()
        dims = [style_dim] + [hidden] * (n_layers - 1)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-1], out))
        self.net = nn.Sequential(*layers)

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        return self.net(style)


class Decoder(nn.Module):
    """Content code + style vector → image in [-1, 1]."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        ch = cfg.content_channels
        self.res_blocks = nn.ModuleList(AdaINResBlock(ch, cfg.pad_type) for _ in range(cfg.n_res))
        up: list[nn.Module] = []
        for _ in range(cfg.n_downsample):
            up += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                conv_block(ch, ch // 2, 5, 1, "layer", cfg.pad_type),
            ]
            ch //= 2
        up += [nn.Conv2d(ch, 3, 7, 1, 3, padding_mode=cfg.pad_type), nn.Tanh()]
        self.upsample = nn.Sequential(*up)
        self.param_counts = [4 * cfg.content_channels] * cfg.n_res  # (scale, shift) × 2 norms per block
        self.mlp = StyleMLP(cfg.style_dim, cfg.mlp_dim, sum(self.param_counts), cfg.mlp_layers)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        params = self.mlp(style)
        x = content
        for block, p in zip(self.res_blocks, params.split(self.param_counts, 1), strict=True):
            x = block(x, p)
        return self.upsample(x)


class AutoEncoder(nn.Module):
    """One domain's generator: encode to (content, style), decode from (content, style)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.content = ContentEncoder(cfg)
        self.style = StyleEncoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(content code, style vector) of images in [-1, 1]."""
        return self.content(x), self.style(x)

    def decode(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] from a content code and a style vector."""
        return self.decoder(content, style)


class SegHead(nn.Module):
    """Small segmentation head on the content code; logits upsampled to the image size."""

    def __init__(self, in_ch: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, num_classes, 1)
        )

    def forward(self, content: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.net(content), size=size, mode="bilinear", align_corners=False)
