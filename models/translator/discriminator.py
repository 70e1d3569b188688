"""Multi-scale PatchGAN discriminators trained with the least-squares GAN objective.

Each scale is a stack of stride-2 4×4 convolutions ending in a 1-channel map: one real/fake score per
receptive-field patch. The next scale sees the image average-pooled by two, so coarse layout and fine
texture are judged separately.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sim2real.models.translator.config import DiscriminatorConfig


class PatchDiscriminator(nn.Module):
    """One scale: image → map of patch scores (no normalisation, leaky ReLU)."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, ch = 3, cfg.dim
        for _ in range(cfg.n_layers):
            layers += [nn.Conv2d(in_ch, ch, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            in_ch, ch = ch, ch * 2
        layers.append(nn.Conv2d(in_ch, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    """``num_scales`` patch discriminators on successively half-resolution copies of the image."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(cfg) for _ in range(cfg.num_scales))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, dis in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(dis(x))
        return outputs


class Discriminators(nn.Module):
    """One multi-scale discriminator per domain: ``sim`` judges sim-styled images, ``real`` real-styled."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.sim = MultiScaleDiscriminator(cfg)
        self.real = MultiScaleDiscriminator(cfg)


def lsgan_dis_loss(dis: MultiScaleDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss: real patches → 1, fake patches → 0 (summed over scales)."""
    loss = real.new_zeros(())
    for out_real, out_fake in zip(dis(real), dis(fake.detach()), strict=True):
        loss = loss + ((out_real.float() - 1) ** 2).mean() + (out_fake.float() ** 2).mean()
    return loss


def lsgan_gen_loss(dis: MultiScaleDiscriminator, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss: make the discriminator score fake patches as 1."""
    loss = fake.new_zeros(())
    for out in dis(fake):
        loss = loss + ((out.float() - 1) ** 2).mean()
    return loss
