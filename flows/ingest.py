"""The ingest flow: an export folder (or a real dataset) → a committed dataset version.

The flow holds O(1) state in the number of shards: a listing record, the shard tasks in flight (a
window of a few more than the worker processes), the artifact's first rows, the version.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from sim2real.flows.reporting import Progress, artifact_key, run_shards, shard_window, table
from sim2real.storage.ingest import IngestConfig
from sim2real.storage.process_lifetime import usable_cores
from sim2real.storage.versions import DatasetStore, default_root
from sim2real.tasks import ingest as ingest_tasks
from sim2real.tasks.workers import refuse_in_starting_worker, shutdown_pool

#: Shard rows shown in the flow's shards artifact (the full list is in the version's index.json).
ARTIFACT_SHARDS = 200


@flow(name="ingest", flow_run_name="ingest-{name}")
def ingest_flow(
    source_dir: str,
    name: str,
    root: str | None = None,
    format: str = "folder",
    split: str | None = None,
    options: dict[str, str] | None = None,
    max_shard_samples: int = 1000,
    max_shard_bytes: int = 512 * 2**20,
    exclude_versions: list[str] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Ingest ``source_dir`` as dataset ``name``; a version already committed is returned untouched.

    ``options`` are importer options (e.g. ``{"tags": "0.9.13"}`` for CARLA; see FORMATS in the README).
    ``exclude_versions`` (``name@version`` refs) skips frames whose keys those versions already hold,
    so a nightly run ingests only the new frames. ``workers``: processes that build shards (default:
    the CPUs available; 1 builds them in the flow's own process).
    """
    refuse_in_starting_worker("ingest")
    logger = get_run_logger()
    root = root or default_root()
    store = DatasetStore(root)
    importer_options = {**(options or {}), **({"split": split} if split else {})}
    config = IngestConfig(format, importer_options, max_shard_samples, max_shard_bytes)
    listing = ingest_tasks.list_inputs(root, source_dir, name, config, list(exclude_versions or []))
    if listing.committed is not None:
        logger.info("%s@%s is already committed; nothing to do", name, listing.committed)
        return summary(store.open(f"{name}@{listing.committed}"), created=False)
    processes = min(workers or usable_cores(), listing.num_shards)
    progress = Progress(artifact_key("ingest", name, "progress"), listing.num_shards, f"ingest {name}")
    shown: list[dict[str, Any]] = []  # the artifact's rows: the first ARTIFACT_SHARDS shards only
    try:
        for index, record in run_shards(
            lambda i: ingest_tasks.write_shard.submit(root, listing, i, processes),
            listing.num_shards,
            shard_window(processes),
            progress,
            f"ingest {name}",
        ):
            if index < ARTIFACT_SHARDS:
                shown.append(artifact_row(record))
    finally:
        shutdown_pool()
    version = ingest_tasks.commit_version(root, listing)
    more = f" (first {ARTIFACT_SHARDS})" if listing.num_shards > ARTIFACT_SHARDS else ""
    table(
        artifact_key("ingest", name, "shards"),
        sorted(shown, key=lambda row: row["shard"]),
        f"Shards of {version.ref}{more}",
    )
    quarantined = int(version.info["quarantined"])
    if quarantined:
        rows = version.quarantine().slice(0, ARTIFACT_SHARDS).to_pylist()
        table(artifact_key("ingest", name, "quarantine"), rows, f"Quarantined frames of {version.ref}")
        logger.warning("%d frame(s) quarantined: see %s/quarantine.parquet", quarantined, version.path)
    logger.info(
        "committed %s: %d samples in %d shards", version.ref, version.num_samples, listing.num_shards
    )
    return summary(version, created=True)


def artifact_row(record: dict[str, Any]) -> dict[str, Any]:
    """A shard's row in the flow's shards artifact."""
    return {
        "shard": record["file"],
        "samples": record["nsamples"],
        "quarantined": record["quarantined"],
        "bytes": record["filesize"],
    }


def summary(version: Any, created: bool) -> dict[str, Any]:
    """The ingest result as the CLI prints it."""
    return {
        "name": version.name,
        "version": version.version,
        "samples": version.num_samples,
        "quarantined": int(version.info["quarantined"]),
        "shards": len(version.info["shards"]),
        "path": version.path,
        "created": created,
        "unknown_ids": version.info.get("unknown_ids", {}),
        "dropped_boxes": version.info.get("dropped_boxes", {}),
        "frames_without_labels": version.info.get("frames_without_labels", {}),
    }
