"""Prefect task of the quality gate: score a translated version (``models.metrics.version_quality``)."""

from __future__ import annotations

import itertools
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from sim2real.models.metrics.translation import TranslationMetricsConfig
from sim2real.models.metrics.translation_eval import train_reference_segmenter
from sim2real.models.metrics.version_quality import score_translated_version
from sim2real.storage.reader import decoded_samples
from sim2real.storage.sources.toysim import sign_glyphs
from sim2real.storage.versions import DatasetStore


def first_frames(urls: list[str], count: int) -> list[dict[str, Any]]:
    """The first ``count`` decoded frames of the shards, in order."""
    return list(itertools.islice(decoded_samples(urls), count))


@task(name="measure-quality", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def measure_quality(
    root: str,
    translated_ref: str,
    real_train: str,
    real_val: str,
    config: TranslationMetricsConfig,
    device: str,
) -> dict[str, Any]:
    """Score up to ``config.frames`` frames of ``translated_ref`` against its source and real frames.

    The reference segmenter trains on ``real_train`` (``config.segmenter.steps`` steps) and is scored on
    ``real_val``; its real-frame mIoU is the yardstick of label fidelity.
    """
    store = DatasetStore(root)
    translated_version = store.open(translated_ref)
    source_version = store.open(str(translated_version.info["source"]))
    translated = first_frames(translated_version.shard_urls, config.frames)
    by_key = {f["__key__"]: f for f in decoded_samples(source_version.shard_urls)}
    source = [by_key[f["__key__"]] for f in translated]
    real = first_frames(store.open(real_val).shard_urls, config.frames)
    real_train_samples = decoded_samples(store.open(real_train).shard_urls, resampled=True, shuffle_buffer=32)
    segmenter = train_reference_segmenter(real_train_samples, config.segmenter, device)
    return score_translated_version(
        translated, source, real, segmenter, config, device, sign_glyphs(config.sign_glyphs)
    )
