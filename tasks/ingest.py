"""Prefect tasks of the ingest flow: thin wrappers over ``sim2real.storage.ingest``.

Tasks take and return small records (a listing, a shard index, counts), never frames or rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sim2real.storage import ingest
from sim2real.storage.versions import DatasetStore, Version
from sim2real.tasks.workers import run_in_pool


@task(name="list-inputs", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def list_inputs(
    root: str, source_dir: str, name: str, config: ingest.IngestConfig, exclude_refs: Sequence[str]
) -> ingest.Listing:
    """List the export into per-shard listing files (names, sizes, mtimes; no file read)."""
    return ingest.list_inputs(DatasetStore(root), source_dir, name, config, exclude_refs)


@task(
    name="write-shard",
    cache_policy=NO_CACHE,
    task_run_name="write-shard-{index:06d}",
    retries=2,
    retry_delay_seconds=1,
)
def write_shard(root: str, listing: ingest.Listing, index: int, workers: int = 1) -> dict[str, Any]:
    """Build one output shard (bad frames quarantined) in a worker process; returns its small record."""
    return run_in_pool(workers, ingest.build_shard_at, root, listing, index)


@task(name="commit-version", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def commit_version(root: str, listing: ingest.Listing) -> Version:
    """Derive the version id from the shard digests; write manifest, index and, last, version.json."""
    return ingest.commit_ingest(DatasetStore(root), listing)
