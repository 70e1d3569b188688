"""Prefect tasks of the nightly's gate and promotion: thin wrappers over ``models.metrics.gate`` and
``storage.promotion``."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sim2real.models.metrics.gate import GateConfig, GateDecision, QualityReport, check_gate, retrain_gain
from sim2real.storage.ingest import IngestConfig, count_new_frames
from sim2real.storage.promotion import DEFAULT_ALIAS, promote_version, record_gate
from sim2real.storage.versions import DatasetStore


@task(name="find-new-frames", cache_policy=NO_CACHE)
def find_new_frames(root: str, source_dir: str, name: str, source_format: str) -> dict[str, Any]:
    """How many frames of the export no committed version of ``name`` holds, and those versions' refs
    (a merge of the export's listing against the versions' sorted keys: no set of every key)."""
    store = DatasetStore(root)
    versions = [v.ref for v in store.list_versions(name)]
    count = count_new_frames(store, source_dir, IngestConfig(format=source_format), versions)
    return {"new_frames": count, "versions": versions}


@task(name="retrain-gain", cache_policy=NO_CACHE)
def retrain_gain_task(evaluation: dict[str, Any], extra_label: str) -> float | None:
    """:func:`~sim2real.models.metrics.gate.retrain_gain` of a retrain-and-evaluate result."""
    return retrain_gain(evaluation, extra_label)


@task(name="gate-version", cache_policy=NO_CACHE)
def gate_version(
    root: str, ref: str, report: QualityReport, gate: GateConfig, gain_points: float | None = None
) -> GateDecision:
    """Decide ``ref``'s gate from ``report`` (and the retrain gain) and record the decision."""
    decision = check_gate(report, gate, gain_points=gain_points)
    record_gate(root, ref, decision.model_dump(), report.model_dump())
    return decision


@task(name="promote-version", cache_policy=NO_CACHE)
def promote_version_task(root: str, ref: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
    """Point ``NAME@alias`` at ``ref`` (:func:`~sim2real.storage.promotion.promote_version`)."""
    return promote_version(root, ref, alias)
