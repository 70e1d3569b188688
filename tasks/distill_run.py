"""Plain functions behind the distill tasks: one student distillation run on a storage root, no Prefect.

A run is identified by a content hash of its inputs (teacher id, source version, profile) and keeps its
state under ``{root}/runs/students/{run_id}/``: the latest training checkpoint, the loss rows so far, and
once registered ``result.json``. A crashed run started again with the same inputs finds its checkpoint
and continues from the saved step, exactly like a translator training run.

The student is scored against its teacher on the teacher's own held-out frames, with the teacher's
metric settings and reference segmenter, so the two sets of numbers compare like for like.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from sim2real import __version__
from sim2real.models.device import resolve_device
from sim2real.models.metrics.translation import TranslationMetricsConfig
from sim2real.models.metrics.translation_eval import evaluate_translation
from sim2real.models.segmenter import load_segmenter
from sim2real.models.translator.checkpoint import load_translator
from sim2real.models.translator.distill import (
    DistillConfig,
    DistillState,
    distill_batches,
    distill_checkpoint_bytes,
    new_distill_state,
    restore_distill_state,
    run_distillation,
    student_weights,
)
from sim2real.models.translator.engine import TranslatorEngine
from sim2real.models.translator.engine_config import EngineConfig
from sim2real.models.translator.model import Translator
from sim2real.models.translator.student import StudentTranslator, student_gflops_per_frame
from sim2real.storage.registry import RegistryError, TranslatorRegistry
from sim2real.storage.sources.toysim import sign_glyphs
from sim2real.storage.versions import DatasetStore, content_hash
from sim2real.tasks.translator_run import (
    TranslatorProfile,
    TranslatorRun,
    _read,
    _write,
    ensure_reference_segmenter,
    held_out_frames,
    read_json,
    sample_stream,
    write_json,
)

CHECKPOINT_FILE = "checkpoint.pt"
LOSSES_FILE = "losses.json"
RESULT_FILE = "result.json"
STUDENT_KIND = "student"
#: Summary metrics compared student vs teacher: (name, whether higher is better).
COMPARED_METRICS: tuple[tuple[str, bool], ...] = (
    ("fidelity_miou_translated", True),
    ("edge_agreement_translated", True),
    ("light_color_accuracy_translated", True),
    ("sign_digit_accuracy_translated", True),
    ("realism_swd_translated", False),
)


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
    metrics: TranslationMetricsConfig  # the teacher's
    device: str

    @property
    def run_dir(self) -> str:
        """The run's folder as a URL under the root."""
        return f"{self.root.rstrip('/')}/runs/students/{self.run_id}"


def teacher_card(root: str, teacher: str) -> dict[str, Any]:
    """The registry card of ``teacher``; ``ValueError`` when it is a student (distil from a translator)."""
    card = TranslatorRegistry(root).card(teacher)
    if card.get("kind") != "translator":
        raise ValueError(
            f"{TranslatorRegistry(root).path(teacher)}: entry {teacher!r} is a {card.get('kind')!r}, "
            "not a trained translator; distil from a translator"
        )
    return card


def plan_distill(
    root: str, teacher: str, source: str, profile_name: str, config: DistillConfig, device: str
) -> DistillRun:
    """Resolve the teacher and the ``source`` ref and derive the run id."""
    card = teacher_card(root, teacher)
    src = DatasetStore(root).open(source)
    run_id = content_hash({"teacher": teacher, "source": src.ref, "config": config.model_dump(mode="json")})
    return DistillRun(
        root=root,
        run_id=run_id,
        teacher=teacher,
        source=src.ref,
        source_urls=src.shard_urls,
        profile_name=profile_name,
        config=config,
        metrics=TranslationMetricsConfig.model_validate(card["metrics_config"]),
        device=str(resolve_device(device)),
    )


def load_teacher(run: DistillRun) -> Translator:
    """The teacher translator, eval mode, on the run's device, its parameters frozen."""
    model, _ = load_translator(TranslatorRegistry(run.root), run.teacher, run.device)
    return model.requires_grad_(False)


def checkpoint_step(run: DistillRun) -> int:
    """The step of the run's last checkpoint (0 when it has none)."""
    data = _read(f"{run.run_dir}/{CHECKPOINT_FILE}")
    if data is None:
        return 0
    state, _ = restore_distill_state(data, "cpu", source=f"{run.run_dir}/{CHECKPOINT_FILE}")
    return state.step


def load_state(run: DistillRun) -> DistillState:
    """The run's state: from its checkpoint, or fresh (seeded) when there is none."""
    url = f"{run.run_dir}/{CHECKPOINT_FILE}"
    data = _read(url)
    if data is None:
        return new_distill_state(run.config, run.device, seed=run.config.train.seed)
    state, _ = restore_distill_state(data, run.device, source=url)
    return state


def train_segment(run: DistillRun, stop_step: int) -> dict[str, Any]:
    """Distil from the last checkpoint to ``stop_step``, checkpointing atomically; returns the loss rows."""
    train = run.config.train
    state = load_state(run)
    start = state.step
    teacher = load_teacher(run)
    seed = train.seed + start  # a resumed segment sees a fresh, reproducible data order
    samples = sample_stream(
        run.source_urls, False, run.metrics.val_fraction, train.shuffle_buffer, seed, resampled=True
    )
    # The teacher's pairs come from its production engine (the precision the translate flow runs it at).
    losses_url = f"{run.run_dir}/{LOSSES_FILE}"
    history = [r for r in read_json(losses_url) or [] if r["step"] <= start]

    def save(s: DistillState) -> None:
        _write(f"{run.run_dir}/{CHECKPOINT_FILE}", distill_checkpoint_bytes(s, run.config))

    with TranslatorEngine(teacher, EngineConfig(device=str(run.device), forward_threads=1)) as engine:
        batches = distill_batches(samples, engine, train, seed=seed)
        rows = run_distillation(
            state, teacher, batches, run.config, run.device, stop_step, on_checkpoint=save
        )
    write_json(losses_url, history + rows)
    return {"start": start, "step": state.step, "rows": rows}


