"""Prefect tasks of the retrain-and-evaluate flow: thin wrappers over ``storage`` and ``models``.

``train_evaluate_arm`` is the one heavy task (one arm × task, minutes on CPU). It looks up the arm's
content hash in the perception store first, so a rerun with the same inputs and config trains nothing.
Tasks pass references (version refs, arm ids, small metric dicts), never tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sim2real.models import perception_data, perception_train
from sim2real.storage.metrics_store import MetricsStore, arm_rows
from sim2real.storage.perception_store import PerceptionStore
from sim2real.storage.reader import decoded_samples
from sim2real.storage.versions import DatasetStore, content_hash


def arm_id(run: perception_train.ArmRun) -> str:
    """The arm's cache key: content hash of its inputs, config, seeds and code version."""
    return content_hash(run.fingerprint(), length=20)


@task(name="resolve-versions", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def resolve_versions(root: str, refs: Sequence[str]) -> dict[str, str]:
    """Map each ref (``name@latest``, ``name@alias``, ``name@version``) to its committed ``name@version``."""
    store = DatasetStore(root)
    return {ref: store.open(ref).ref for ref in refs}


def _training_streams(
    urls: Sequence[list[str]], shuffle_buffer: int, seed: int, task: str
) -> Callable[[int], list[Iterable[perception_data.Sample]]]:
    """Per epoch: an endless shuffled stream of each version, seeded by (seed, epoch, position) only,
    so the real version (position 0) streams the same samples in every arm. Only frames with ``task``'s
    labels; a version without any fails fast (``EmptyStream``) instead of spinning."""
    require = perception_data.label_members(task)

    def for_epoch(epoch: int) -> list[Iterable[perception_data.Sample]]:
        base = seed + 7919 * epoch
        return [
            decoded_samples(shards, shuffle_buffer=shuffle_buffer, seed=base + i, resampled=True,
                            require=require)
            for i, shards in enumerate(urls)
        ]

    return for_epoch


@task(
    name="train-evaluate-arm",
    task_run_name="{run.task}-{run.label}",
    cache_policy=NO_CACHE,
    retries=0,
)
def train_evaluate_arm(root: str, run: perception_train.ArmRun, device: str) -> dict[str, Any]:
    """Train and evaluate one arm, or return its stored result when the same arm was done before."""
    key = arm_id(run)
    models = PerceptionStore(root)
    cached = models.load_result(key)
    if cached is not None:
        return {**cached, "arm_id": key, "cached": True}
    datasets = DatasetStore(root)
    urls = [datasets.open(ref).shard_urls for ref, _ in run.train]
    val_urls = datasets.open(run.val).shard_urls
    stream = _training_streams(urls, run.data.shuffle_buffer, run.seed, run.task)
    checkpoint, result = perception_train.train_and_evaluate(
        run, stream, lambda: decoded_samples(val_urls), device
    )
    models.save(key, checkpoint, {**result, "arm_id": key})
    return {**result, "arm_id": key, "cached": False}


@task(name="append-metrics", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def append_metrics(root: str, results: Sequence[dict[str, Any]], run_id: str, profile: str) -> int:
    """Append the rows of arms not yet in the metrics table; returns how many rows were added."""
    store = MetricsStore(root)
    known = store.arm_ids()
    now = datetime.now(UTC)
    rows = [
        row
        for result in results
        if result["arm_id"] not in known
        for row in arm_rows(result, run_id=run_id, time=now, profile=profile)
    ]
    if rows:
        store.append(rows)
    return len(rows)
