"""One training step of the label-aware translator, and the loop around it.

A step updates the generators first (their adversarial loss uses the current discriminators), then the
discriminators on the detached translations the generator step just made, so each image is decoded
once per step. On CUDA the forward passes run under bf16 autocast with channels_last tensors; on CPU
everything is float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import functional_call

from sim2real.models.translator.config import LossConfig, OptimConfig, TranslatorConfig
from sim2real.models.translator.data import TranslatorBatch
from sim2real.models.translator.discriminator import Discriminators, lsgan_dis_loss, lsgan_gen_loss
from sim2real.models.translator.fit import fit
from sim2real.models.translator.losses import high_frequency_loss, l1, semantic_loss
from sim2real.models.translator.model import Translator, build_discriminators, build_translator


@dataclass
class TrainingState:
    """Everything a checkpoint holds besides the config."""

    translator: Translator
    discriminators: Discriminators
    gen_optimizer: torch.optim.Optimizer
    dis_optimizer: torch.optim.Optimizer
    gen_scheduler: torch.optim.lr_scheduler.LRScheduler
    dis_scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0

    def components(self) -> dict[str, Any]:
        """What a checkpoint saves, by name (:mod:`~sim2real.models.translator.fit`)."""
        return {
            "translator": self.translator,
            "discriminators": self.discriminators,
            "gen_optimizer": self.gen_optimizer,
            "dis_optimizer": self.dis_optimizer,
            "gen_scheduler": self.gen_scheduler,
            "dis_scheduler": self.dis_scheduler,
        }


def _adam(params: list[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        params, lr=optim.lr, betas=(optim.beta1, optim.beta2), weight_decay=optim.weight_decay
    )


def new_training_state(config: TranslatorConfig, device: torch.device | str, seed: int = 0) -> TrainingState:
    """Fresh networks (seeded), optimizers and step-decay schedulers on ``device``."""
    torch.manual_seed(seed)
    device = torch.device(device)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    translator = build_translator(config).to(device, memory_format=fmt)
    discriminators = build_discriminators(config).to(device, memory_format=fmt)
    gen_opt = _adam(list(translator.parameters()), config.optim)
    dis_opt = _adam(list(discriminators.parameters()), config.optim)

    def sched(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.StepLR(opt, config.optim.lr_step, gamma=config.optim.lr_gamma)

    return TrainingState(translator, discriminators, gen_opt, dis_opt, sched(gen_opt), sched(dis_opt))


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no grad scaler needed), nothing on CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def frozen_semantics(translator: Translator, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Seg-head logits of ``images`` through the real content encoder, with encoder and head held fixed.

    Gradients reach the images (so the decoder that drew them) but not the encoder or head: the decoder
    must draw each class the way real images show it, instead of the encoder learning to read whatever
    the decoder draws.
    """
    assert translator.seg_head is not None
    encoder_params = {n: p.detach() for n, p in translator.real.content.named_parameters()}
    head_params = {n: p.detach() for n, p in translator.seg_head.named_parameters()}
    content = functional_call(translator.real.content, encoder_params, (images,))
    return functional_call(translator.seg_head, head_params, (content, size))


