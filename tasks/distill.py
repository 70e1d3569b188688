"""Prefect tasks of the distill flow: the run's folder in ``storage.training_runs``, the distillation in
``models.translator.distill`` (run records and cards in ``models.translator.runs``). Its checkpoint
step and finished result are ``tasks.translator``'s; the student is scored in ``tasks.translator_eval``.

Distillation is split into segments of ``checkpoint_every`` steps, one task each: a segment resumes
from the run's last checkpoint, so a retry (or a rerun after a crash) repeats at most one segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sim2real.models.device import resolve_device
from sim2real.models.translator import fit, runs
from sim2real.models.translator.checkpoint import load_translator, translator_weights
from sim2real.models.translator.distill import DistillConfig, DistillState, distill_batches, run_distillation
from sim2real.models.translator.engine import TranslatorEngine
from sim2real.models.translator.engine_config import EngineConfig
from sim2real.models.translator.model import Translator
from sim2real.models.translator.runs import DistillRun, TranslatorRun
from sim2real.storage import training_runs as store
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.versions import DatasetStore, content_hash
from sim2real.tasks.translator import folder


def load_state(run: DistillRun) -> DistillState:
    """The student's state: from the run's last checkpoint, or fresh (seeded) before the first."""
    return runs.student_state(run, folder(run).checkpoint(), folder(run).checkpoint_url)


def load_teacher(run: DistillRun) -> Translator:
    """The teacher translator, eval mode, on the run's device, its parameters frozen."""
    model, _ = load_translator(TranslatorRegistry(run.root), run.teacher, run.device)
    return model.requires_grad_(False)


@task(name="plan-distill-run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def plan_run(
    root: str, teacher: str, source: str, profile_name: str, config: DistillConfig, device: str
) -> DistillRun:
    """Resolve the teacher (its card and training data) and the ``source`` ref; derive the run id."""
    registry, store_ = TranslatorRegistry(root), DatasetStore(root)
    card = registry.card(teacher)
    profile = runs.teacher_profile(card, f"{registry.path(teacher)}: entry {teacher!r}")
    data, src = card.get("data", {}), store_.open(source)
    urls = {f"{side}_urls": store_.open(data[side]).shard_urls for side in ("source", "target")}
    teacher_run = TranslatorRun(
        root=root, run_id=str(card.get("run", teacher)), source=data["source"], target=data["target"], **urls,
        profile_name=str(card.get("profile")), profile=profile, device=str(resolve_device(device)),
    )
    run_id = content_hash({"teacher": teacher, "source": src.ref, "config": config.model_dump(mode="json")})
    return DistillRun(root=root, run_id=run_id, teacher=teacher, source=src.ref, source_urls=src.shard_urls,
                      profile_name=profile_name, config=config, teacher_run=teacher_run)


@task(name="distill-segment", cache_policy=NO_CACHE, task_run_name="distill-to-step-{stop_step}",
      retries=1, retry_delay_seconds=5)
def train_segment(run: DistillRun, stop_step: int) -> dict[str, Any]:
    """Distil to ``stop_step`` from the last checkpoint; returns the loss rows."""
    out, train = folder(run), run.config.train
    state, teacher = load_state(run), load_teacher(run)
    start, seed = state.step, train.seed + state.step  # a resumed segment sees a fresh, reproducible order
    training = runs.split(run.metrics.val_fraction, False)
    samples = store.sample_stream(run.source_urls, training, train.shuffle_buffer, seed, resampled=True)
    history, logged = out.losses_until(start), list[dict[str, float]]()

    def save(s: DistillState) -> None:  # rows first: a kill between the two keeps them for the resume
        out.save_losses(history + logged)
        out.save_checkpoint(fit.checkpoint_bytes(s, run.config))

    # The teacher's pairs come from its production engine (the precision the translate flow runs it at).
    with TranslatorEngine(teacher, EngineConfig(device=run.device, forward_threads=1)) as engine:
        batches = distill_batches(samples, engine, train, seed=seed)
        rows = run_distillation(
            state, teacher, batches, run.config, run.device, stop_step,
            on_checkpoint=save, on_log=logged.append,
        )
    out.save_losses(history + rows)
    return {"start": start, "step": state.step, "rows": rows}


@task(name="register-student", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def register(run: DistillRun, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Save the student and its card in the translator registry; write and return the result with its id."""
    state, registry = load_state(run), TranslatorRegistry(run.root)
    runs.check_final_step(folder(run).url, state.step, run.config.train.steps)
    card = runs.student_card(run, registry.card(run.teacher), metrics)
    result = runs.run_result(run, registry.save(translator_weights(state.student), card), state.step, metrics)
    folder(run).save_result(result)
    return result