def teacher_run(run: DistillRun) -> TranslatorRun:
    """The teacher's training run as its card records it (for its cached reference segmenter)."""
    card = teacher_card(run.root, run.teacher)
    data = card.get("data", {})
    store = DatasetStore(run.root)
    profile = TranslatorProfile.model_validate({**card["config"], "metrics": card["metrics_config"]})
    return TranslatorRun(
        root=run.root,
        run_id=str(card.get("run", run.teacher)),
        source=data["source"],
        target=data["target"],
        source_urls=store.open(data["source"]).shard_urls,
        target_urls=store.open(data["target"]).shard_urls,
        profile_name=str(card.get("profile")),
        profile=profile,
        device=run.device,
    )


def reference_segmenter(run: DistillRun) -> str:
    """The teacher's target-trained reference segmenter (trained now if not cached); returns its URL."""
    return ensure_reference_segmenter(teacher_run(run))


def relative_difference(student: float | None, teacher: float | None) -> float | None:
    """``(student - teacher) / |teacher|`` in percent; None when either is missing or the teacher is 0."""
    if student is None or teacher is None or teacher == 0:
        return None
    return 100.0 * (student - teacher) / abs(teacher)


def compare(student: Mapping[str, Any], teacher: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per compared metric: both values, the student's % difference, and whether it is worse by > 5 %."""
    rows = {}
    for name, higher_is_better in COMPARED_METRICS:
        s, t = student.get(name), teacher.get(name)
        diff = relative_difference(s, t)
        worse = None if diff is None else (-diff if higher_is_better else diff) > 5.0
        rows[name] = {"student": s, "teacher": t, "difference_pct": diff, "worse_by_over_5pct": worse}
    return rows


def evaluate_run(run: DistillRun, segmenter_url: str) -> dict[str, Any]:
    """Translation metrics of the final student and of its teacher on the teacher's held-out frames."""
    state = load_state(run)
    teacher = load_teacher(run)
    trun = teacher_run(run)
    segmenter = load_segmenter(_read(segmenter_url) or b"", source=segmenter_url).to(run.device)
    sim_frames = held_out_frames(run.source_urls, run.metrics.val_fraction, run.metrics.frames)
    real_frames = held_out_frames(trun.target_urls, run.metrics.val_fraction, run.metrics.frames)

    def score(model: Translator | StudentTranslator) -> dict[str, Any]:
        return evaluate_translation(
            model,  # type: ignore[arg-type]  # any module with ``translate`` and ``stride``
            sim_frames,
            real_frames,
            segmenter,
            run.metrics,
            run.device,
            sign_glyphs(run.metrics.sign_glyphs),
        )

    student_metrics, teacher_metrics = score(state.student.eval()), score(teacher)
    metrics = {
        **student_metrics,
        "teacher_summary": teacher_metrics["summary"],
        "vs_teacher": compare(student_metrics["summary"], teacher_metrics["summary"]),
    }
    write_json(f"{run.run_dir}/metrics.json", metrics)
    return metrics


def card_for(run: DistillRun, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The registry card of a finished distillation: the student's config, lineage and metrics."""
    teacher = teacher_card(run.root, run.teacher)
    return {
        "kind": STUDENT_KIND,
        "config": run.config.model_dump(mode="json"),
        "metrics_config": run.metrics.model_dump(mode="json"),
        "profile": run.profile_name,
        "data": {
            "source": run.source,
            "target": teacher.get("data", {}).get("target"),
            "val_fraction": run.metrics.val_fraction,
        },
        "teacher": {
            "id": run.teacher,
            "profile": teacher.get("profile"),
            "run": teacher.get("run"),
            "data": teacher.get("data"),
        },
        "steps": run.config.train.steps,
        "label_aware": {
            "semantic": run.config.loss.semantic_w > 0,
            "high_frequency": run.config.loss.detail.weight > 0,
        },
        "metrics": dict(metrics),
        "run": run.run_id,
        "code_version": __version__,
        "created_at": time.time(),
    }


def register_run(run: DistillRun, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Save the final student with its card in the translator registry; write and return the result."""
    state = load_state(run)
    if state.step != run.config.train.steps:
        raise RuntimeError(
            f"{run.run_dir}: checkpoint is at step {state.step}, not the planned {run.config.train.steps}"
        )
    student_id = TranslatorRegistry(run.root).save(student_weights(state.student), card_for(run, metrics))
    result = {
        "translator": student_id,
        "teacher": run.teacher,
        "run": run.run_id,
        "source": run.source,
        "profile": run.profile_name,
        "steps": state.step,
        "gflops_per_frame": round(student_gflops_per_frame(run.config.student), 4),
        "metrics": dict(metrics.get("summary", {})),
        "vs_teacher": dict(metrics.get("vs_teacher", {})),
    }
    write_json(f"{run.run_dir}/{RESULT_FILE}", result)
    return result


def finished_result(run: DistillRun) -> dict[str, Any] | None:
    """The result of an already registered run (None when it has not finished)."""
    result = read_json(f"{run.run_dir}/{RESULT_FILE}")
    try:
        if result and TranslatorRegistry(run.root).exists(result["translator"]):
            return result
    except RegistryError:
        return None
    return None