def generator_losses(
    translator: Translator, discriminators: Discriminators, batch: TranslatorBatch, loss: LossConfig
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """All generator loss terms (unweighted) plus the two translations ``(sim→real, real→sim)``."""
    x_a, x_b = batch.sim, batch.real
    c_a, s_a_own = translator.sim.encode(x_a)
    c_b, s_b_own = translator.real.encode(x_b)
    s_a = torch.randn_like(s_a_own)
    s_b = torch.randn_like(s_b_own)
    x_ab = translator.real.decode(c_a, s_b)
    x_ba = translator.sim.decode(c_b, s_a)
    c_a_back, s_b_back = translator.real.encode(x_ab)
    c_b_back, s_a_back = translator.sim.encode(x_ba)
    terms = {
        "recon_x": (
            l1(translator.sim.decode(c_a, s_a_own), x_a) + l1(translator.real.decode(c_b, s_b_own), x_b)
        ),
        "recon_s": l1(s_a_back, s_a) + l1(s_b_back, s_b),
        "recon_c": l1(c_a_back, c_a) + l1(c_b_back, c_b),
        "adv": lsgan_gen_loss(discriminators.sim, x_ba) + lsgan_gen_loss(discriminators.real, x_ab),
    }
    if loss.recon_x_cyc_w > 0:
        terms["recon_cyc"] = l1(translator.sim.decode(c_a_back, s_a_own), x_a) + l1(
            translator.real.decode(c_b_back, s_b_own), x_b
        )
    if loss.semantic.enabled and translator.seg_head is not None:
        size = (x_a.shape[-2], x_a.shape[-1])
        terms["sem"] = semantic_loss(translator.seg_head(c_a, size), batch.sim_seg)
        terms["sem_translated"] = semantic_loss(frozen_semantics(translator, x_ab, size), batch.sim_seg)
        if loss.semantic.real_weight > 0:
            # Supervising real content with the target's labels aligns the two content spaces by meaning,
            # so the real decoder (trained to rebuild real cars from real-car content) draws sim cars as such.
            terms["sem_real"] = semantic_loss(translator.seg_head(c_b, size), batch.real_seg)
    if loss.high_frequency.enabled:
        hf = loss.high_frequency
        terms["hf"] = high_frequency_loss(
            x_a, x_ab, batch.detail, hf.levels, hf.detail_gain, hf.detail_chroma
        )
    return terms, x_ab, x_ba


def weighted_total(terms: dict[str, torch.Tensor], loss: LossConfig) -> torch.Tensor:
    """The generator objective: each term times its weight from ``loss``."""
    weights = {
        "recon_x": loss.recon_x_w,
        "recon_s": loss.recon_s_w,
        "recon_c": loss.recon_c_w,
        "adv": loss.gan_w,
        "recon_cyc": loss.recon_x_cyc_w,
        "sem": loss.semantic.weight,
        "sem_translated": loss.semantic.translated_weight,
        "sem_real": loss.semantic.real_weight,
        "hf": loss.high_frequency.weight,
    }
    total = next(iter(terms.values())).new_zeros(())
    for name, value in terms.items():
        total = total + weights[name] * value
    return total


def train_step(
    state: TrainingState, batch: TranslatorBatch, config: TranslatorConfig, device: torch.device
) -> dict[str, float]:
    """One generator update then one discriminator update; returns the loss values."""
    state.translator.train()
    state.discriminators.train()
    with autocast_for(device):
        state.discriminators.requires_grad_(False)
        terms, x_ab, x_ba = generator_losses(state.translator, state.discriminators, batch, config.loss)
        gen_total = weighted_total(terms, config.loss)
    state.gen_optimizer.zero_grad(set_to_none=True)
    gen_total.backward()
    state.gen_optimizer.step()
    state.discriminators.requires_grad_(True)
    with autocast_for(device):
        dis_total = lsgan_dis_loss(state.discriminators.sim, batch.sim, x_ba) + lsgan_dis_loss(
            state.discriminators.real, batch.real, x_ab
        )
    state.dis_optimizer.zero_grad(set_to_none=True)
    (config.loss.gan_w * dis_total).backward()
    state.dis_optimizer.step()
    state.gen_scheduler.step()
    state.dis_scheduler.step()
    with torch.no_grad(), autocast_for(device):
        real_styles = state.translator.real.style(batch.real)
    state.translator.update_real_style(real_styles, config.train.style_momentum)
    state.step += 1
    values = {name: float(value.detach()) for name, value in terms.items()}
    values.update(gen_total=float(gen_total.detach()), dis_total=float(dis_total.detach()))
    return values


def run_training(
    state: TrainingState,
    batches: Iterator[TranslatorBatch],
    config: TranslatorConfig,
    device: torch.device | str,
    until_step: int,
    on_checkpoint: Callable[[TrainingState], None] | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``state.step`` → ``until_step`` with :func:`train_step` in :func:`~.fit.fit`: checkpoint
    every ``checkpoint_every`` steps and at the end; returns the loss rows (means over ``log_every``)."""
    device = torch.device(device)
    channels_last = device.type == "cuda"

    def step(batch: TranslatorBatch) -> dict[str, float]:
        return train_step(state, batch.to(device, channels_last), config, device)

    save = None if on_checkpoint is None else lambda: on_checkpoint(state)
    train = config.train
    return fit(state, batches, step, until_step, train.log_every, train.checkpoint_every, save, on_log,
               what="translator training")
