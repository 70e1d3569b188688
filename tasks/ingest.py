"""Prefect tasks of the ingest flow: thin wrappers over ``sim2real.storage.ingest``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sim2real.storage import ingest
from sim2real.storage.sources.base import SourceFrame
from sim2real.storage.versions import DatasetStore, Version


@task(name="plan-ingest", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def plan_ingest(
    source_dir: str, name: str, config: ingest.IngestConfig, exclude_keys: frozenset[str]
) -> ingest.IngestPlan:
    """List and hash the inputs, derive the version id and the shard split."""
    return ingest.plan_ingest(source_dir, name, config, exclude_keys)


@task(
    name="write-shard",
    cache_policy=NO_CACHE,
    task_run_name="write-shard-{index:06d}",
    retries=2,
    retry_delay_seconds=1,
)
def write_shard(
    root: str, name: str, version: str, format_name: str, index: int, frames: Sequence[SourceFrame]
) -> dict[str, Any]:
    """Build one output shard (bad frames quarantined); returns the shard's part record."""
    return ingest.build_shard(DatasetStore(root), name, version, format_name, index, frames)


@task(name="commit-version", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def commit_version(root: str, plan: ingest.IngestPlan, parts: Sequence[Mapping[str, Any]]) -> Version:
    """Write manifest, index and, last, version.json."""
    return ingest.commit_ingest(DatasetStore(root), plan, parts)
