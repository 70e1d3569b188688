"""The translate flow: a source version + a registry translator → a translated version.

One task per source shard. The version id covers the source version, the translator (id and weights
sha256) and the settings that change output bytes (encoding, compute precision), so the same inputs
give the same version: a committed version is returned untouched, and a rerun after a crash finds
each finished shard's part record and translates only the rest.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Literal

import torch
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture
from prefect.utilities.annotations import quote
from pydantic import BaseModel, ConfigDict, Field

from sim2real.flows.events import emit_version_created
from sim2real.flows.reporting import Progress, artifact_key, completed, table
from sim2real.flows.runners import (
    GPU_TAG,
    RunnerConfig,
    build_task_runner,
    ensure_tag_limit,
    tasks_leave_process,
)
from sim2real.flows.runtime import embedded_run_settings
from sim2real.models.translator.engine import Precision, resolve_device, resolve_precision
from sim2real.storage.image_encoding import EncodeConfig, PngFilter, PngStrategy
from sim2real.storage.translate import TranslatePlan
from sim2real.storage.translate_read import ReadConfig
from sim2real.storage.versions import DatasetStore, Version, default_root
from sim2real.tasks import translate as translate_tasks

# /2: compiled engines use two-pass instance norms; /3: CPU bf16 graphs hold bf16 weights, no autocast
# (and PNGs are deflated by zlib-ng: other bytes, same pixels)
ENGINE_VERSION = "folded-upsampling/3"
ARTIFACT_ROWS = 200  # shard and quarantine rows shown in artifacts (all of them are in the version's files)


class ShardsFailed(RuntimeError):
    """Some shards failed after their retries; finished shards are kept for the rerun."""


class TranslateConfig(BaseModel):
    """Output encoding and throughput settings of a translate run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_format: Literal["png", "jpg"] = Field(
        default="png", description="format of the translated rgb member"
    )
    jpeg_quality: int = Field(default=95, ge=1, le=95, description="JPEG quality (jpg only)")
    png_compress_level: int = Field(default=6, ge=0, le=9, description="zlib level (png only)")
    png_strategy: PngStrategy = Field(
        default="rle",
        description="zlib strategy (png only): on translated images rle is ~3.5x faster than 'default' and "
        "smaller (bench/encode.py)",
    )
    png_filter: PngFilter = Field(
        default="paeth",
        description="PNG row filter (png only): paeth on every row is as small as PIL's per-row choice "
        "('adaptive') on translated images, in 30-40 % less CPU (bench/encode.py)",
    )
    batch_size: int = Field(default=8, ge=1, description="frames per forward pass")
    decode_workers: int | None = Field(
        default=None,
        ge=0,
        description="worker processes decoding images; default: none on CPU (decoding is a small share "
        "of a CPU forward pass; no pool to start), min(4, cores / 2) on CUDA",
    )
    prefetch_batches: int = Field(default=2, ge=1, description="batches each decode worker prepares ahead")
    encode_threads: int | None = Field(
        default=None,
        ge=1,
        description="threads encoding translated images, per shard task; default: 2 on CPU (the forward "
        "passes need the cores), max(2, cores / 4) on CUDA (two shard tasks at once encode on half the "
        "cores; a 256x512 PNG takes ~2.4 ms of one core, bench/encode.py, so two threads a task would "
        "cap the flow near 1700 frames/s)",
    )
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    precision: Precision = Field(
        default="auto",
        description="compute precision: auto = bf16 where the device has it natively (fp16 on older GPUs)",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the translator (seconds to a minute per input shape; for large runs)",
    )
    cpu_streams: int = Field(
        default=2,
        ge=1,
        description="CPU: forward passes at once, each on cores / streams threads (two single-threaded "
        "forwards beat one two-threaded forward by ~20 % on 2 cores; bench/translate.py)",
    )
    gpu_slots: int = Field(
        default=1,
        ge=1,
        description="Dask/Ray runners: slots of the 'gpu' tag limit, created if absent (one per GPU)",
    )

    def encode(self) -> EncodeConfig:
        return EncodeConfig(
            self.image_format, self.jpeg_quality, self.png_compress_level, self.png_strategy, self.png_filter
        )

    def read(self, device: torch.device) -> ReadConfig:
        workers = self.decode_workers
        if workers is None:
            workers = min(4, (os.cpu_count() or 2) // 2) if device.type == "cuda" else 0
        return ReadConfig(self.batch_size, workers, self.prefetch_batches)

    def encoders(self, device: torch.device) -> int:
        """Encode threads per shard task on ``device``."""
        if self.encode_threads is not None:
            return self.encode_threads
        return max(2, (os.cpu_count() or 2) // 4) if device.type == "cuda" else 2

    def engine(self, device: torch.device) -> translate_tasks.EngineConfig:
        precision = resolve_precision(self.precision, device)
        streams = self.cpu_streams if device.type == "cpu" else 1
        return translate_tasks.EngineConfig(str(device), precision, self.compile, self.batch_size, streams)


def version_config(config: TranslateConfig, device: torch.device) -> dict[str, Any]:
    """The settings the version id covers: those that change output bytes (not batch or worker counts).

    ``engine`` names the inference graph's numerics; bump it when a change to the engine moves pixels.
    """
    encode = config.encode()
    return {
        "image_format": encode.image_format,
        "jpeg_quality": encode.jpeg_quality,
        "png_compress_level": encode.png_compress_level,
        "png_strategy": encode.png_strategy,
        "png_filter": encode.png_filter,
        "precision": resolve_precision(config.precision, device),
        "compiled": config.compile,
        "engine": ENGINE_VERSION,
    }


@flow(name="translate", flow_run_name="translate-{source}")
def translate_flow(
    source: str,
    translator: str,
    out_name: str | None = None,
    root: str | None = None,
    config: TranslateConfig = TranslateConfig(),  # noqa: B008 - frozen pydantic model, never mutated
) -> dict[str, Any]:
    """Translate ``source`` (``name@version``) with registry translator ``translator``."""
    logger = get_run_logger()
    root = root or default_root()
    store = DatasetStore(root)
    device = resolve_device(config.device)
    out_name = out_name or f"{source.partition('@')[0]}-translated"
    plan = translate_tasks.plan_translate(root, source, translator, out_name, version_config(config, device))
    if store.exists(plan.name, plan.version):
        logger.info("%s@%s is already committed; nothing to do", plan.name, plan.version)
        version = store.open(f"{plan.name}@{plan.version}")
        return summary(version, skipped_shards=len(version.info["shards"]), created=False)
    shard_task = translate_tasks.translate_shard
    if device.type == "cuda" and tasks_leave_process():  # threads share this process's GPU engine
        ensure_tag_limit(GPU_TAG, config.gpu_slots)
        shard_task = shard_task.with_options(tags=[GPU_TAG])
    encode, read, engine = config.encode(), config.read(device), config.engine(device)
    # Submitted parameters stay unquoted: Dask rebuilds tuples, a quote() arrives there as a bare tuple.
    futures = [
        shard_task.submit(root, plan, i, encode, read, engine, config.encoders(device))
        for i in range(len(plan.shard_urls))
    ]
    parts = wait_for_shards(futures, plan)  # small per-shard summaries: O(shards), no rows
    version = translate_tasks.commit_translation(root, quote(plan))
    report(root, plan, version, parts)
    emit_version_created(version, root)
    skipped = sum(bool(p["skipped"]) for p in parts)
    logger.info(
        "committed %s: %d samples, %d shards (%d skipped)",
        version.ref,
        version.num_samples,
        len(parts),
        skipped,
    )
    return summary(version, skipped_shards=skipped, created=True)


def wait_for_shards(
    futures: list[PrefectFuture[dict[str, Any]]], plan: TranslatePlan
) -> list[dict[str, Any]]:
    """Wait for every shard (one failure does not stop the others), then raise if any failed."""
    progress = Progress(
        artifact_key("translate", plan.name, "progress"), len(futures), f"translate {plan.name}"
    )
    for future in completed(futures, progress):
        future.wait()
    failed = [i for i, future in enumerate(futures) if not future.state.is_completed()]
    if failed:
        raise ShardsFailed(
            f"{plan.name}@{plan.version}: shards {failed} failed ({futures[failed[0]].state.message}); "
            f"{len(futures) - len(failed)} finished shards are kept, rerun to translate the rest"
        )
    return [future.result() for future in futures]


def report(root: str, plan: TranslatePlan, version: Version, parts: list[dict[str, Any]]) -> None:
    """Summary table, quarantine table and a before/after image grid as Prefect artifacts."""
    rows = [
        {
            "shard": p["shard"]["file"],
            "source shard": p["source_shard"],
            "samples": p["shard"]["nsamples"],
            "quarantined": p["quarantined"],
            "skipped": p["skipped"],
            "seconds": round(p["seconds"], 2),
            "frames/s": round(p["shard"]["nsamples"] / p["seconds"], 1) if p["seconds"] else None,
        }
        for p in parts[:ARTIFACT_ROWS]
    ]
    table(artifact_key("translate", plan.name, "shards"), rows, f"Shards of {version.ref} from {plan.source}")
    quarantined = int(version.info.get("quarantined", 0))
    if quarantined:
        first = version.quarantine().slice(0, ARTIFACT_ROWS).to_pylist()
        table(artifact_key("translate", plan.name, "quarantine"), first, f"Quarantined in {version.ref}")
        logger = get_run_logger()
        logger.warning("%d frame(s) quarantined: see %s/quarantine.parquet", quarantined, version.path)
    if version.num_samples:
        grid = translate_tasks.preview_translation(root, plan.source, version.ref)
        create_markdown_artifact(
            f"### {plan.source} → {version.ref}\n\nLeft: source. Right: translated "
            f"(translator `{plan.lineage.translator_id}`).\n\n"
            f"![before/after](data:image/png;base64,{base64.b64encode(grid).decode()})\n",
            key=artifact_key("translate", plan.name, "preview"),
            description=f"Before/after frames of {version.ref}",
        )


def summary(version: Version, skipped_shards: int, created: bool) -> dict[str, Any]:
    """The translate result as the CLI prints it."""
    return {
        "name": version.name,
        "version": version.version,
        "samples": version.num_samples,
        "shards": len(version.info["shards"]),
        "skipped_shards": skipped_shards,
        "quarantined": int(version.info.get("quarantined", 0)),
        "path": version.path,
        "created": created,
    }


def run_translate(runner: RunnerConfig | None = None, **params: Any) -> dict[str, Any]:
    """Run :func:`translate_flow` with the task runner ``runner`` describes (thread pool by default)."""
    runner = runner or RunnerConfig()
    with embedded_run_settings():
        return translate_flow.with_options(task_runner=build_task_runner(runner))(**params)
