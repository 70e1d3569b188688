"""Training runs of the translator and of its student as records, and what a run ends with.

A run record holds plain references (data-version refs, shard URLs as strings, the config, the device
name, a content-hashed id) so Prefect tasks can pass it around; this module never opens a URL. Tasks
read and write the run's folder through ``storage.training_runs`` and train with
:func:`~sim2real.models.translator.training.run_training` /
:func:`~sim2real.models.translator.distill.run_distillation`, both in the one loop of ``fit``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from sim2real import __version__
from sim2real.models.metrics.translation import TranslationMetricsConfig
from sim2real.models.metrics.translation_eval import is_validation, to_tensor, to_uint8
from sim2real.models.translator.checkpoint import restore_training_state
from sim2real.models.translator.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    LossConfig,
    OptimConfig,
    TrainConfig,
    TranslatorConfig,
)
from sim2real.models.translator.distill import (
    DistillConfig,
    DistillState,
    new_distill_state,
    restore_distill_state,
)
from sim2real.models.translator.inference import translate_batch
from sim2real.models.translator.model import Translator
from sim2real.models.translator.student import student_gflops_per_frame
from sim2real.models.translator.training import TrainingState, new_training_state

PREVIEW_FRAMES = 4


class TranslatorProfile(BaseModel):
    """A translator profile file: the translator's config plus how to evaluate it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gen: GeneratorConfig = GeneratorConfig()
    dis: DiscriminatorConfig = DiscriminatorConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    metrics: TranslationMetricsConfig = TranslationMetricsConfig()

    @property
    def translator(self) -> TranslatorConfig:
        """The part that defines the network and its training."""
        return TranslatorConfig(
            gen=self.gen, dis=self.dis, loss=self.loss, optim=self.optim, train=self.train
        )


class TranslatorRun(BaseModel):
    """Everything a translator task needs, as plain references (no tensors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: str
    run_id: str
    source: str  # name@version
    target: str
    source_urls: list[str]
    target_urls: list[str]
    profile_name: str
    profile: TranslatorProfile
    device: str

    runs_folder: ClassVar[str] = "translators"  # runs live in ``{root}/runs/{runs_folder}/{run_id}``


class DistillRun(BaseModel):
    """Everything a distill task needs, as plain references (no tensors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: str
    run_id: str
    teacher: str  # registry id
    source: str  # name@version
    source_urls: list[str]
    profile_name: str
    config: DistillConfig
    teacher_run: TranslatorRun  # the teacher's training run: its target data, metric settings, segmenter

    runs_folder: ClassVar[str] = "students"

    @property
    def metrics(self) -> TranslationMetricsConfig:
        """The teacher's metric settings (so student and teacher numbers compare like for like)."""
        return self.teacher_run.profile.metrics

    @property
    def device(self) -> str:
        """The device the run trains on."""
        return self.teacher_run.device


def split(fraction: float, held_out: bool) -> Callable[[str], bool]:
    """The key predicate of the training (``held_out=False``) or held-out side of the split."""
    return lambda key: is_validation(key, fraction) == held_out


def translator_state(run: TranslatorRun, checkpoint: bytes | None, source: str) -> TrainingState:
    """The run's training state: from its ``checkpoint`` bytes, or fresh (seeded) when there are none."""
    if checkpoint is None:
        return new_training_state(run.profile.translator, run.device, seed=run.profile.train.seed)
    return restore_training_state(checkpoint, run.device, source=source)[0]


def student_state(run: DistillRun, checkpoint: bytes | None, source: str) -> DistillState:
    """The student's state: from its ``checkpoint`` bytes, or fresh (seeded) when there are none."""
    if checkpoint is None:
        return new_distill_state(run.config, run.device, seed=run.config.train.seed)
    return restore_distill_state(checkpoint, run.device, source=source)[0]


def teacher_profile(card: Mapping[str, Any], where: str) -> TranslatorProfile:
    """The profile a registered translator was trained with; ``ValueError`` naming ``where`` when the
    card is not a trained translator's (a student cannot teach)."""
    if card.get("kind") != "translator":
        raise ValueError(
            f"{where} is a {card.get('kind')!r}, not a trained translator; distil from a translator"
        )
    return TranslatorProfile.model_validate({**card["config"], "metrics": card["metrics_config"]})


def preview_png(translator: Translator, frames: Sequence[Mapping[str, Any]]) -> bytes:
    """A PNG grid, one row per decoded frame: sim input | translation."""
    translated = to_uint8(translate_batch(translator, to_tensor([f["rgb"] for f in frames])))
    rows = [np.concatenate([f["rgb"], out], axis=1) for f, out in zip(frames, translated, strict=True)]
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(buffer, format="PNG")
    return buffer.getvalue()


def _card(run: TranslatorRun | DistillRun, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The card keys every kind of run shares."""
    return {
        "profile": run.profile_name,
        "metrics": dict(metrics),
        "run": run.run_id,
        "code_version": __version__,
        "created_at": time.time(),
    }


def translator_card(run: TranslatorRun, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The registry card of a finished translator run."""
    profile = run.profile
    return {
        **_card(run, metrics),
        "kind": "translator",
        "config": profile.translator.model_dump(mode="json"),
        "metrics_config": profile.metrics.model_dump(mode="json"),
        "data": {"source": run.source, "target": run.target, "val_fraction": profile.metrics.val_fraction},
        "steps": profile.train.steps,
        "label_aware": {
            "semantic": profile.loss.semantic.enabled,
            "high_frequency": profile.loss.high_frequency.enabled,
        },
    }


def student_card(run: DistillRun, teacher: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The registry card of a finished distillation: the student's config, lineage and metrics."""
    config = run.config
    return {
        **_card(run, metrics),
        "kind": "student",
        "config": config.model_dump(mode="json"),
        "metrics_config": run.metrics.model_dump(mode="json"),
        "data": {
            "source": run.source,
            "target": teacher.get("data", {}).get("target"),
            "val_fraction": run.metrics.val_fraction,
        },
        "teacher": {"id": run.teacher, **{key: teacher.get(key) for key in ("profile", "run", "data")}},
        "steps": config.train.steps,
        "label_aware": {
            "semantic": config.loss.semantic_w > 0,
            "high_frequency": config.loss.detail.weight > 0,
        },
    }


def run_result(
    run: TranslatorRun | DistillRun, model_id: str, steps: int, metrics: Mapping[str, Any]
) -> dict[str, Any]:
    """What a finished run returns (and saves as ``result.json``): the registry id and the summary."""
    result = {
        "translator": model_id,
        "run": run.run_id,
        "source": run.source,
        "profile": run.profile_name,
        "steps": steps,
        "metrics": dict(metrics.get("summary", {})),
    }
    if isinstance(run, TranslatorRun):
        return {**result, "target": run.target}
    return {
        **result,
        "teacher": run.teacher,
        "gflops_per_frame": round(student_gflops_per_frame(run.config.student), 4),
        "vs_teacher": dict(metrics.get("vs_teacher", {})),
    }


def check_final_step(run_dir: str, step: int, planned: int) -> None:
    """``RuntimeError`` unless the checkpoint reached the planned step (a run registers only when done)."""
    if step != planned:
        raise RuntimeError(f"{run_dir}: checkpoint is at step {step}, not the planned {planned}")
