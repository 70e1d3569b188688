"""Prefect tasks of the train-translator flow (``checkpoint_step`` and ``finished_result`` serve the
distill flow too): the run's folder in ``storage.training_runs``, the training
in ``models.translator`` (run records and cards in ``models.translator.runs``); evaluation tasks are in
``tasks.translator_eval``.

Training is split into segments of ``checkpoint_every`` steps, one task each: a segment resumes from
the run's last checkpoint, so a retry (or a rerun after a crash) repeats at most one segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sim2real.models.device import resolve_device
from sim2real.models.translator import fit, runs
from sim2real.models.translator.checkpoint import translator_weights
from sim2real.models.translator.data import translator_batches
from sim2real.models.translator.runs import DistillRun, TranslatorProfile, TranslatorRun
from sim2real.models.translator.training import TrainingState, run_training
from sim2real.storage import training_runs as store
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.versions import DatasetStore, content_hash


def folder(run: TranslatorRun | DistillRun) -> store.RunFolder:
    """The run's folder under its root."""
    return store.run_folder(run.root, run.runs_folder, run.run_id)


def load_state(run: TranslatorRun) -> TrainingState:
    """The run's training state: from its last checkpoint, or fresh (seeded) before the first."""
    return runs.translator_state(run, folder(run).checkpoint(), folder(run).checkpoint_url)


@task(name="plan-translator-run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def plan_run(
    root: str, source: str, target: str, profile_name: str, profile: TranslatorProfile, device: str
) -> TranslatorRun:
    """Resolve ``source``/``target`` refs to committed versions and derive the run id from them."""
    src, tgt = DatasetStore(root).open(source), DatasetStore(root).open(target)
    run_id = content_hash({"source": src.ref, "target": tgt.ref, "profile": profile.model_dump(mode="json")})
    urls = {"source_urls": src.shard_urls, "target_urls": tgt.shard_urls}
    return TranslatorRun(root=root, run_id=run_id, source=src.ref, target=tgt.ref, **urls,
                         profile_name=profile_name, profile=profile, device=str(resolve_device(device)))


@task(name="checkpoint-step", cache_policy=NO_CACHE)
def checkpoint_step(run: TranslatorRun | DistillRun) -> int:
    """The step the run's last checkpoint reached (0 if none)."""
    data = folder(run).checkpoint()
    return 0 if data is None else fit.checkpoint_step(data, folder(run).checkpoint_url)


@task(name="train-translator-segment", cache_policy=NO_CACHE, task_run_name="train-to-step-{stop_step}",
      retries=1, retry_delay_seconds=5)
def train_segment(run: TranslatorRun, stop_step: int) -> dict[str, Any]:
    """Train to ``stop_step`` from the last checkpoint; returns loss rows and the preview grid URL."""
    out, train, config = folder(run), run.profile.train, run.profile.translator
    state = load_state(run)
    start, seed = state.step, train.seed + state.step  # a resumed segment sees a fresh, reproducible order
    fraction, buffer = run.profile.metrics.val_fraction, train.shuffle_buffer
    sim = store.sample_stream(run.source_urls, runs.split(fraction, False), buffer, seed, resampled=True)
    real = store.sample_stream(run.target_urls, runs.split(fraction, False), buffer, seed + 1, resampled=True)
    history, logged = out.losses_until(start), list[dict[str, float]]()

    def save(s: TrainingState) -> None:  # rows first: a kill between the two keeps them for the resume
        out.save_losses(history + logged)
        out.save_checkpoint(fit.checkpoint_bytes(s, config))

    batches = translator_batches(sim, real, train, seed=seed)
    rows = run_training(
        state, batches, config, run.device, stop_step, on_checkpoint=save, on_log=logged.append
    )
    out.save_losses(history + rows)
    frames = store.first_samples(run.source_urls, runs.split(fraction, True), runs.PREVIEW_FRAMES)
    preview = out.save_preview(stop_step, runs.preview_png(state.translator, frames))
    return {"start": start, "step": state.step, "rows": rows, "preview": preview}


@task(name="register-translator", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def register(run: TranslatorRun, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Save the final weights and card in the registry; write and return the result with its id."""
    state = load_state(run)
    runs.check_final_step(folder(run).url, state.step, run.profile.train.steps)
    weights, card = translator_weights(state.translator), runs.translator_card(run, metrics)
    result = runs.run_result(run, TranslatorRegistry(run.root).save(weights, card), state.step, metrics)
    folder(run).save_result(result)
    return result


@task(name="finished-run", cache_policy=NO_CACHE)
def finished_result(run: TranslatorRun | DistillRun) -> dict[str, Any] | None:
    """The result of a run (a translator's or a student's) that already registered its model, else None."""
    result = folder(run).result()
    return result if result and TranslatorRegistry(run.root).exists(result["translator"]) else None
