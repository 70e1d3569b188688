"""Prefect tasks of the distill flow: thin wrappers over ``sim2real.tasks.distill_run``.

Distillation is split into segments of ``checkpoint_every`` steps, one task each: a segment resumes
from the run's last checkpoint, so a retry (or a rerun after a crash) repeats at most one segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sim2real.models.translator.distill import DistillConfig
from sim2real.tasks import distill_run
from sim2real.tasks.distill_run import DistillRun


@task(name="plan-distill-run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def plan_run(
    root: str, teacher: str, source: str, profile_name: str, config: DistillConfig, device: str
) -> DistillRun:
    """Resolve the teacher and the source version and derive the run id."""
    return distill_run.plan_distill(root, teacher, source, profile_name, config, device)


@task(name="distill-checkpoint-step", cache_policy=NO_CACHE)
def checkpoint_step(run: DistillRun) -> int:
    """The step the run's last checkpoint reached (0 if none)."""
    return distill_run.checkpoint_step(run)


@task(
    name="distill-segment",
    cache_policy=NO_CACHE,
    task_run_name="distill-to-step-{stop_step}",
    retries=1,
    retry_delay_seconds=5,
)
def train_segment(run: DistillRun, stop_step: int) -> dict[str, Any]:
    """Distil to ``stop_step`` from the last checkpoint; returns the loss rows."""
    return distill_run.train_segment(run, stop_step)


@task(name="distill-reference-segmenter", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def reference_segmenter(run: DistillRun) -> str:
    """The teacher's reference segmenter behind label fidelity (cached per target version)."""
    return distill_run.reference_segmenter(run)


@task(name="evaluate-student", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def evaluate(run: DistillRun, segmenter_url: str) -> dict[str, Any]:
    """Translation metrics of the student and its teacher on the same held-out frames."""
    return distill_run.evaluate_run(run, segmenter_url)


@task(name="register-student", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def register(run: DistillRun, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Save the student and its card in the translator registry; returns the result with its id."""
    return distill_run.register_run(run, metrics)


@task(name="finished-distill-run", cache_policy=NO_CACHE)
def finished_result(run: DistillRun) -> dict[str, Any] | None:
    """The registered result of a run that already finished, else None."""
    return distill_run.finished_result(run)
