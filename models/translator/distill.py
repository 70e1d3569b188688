"""Distilling a trained translator (the teacher) into a :class:`StudentTranslator`.

Pairs are made on the fly: each batch of full sim frames goes through the teacher once (full frames,
as the translate flow runs it: the teacher's instance norms see whole images), then sim frame, teacher
translation, labels and detail mask are cropped and flipped alike. The student's objective, each term
with its weight from :class:`DistillLossConfig`:

* ``l1`` — mean |student − teacher|;
* ``edge`` — :func:`~sim2real.models.translator.losses.high_frequency_loss` between teacher and student
  (Laplacian-pyramid luminance bands, the same weight everywhere): the teacher's edges and textures;
* ``sem`` — the teacher's label-aware judge kept: its real content encoder and seg head, frozen, read the
  student's translation and are scored against the *sim* labels (semantic consistency);
* ``hf`` — the teacher's detail term kept: :func:`high_frequency_loss` between the sim frame and the
  student's translation, heavier at sign / light / lane-mark pixels.

Training runs in the one loop of :mod:`~sim2real.models.translator.fit` and checkpoints in its one
format (student, optimizer, scheduler, step, config; read back with ``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim2real.models.translator.config import OptimConfig
from sim2real.models.translator.data import detail_mask, image_tensor, random_crop_flip
from sim2real.models.translator.fit import fit, restore_checkpoint
from sim2real.models.translator.losses import high_frequency_loss, l1, semantic_loss
from sim2real.models.translator.model import Translator
from sim2real.models.translator.student import StudentConfig, StudentTranslator, build_student
from sim2real.models.translator.training import frozen_semantics
from sim2real.storage.taxonomy import IGNORE_ID


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DetailLossConfig(_Frozen):
    """The detail term against the sim frame (the teacher's ``high_frequency`` loss, kept)."""

    weight: float = Field(default=0.2, ge=0, description="weight (0 switches the term off)")
    levels: int = Field(default=3, ge=1, le=6, description="Laplacian pyramid levels")
    detail_gain: float = Field(default=10.0, ge=0, description="extra weight inside sign/light/lane pixels")
    detail_chroma: float = Field(default=1.0, ge=0, description="colour-opponent bands inside those pixels")


class DistillLossConfig(_Frozen):
    """Weights of the student's objective (module docstring)."""

    l1_w: float = Field(default=10.0, ge=0, description="L1 to the teacher's translation")
    edge_w: float = Field(default=5.0, ge=0, description="Laplacian-band L1 to the teacher's translation")
    edge_levels: int = Field(default=3, ge=1, le=6, description="pyramid levels of the edge term")
    semantic_w: float = Field(
        default=1.0, ge=0, description="CE of the teacher's frozen seg judge vs sim labels"
    )
    detail: DetailLossConfig = DetailLossConfig()


class DistillTrainConfig(_Frozen):
    """The distillation loop: length, batch, crops, checkpoints and logging."""

    steps: int = Field(default=1000, ge=1, description="optimizer steps in total")
    batch_size: int = Field(default=8, ge=1, description="sim frames per step")
    crop_height: int = Field(default=64, ge=8, description="random training crop height (pixels)")
    crop_width: int = Field(default=128, ge=8, description="random training crop width (pixels)")
    hflip: bool = Field(default=True, description="random horizontal flips")
    checkpoint_every: int = Field(default=200, ge=1, description="steps between atomic checkpoints")
    log_every: int = Field(default=20, ge=1, description="steps between loss rows")
    shuffle_buffer: int = Field(default=64, ge=0, description="webdataset shuffle buffer (samples)")
    seed: int = 0

    @model_validator(mode="after")
    def _check_log(self) -> DistillTrainConfig:
        if self.checkpoint_every % self.log_every:
            raise ValueError("train.checkpoint_every must be a multiple of train.log_every")
        return self


class DistillConfig(_Frozen):
    """Everything that defines a student and how it is distilled."""

    student: StudentConfig = StudentConfig()
    loss: DistillLossConfig = DistillLossConfig()
    optim: OptimConfig = OptimConfig(lr=1e-3, beta1=0.9, weight_decay=0.0)
    train: DistillTrainConfig = DistillTrainConfig()

    @model_validator(mode="after")
    def _check_crop(self) -> DistillConfig:
        stride = self.student.stride
        if self.train.crop_height % stride or self.train.crop_width % stride:
            raise ValueError(
                f"train crop {self.train.crop_height}x{self.train.crop_width} must be divisible "
                f"by the student's stride {stride}"
            )
        return self


@dataclass(frozen=True)
class DistillBatch:
    """Crops of sim frames and their teacher translations: images B×3×H×W in [-1, 1], ``seg`` B×H×W
    int64 trainIds (255 = ignore), ``detail`` B×1×H×W in {0, 1}."""

    sim: torch.Tensor
    teacher: torch.Tensor
    seg: torch.Tensor
    detail: torch.Tensor

    def to(self, device: torch.device | str) -> DistillBatch:
        """The batch on ``device``."""
        return DistillBatch(*(t.to(device) for t in (self.sim, self.teacher, self.seg, self.detail)))


#: Sim images N×3×H×W in [0, 1] → the teacher's translations, same shape and range.
TeacherFn = Callable[[torch.Tensor], torch.Tensor]


def _teacher_rgbs(teacher: TeacherFn, rgbs: list[np.ndarray]) -> list[np.ndarray]:
    """H×W×3 uint8 sim frames → the teacher's H×W×3 uint8 translations (one batch per frame size)."""
    out: list[np.ndarray | None] = [None] * len(rgbs)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, rgb in enumerate(rgbs):
        by_size.setdefault(rgb.shape, []).append(i)
    for indices in by_size.values():
        images = torch.from_numpy(np.stack([rgbs[i] for i in indices])).permute(0, 3, 1, 2).float() / 255
        translated = teacher(images).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        for i, rgb in zip(indices, translated, strict=True):
            out[i] = rgb
    return [rgb for rgb in out if rgb is not None]


def distill_batches(
    samples: Iterable[Mapping[str, Any]], teacher: TeacherFn, train: DistillTrainConfig, seed: int = 0
) -> Iterator[DistillBatch]:
    """Batches of random crops of decoded sim samples (``rgb``, ``seg``, ``meta``) and their teacher
    translations, made per batch; ends when ``samples`` does (a partial last batch is dropped)."""
    rng = np.random.default_rng(seed)
    it = iter(samples)
    size = (train.crop_height, train.crop_width)
    while True:
        chunk = []
        for _ in range(train.batch_size):
            try:
                chunk.append(next(it))
            except StopIteration:
                return
        translated = _teacher_rgbs(teacher, [s["rgb"] for s in chunk])
        sims, teachers, segs, details = [], [], [], []
        for sample, teacher_rgb in zip(chunk, translated, strict=True):
            detail = detail_mask(sample["seg"], sample.get("meta", {}))
            rgb, out, seg, det = random_crop_flip(
                [sample["rgb"], teacher_rgb, sample["seg"], detail],
                [None, None, IGNORE_ID, 0],
                *size,
                train.hflip,
                rng,
            )
            sims.append(image_tensor(rgb))
            teachers.append(image_tensor(out))
            segs.append(torch.from_numpy(seg.astype(np.int64)))
            details.append(torch.from_numpy(det).float()[None])
        yield DistillBatch(torch.stack(sims), torch.stack(teachers), torch.stack(segs), torch.stack(details))


@dataclass
class DistillState:
    """The student in training: network, optimizer, scheduler, step."""

    student: StudentTranslator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0

    def components(self) -> dict[str, Any]:
        """What a checkpoint saves, by name (:mod:`~sim2real.models.translator.fit`)."""
        return {"student": self.student, "optimizer": self.optimizer, "scheduler": self.scheduler}


def new_distill_state(config: DistillConfig, device: torch.device | str, seed: int = 0) -> DistillState:
    """A fresh (seeded) student with its Adam optimizer and step-decay scheduler on ``device``."""
    torch.manual_seed(seed)
    student = build_student(config.student).to(torch.device(device))
    optim = config.optim
    optimizer = torch.optim.Adam(
        student.parameters(), lr=optim.lr, betas=(optim.beta1, optim.beta2), weight_decay=optim.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, optim.lr_step, gamma=optim.lr_gamma)
    return DistillState(student, optimizer, scheduler)


def distill_losses(
    student: StudentTranslator, teacher: Translator, batch: DistillBatch, loss: DistillLossConfig
) -> dict[str, torch.Tensor]:
    """The student's loss terms (unweighted) on one batch; ``sem`` only when the teacher has a seg head."""
    out = student(batch.sim)
    terms = {
        "l1": l1(out, batch.teacher),
        "edge": high_frequency_loss(batch.teacher, out, None, loss.edge_levels, 0.0),
    }
    if loss.semantic_w > 0 and teacher.seg_head is not None:
        size = (out.shape[-2], out.shape[-1])
        terms["sem"] = semantic_loss(frozen_semantics(teacher, out, size), batch.seg)
    if loss.detail.weight > 0:
        d = loss.detail
        terms["hf"] = high_frequency_loss(
            batch.sim, out, batch.detail, d.levels, d.detail_gain, d.detail_chroma
        )
    return terms


def weighted_total(terms: Mapping[str, torch.Tensor], loss: DistillLossConfig) -> torch.Tensor:
    """The student's objective: each term times its weight."""
    weights = {"l1": loss.l1_w, "edge": loss.edge_w, "sem": loss.semantic_w, "hf": loss.detail.weight}
    return sum((weights[name] * value for name, value in terms.items()), torch.zeros(()))


def distill_step(
    state: DistillState, teacher: Translator, batch: DistillBatch, loss: DistillLossConfig
) -> dict[str, float]:
    """One optimizer step of the student; returns the loss values (``total`` included)."""
    state.student.train()
    teacher.eval()
    terms = distill_losses(state.student, teacher, batch, loss)
    total = weighted_total(terms, loss)
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    state.optimizer.step()
    state.scheduler.step()
    state.step += 1
    values = {name: float(value.detach()) for name, value in terms.items()}
    values["total"] = float(total.detach())
    return values


def run_distillation(
    state: DistillState,
    teacher: Translator,
    batches: Iterator[DistillBatch],
    config: DistillConfig,
    device: torch.device | str,
    until_step: int,
    on_checkpoint: Callable[[DistillState], None] | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Distil ``state.step`` → ``until_step`` with :func:`distill_step` in :func:`~.fit.fit`: checkpoint
    every ``checkpoint_every`` steps and at the end; returns the loss rows (means over ``log_every``).
    Raises ``RuntimeError`` when the batches run out first."""
    device = torch.device(device)
    teacher.requires_grad_(False)

    def step(batch: DistillBatch) -> dict[str, float]:
        return distill_step(state, teacher, batch.to(device), config.loss)

    save = None if on_checkpoint is None else lambda: on_checkpoint(state)
    train = config.train
    return fit(state, batches, step, until_step, train.log_every, train.checkpoint_every, save, on_log,
               what="distillation")


def restore_distill_state(
    data: bytes, device: torch.device | str, source: str = "<bytes>"
) -> tuple[DistillState, DistillConfig]:
    """Rebuild the state saved by :func:`~.fit.checkpoint_bytes` (``weights_only=True``)."""
    return restore_checkpoint(data, device, DistillConfig, new_distill_state, source, "student distillation")


def student_weights(student: StudentTranslator) -> dict[str, torch.Tensor]:
    """Inference weights: the student's state dict as contiguous CPU tensors (safetensors-ready)."""
    return {name: t.detach().to("cpu").contiguous().clone() for name, t in student.state_dict().items()}
