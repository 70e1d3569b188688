"""The work of one translate shard task, importable without Prefect so that a worker process can run it.

A shard's work chains three steps as webdataset chains generators: ``storage`` reads the source shard
as decoded batches, the ``models`` engine turns their pixels into translated pixels, ``storage`` encodes,
checks and writes the shard. It runs in the flow's process or, on CPU, in one of the worker processes of
``tasks/workers.py`` (``pipeline.shard_processes``); either way a process keeps each engine it built.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Iterable, Iterator
from typing import Any

from sim2real.models.translator.checkpoint import load_translator
from sim2real.models.translator.engine import Encoder, EngineCache, TranslatorEngine
from sim2real.models.translator.engine_config import EngineConfig
from sim2real.storage import translate as translation
from sim2real.storage.image_encoding import EncodeConfig, encode_rgb
from sim2real.storage.reader import register_fsspec_schemes
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.translate_read import FrameBatch, PipelineConfig, read_batches
from sim2real.storage.versions import DatasetStore

_ENGINES = EngineCache(size=2)


def cached_engine(root: str, translator_id: str, engine: EngineConfig, batch_size: int) -> TranslatorEngine:
    """The engine of ``translator_id`` for a resolved ``engine`` config, built once per process."""

    def build() -> TranslatorEngine:
        model, _ = load_translator(TranslatorRegistry(root), translator_id, engine.device)
        return TranslatorEngine(model, engine, batch_size)

    return _ENGINES.get((root, translator_id, engine, batch_size), build)


def translated(
    engine: TranslatorEngine, batches: Iterable[FrameBatch], encode: Encoder
) -> Iterator[FrameBatch]:
    """Each batch with its translated ``pixels`` (and, where the engine encoded them, ``encoded``)."""
    batches, for_engine = itertools.tee(batches)
    results = engine.translate_batches((batch.images for batch in for_engine), encode)
    for batch, (pixels, encoded) in zip(batches, results, strict=True):
        batch.pixels, batch.encoded = pixels, encoded
        yield batch


def translate_shard_at(
    root: str,
    plan: translation.TranslatePlan,
    index: int,
    encode: EncodeConfig,
    pipeline: PipelineConfig,
    engine: EngineConfig,
) -> dict[str, Any]:
    """Translate source shard ``index`` of ``plan`` into output shard ``index``; a shard whose part
    record exists is skipped. ``pipeline`` and ``engine`` are resolved (``TranslateConfig.resolve``).

    Returns the shard's summary (``storage.translate.shard_summary``: file, counts; no rows) plus
    ``skipped`` and ``seconds`` (wall). Raises ``storage.translate.LabelMismatch`` (nothing written)
    when a label would not be byte-identical to the source's.
    """
    started = time.perf_counter()
    store = DatasetStore(root)
    part = translation.read_part(store, plan.name, plan.version, index)
    if part is not None:
        return {**translation.shard_summary(part), "skipped": True, "seconds": 0.0}
    register_fsspec_schemes()
    url = plan.shard_urls[index]
    source_rows = translation.source_rows_of_shard(store.open(plan.source), url.rsplit("/", 1)[-1])
    batches = translated(
        cached_engine(root, plan.lineage.translator_id, engine, pipeline.batch_size),
        read_batches(url, pipeline),
        functools.partial(encode_rgb, config=encode),
    )
    out = (plan.name, plan.version, index)
    part = translation.write_translated_shard(
        store, out, batches, (url, source_rows), encode, plan.lineage, pipeline.encode_threads or 2
    )
    return {**translation.shard_summary(part), "skipped": False, "seconds": time.perf_counter() - started}
