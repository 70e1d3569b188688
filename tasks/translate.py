"""Prefect tasks of the translate flow: plan → translate each shard → commit, as ``tasks/ingest.py``.

A shard task runs ``tasks/translate_work.translate_shard_at`` (read, translate, encode, check, write) in
the flow's process or, on CPU, in a worker process (``pipeline.shard_processes``). Tasks pass
references, never images; a process keeps each engine it built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sim2real.models.translator.engine_config import EngineConfig
from sim2real.storage import translate as translation
from sim2real.storage.image_encoding import EncodeConfig
from sim2real.storage.preview import before_after_pairs
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.translate_read import PipelineConfig
from sim2real.storage.versions import DatasetStore, Version
from sim2real.tasks.translate_work import translate_shard_at
from sim2real.tasks.workers import run_in_pool


@task(name="plan-translate", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def plan_translate(
    root: str, source: str, translator_id: str, out_name: str, config: Mapping[str, Any]
) -> translation.TranslatePlan:
    """Resolve source and translator (an id or an alias such as ``production``), derive the version id.
    Raises ``storage.registry.RegistryError`` (a user error: exit 2) when the translator's weights are
    missing or damaged, before any shard task would fail on them."""
    registry = TranslatorRegistry(root)
    card = registry.verified_card(registry.resolve(translator_id))
    return translation.plan_translation(DatasetStore(root), source, card, out_name, config)


@task(
    name="translate-shard",
    cache_policy=NO_CACHE,
    task_run_name="translate-shard-{index:06d}",
    retries=2,
    retry_delay_seconds=1,
)
def translate_shard(
    root: str,
    plan: translation.TranslatePlan,
    index: int,
    encode: EncodeConfig,
    pipeline: PipelineConfig,
    engine: EngineConfig,
) -> dict[str, Any]:
    """Translate source shard ``index`` into output shard ``index``; a shard done before is skipped.
    ``pipeline`` and ``engine`` are resolved (:meth:`TranslateConfig.resolve`).

    Returns the shard's summary (``storage.translate.shard_summary``: file, counts; no rows) plus
    ``skipped`` and ``seconds``.
    """
    processes = pipeline.shard_processes or 1
    if processes > 1:  # throughput only (the same bytes): each worker its share of the forward threads;
        # it decodes itself (a decode pool inside a worker would also hang the worker's exit: a process
        # joins its children before its executors' exit hooks run)
        engine = engine.model_copy(update={"forward_threads": max(1, engine.forward_threads // processes)})
        pipeline = pipeline.model_copy(update={"decode_workers": 0})
    return run_in_pool(processes, translate_shard_at, root, plan, index, encode, pipeline, engine)


@task(name="commit-translation", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def commit_translation(root: str, plan: translation.TranslatePlan) -> Version:
    """Write manifest (streamed from the shard manifests), index and, last, version.json."""
    store = DatasetStore(root)
    source = store.open(plan.source)
    out = (plan.name, plan.version)
    return translation.commit_translation(store, out, source, plan.lineage, plan.config, len(plan.shard_urls))


@task(name="preview-translation", cache_policy=NO_CACHE)
def preview_translation(root: str, source: str, translated: str, count: int = 2) -> list[tuple[str, bytes]]:
    """``(key, PNG)`` of ``count`` frames: source (left) and translated (right) at full resolution."""
    store = DatasetStore(root)
    return before_after_pairs(store, store.open(source), store.open(translated), count)
