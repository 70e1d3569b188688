"""Prefect tasks of the train-translator flow: thin wrappers over ``sim2real.tasks.translator_run``.

Training is split into segments of ``checkpoint_every`` steps, one task each: a segment resumes from
the run's last checkpoint, so a retry (or a rerun after a crash) repeats at most one segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sim2real.tasks import translator_run
from sim2real.tasks.translator_run import TranslatorProfile, TranslatorRun


@task(name="plan-translator-run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def plan_run(
    root: str, source: str, target: str, profile_name: str, profile: TranslatorProfile, device: str
) -> TranslatorRun:
    """Resolve the data versions and derive the run id."""
    return translator_run.plan_run(root, source, target, profile_name, profile, device)


@task(name="checkpoint-step", cache_policy=NO_CACHE)
def checkpoint_step(run: TranslatorRun) -> int:
    """The step the run's last checkpoint reached (0 if none)."""
    return translator_run.checkpoint_step(run)


@task(
    name="train-translator-segment",
    cache_policy=NO_CACHE,
    task_run_name="train-to-step-{stop_step}",
    retries=1,
    retry_delay_seconds=5,
)
def train_segment(run: TranslatorRun, stop_step: int) -> dict[str, Any]:
    """Train to ``stop_step`` from the last checkpoint; returns loss rows and the preview grid URL."""
    return translator_run.train_segment(run, stop_step)


@task(name="reference-segmenter", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def reference_segmenter(run: TranslatorRun) -> str:
    """The target-trained segmenter behind label fidelity (trained once per target version)."""
    return translator_run.ensure_reference_segmenter(run)


@task(name="evaluate-translator", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def evaluate(run: TranslatorRun, segmenter_url: str) -> dict[str, Any]:
    """Translation-quality metrics, translated vs raw sim."""
    return translator_run.evaluate_run(run, segmenter_url)


@task(name="register-translator", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def register(run: TranslatorRun, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Save weights and card in the registry; returns the run result with the translator id."""
    return translator_run.register_run(run, metrics)


@task(name="finished-translator-run", cache_policy=NO_CACHE)
def finished_result(run: TranslatorRun) -> dict[str, Any] | None:
    """The registered result of a run that already finished, else None."""
    return translator_run.finished_result(run)
