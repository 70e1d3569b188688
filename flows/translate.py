"""The translate flow: a source version + a registry translator → a translated version.

One task per source shard. The version id covers the source version, the translator (id and weights
sha256) and every setting that can change output bytes (``TranslateConfig.version_key``), so the same
inputs give the same version: a committed version is returned untouched, and a rerun after a crash finds
each finished shard's part record and translates only the rest.
"""

from __future__ import annotations

import base64
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.utilities.annotations import quote

from sim2real.flows.events import emit_version_created
from sim2real.flows.reporting import Progress, artifact_key, run_shards, shard_window, table
from sim2real.flows.runners import (
    GPU_TAG,
    RunnerConfig,
    build_task_runner,
    ensure_tag_limit,
    tasks_leave_process,
)
from sim2real.flows.runtime import embedded_run_settings
from sim2real.flows.translate_config import TranslateConfig
from sim2real.storage.translate import TranslatePlan
from sim2real.storage.versions import DatasetStore, Version, default_root
from sim2real.tasks import translate as translate_tasks
from sim2real.tasks.workers import refuse_in_starting_worker, shutdown_pool

# Shard tasks in flight at least (O(1) in the shard count): more than any runner here runs at once (the
# thread runner: 2; Dask/Ray: one per GPU slot, counted separately).
SHARDS_IN_FLIGHT = 16
ARTIFACT_ROWS = 200  # shard and quarantine rows shown in artifacts (all of them are in the version's files)


@flow(name="translate", flow_run_name="translate-{source}")
def translate_flow(
    source: str,
    translator: str,
    out_name: str | None = None,
    root: str | None = None,
    config: TranslateConfig = TranslateConfig(),  # noqa: B008 - frozen pydantic model, never mutated
) -> dict[str, Any]:
    """Translate ``source`` (``name@version``) with registry translator ``translator`` (an id or an alias
    such as ``production``)."""
    refuse_in_starting_worker("translate")
    logger = get_run_logger()
    root = root or default_root()
    store = DatasetStore(root)
    config = config.resolve()  # on the machine that runs the flow: its device and cores
    out_name = out_name or f"{source.partition('@')[0]}-translated"
    plan = translate_tasks.plan_translate(root, source, translator, out_name, config.version_key())
    if store.exists(plan.name, plan.version):
        logger.info("%s@%s is already committed; nothing to do", plan.name, plan.version)
        version = store.open(f"{plan.name}@{plan.version}")
        return summary(version, skipped_shards=len(version.info["shards"]), created=False)
    shard_task = translate_tasks.translate_shard
    # Worker processes: set, or by the run's size; at most one per shard, none under Dask/Ray (they run
    # each shard task in a process of their own already). Throughput only: the same id and bytes.
    elsewhere = tasks_leave_process()
    processes = 0 if elsewhere else config.pipeline.processes_for(plan.source_frames, len(plan.shard_urls))
    if processes > 1:
        logger.info("shard work in %d worker processes (pipeline.shard_processes)", processes)
    config = config.model_copy(
        update={"pipeline": config.pipeline.model_copy(update={"shard_processes": processes})}
    )
    if elsewhere and config.engine.device.startswith("cuda"):  # threads share one engine
        ensure_tag_limit(GPU_TAG, config.pipeline.gpu_slots)
        shard_task = shard_task.with_options(tags=[GPU_TAG])
    # Submitted parameters stay unquoted: Dask rebuilds tuples, a quote() arrives there as a bare tuple.
    progress = Progress(
        artifact_key("translate", plan.name, "progress"), len(plan.shard_urls), f"translate {plan.name}"
    )
    shown: list[tuple[int, dict[str, Any]]] = []  # the artifact's rows: the first ARTIFACT_ROWS shards
    skipped = 0
    try:
        for index, part in run_shards(
            lambda i: shard_task.submit(root, plan, i, config.encode, config.pipeline, config.engine),
            len(plan.shard_urls),
            shard_window(max(SHARDS_IN_FLIGHT, config.pipeline.gpu_slots)),
            progress,
            f"{plan.name}@{plan.version}",
        ):  # small per-shard summaries, dropped as they come: O(window) in the flow, not O(shards)
            skipped += bool(part["skipped"])
            if index < ARTIFACT_ROWS:
                shown.append((index, part))
    finally:
        if processes > 1:  # the workers hold torch and an engine each (~0.5-0.8 GB): not kept idle
            shutdown_pool()
    version = translate_tasks.commit_translation(root, quote(plan))
    report(root, plan, version, [part for _, part in sorted(shown, key=lambda item: item[0])])
    emit_version_created(version, root)
    logger.info(
        "committed %s: %d samples, %d shards (%d skipped)",
        version.ref,
        version.num_samples,
        len(plan.shard_urls),
        skipped,
    )
    return summary(version, skipped_shards=skipped, created=True)


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
        try:
            pairs = translate_tasks.preview_translation(root, plan.source, version.ref)
        except Exception as exc:  # the version is committed: a frame PIL cannot show must not fail the run
            get_run_logger().warning("no before/after preview of %s: %s", version.ref, exc)
            return
        images = "\n\n".join(
            f"**{key}**\n\n![{key}](data:image/png;base64,{base64.b64encode(png).decode()})"
            for key, png in pairs
        )
        create_markdown_artifact(
            f"### {plan.source} → {version.ref}\n\nLeft: source frame. Right: translated (translator "
            f"`{plan.lineage.translator_id}`), full resolution.\n\n{images}\n",
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
    refuse_in_starting_worker("translate")  # before Prefect starts anything in such a worker
    runner = runner or RunnerConfig()
    with embedded_run_settings():
        return translate_flow.with_options(task_runner=build_task_runner(runner))(**params)
