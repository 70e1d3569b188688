"""The translator as a whole: two domain auto-encoders, a seg head, and the fixed inference style.

``Translator`` holds everything that goes into the registry (no discriminators, no optimizers).
``translate`` maps sim images to real style deterministically: the style is the running mean of the
real images' style codes seen in training, stored as a buffer in the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from sim2real.models.translator.config import GeneratorConfig, SemanticLossConfig, TranslatorConfig
from sim2real.models.translator.discriminator import Discriminators
from sim2real.models.translator.networks import AutoEncoder, SegHead
from sim2real.storage.taxonomy import NUM_TRAIN_CLASSES


class Translator(nn.Module):
    """Sim and real auto-encoders sharing a content space, plus the semantic seg head (if enabled)."""

    real_style: torch.Tensor
    style_updates: torch.Tensor

    def __init__(self, gen: GeneratorConfig, semantic: SemanticLossConfig) -> None:
        super().__init__()
        self.stride = gen.stride
        self.sim = AutoEncoder(gen)
        self.real = AutoEncoder(gen)
        self.seg_head = (
            SegHead(gen.content_channels, semantic.head_dim, NUM_TRAIN_CLASSES) if semantic.enabled else None
        )
        self.register_buffer("real_style", torch.zeros(gen.style_dim))
        self.register_buffer("style_updates", torch.zeros((), dtype=torch.long))

    def translate(self, sim: torch.Tensor) -> torch.Tensor:
        """Sim images (B×3×H×W in [-1, 1], H and W divisible by ``stride``) → real style, same range."""
        content = self.sim.content(sim)
        style = self.real_style.to(content.dtype).expand(sim.shape[0], -1)
        return self.real.decode(content, style)

    @torch.no_grad()
    def update_real_style(self, styles: torch.Tensor, momentum: float) -> None:
        """Move the inference style towards the mean of a batch of encoded real styles (EMA)."""
        batch_mean = styles.detach().float().mean(0)
        if int(self.style_updates) == 0:  # the first batch sets it: no bias towards the zero init
            self.real_style.copy_(batch_mean)
        else:
            self.real_style.mul_(momentum).add_(batch_mean, alpha=1 - momentum)
        self.style_updates += 1


def build_translator(config: TranslatorConfig) -> Translator:
    """A fresh translator for ``config`` (parameters from the current torch seed)."""
    return Translator(config.gen, config.loss.semantic)


def build_discriminators(config: TranslatorConfig) -> Discriminators:
    """Fresh sim and real discriminators for ``config``."""
    return Discriminators(config.dis)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
