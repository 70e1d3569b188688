"""The ingest flow: an export folder (or a real dataset) → a committed dataset version."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from sim2real.flows.reporting import Progress, artifact_key, completed, table
from sim2real.storage.ingest import IngestConfig
from sim2real.storage.versions import DatasetStore, default_root
from sim2real.tasks import ingest as ingest_tasks


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
) -> dict[str, Any]:
    """Ingest ``source_dir`` as dataset ``name``; a version already committed is returned untouched.

    ``options`` are importer options (e.g. ``{"tags": "0.9.13"}`` for CARLA; see FORMATS in the README).
    ``exclude_versions`` (``name@version`` refs) skips frames whose keys those versions already hold,
    so a nightly run ingests only the new frames.
    """
    logger = get_run_logger()
    root = root or default_root()
    store = DatasetStore(root)
    importer_options = {**(options or {}), **({"split": split} if split else {})}
    config = IngestConfig(format, importer_options, max_shard_samples, max_shard_bytes)
    exclude = frozenset(
        k for ref in exclude_versions or [] for k in store.open(ref).manifest()["key"].to_pylist()
    )
    # quote (direct calls, in this process): Prefect would otherwise walk these collections looking for
    # futures: every excluded key here, every frame and manifest row below (~0.13 ms per frame). Not for
    # submitted tasks: Dask rebuilds tuples, so a quote() would arrive there as a bare tuple.
    plan = ingest_tasks.plan_ingest(source_dir, name, config, quote(exclude))
    if store.exists(name, plan.version):
        logger.info("%s@%s is already committed; nothing to do", name, plan.version)
        return summary(store.open(f"{name}@{plan.version}"), created=False)
    futures = [
        ingest_tasks.write_shard.submit(root, name, plan.version, format, i, frames)
        for i, frames in enumerate(plan.shards)
    ]
    progress = Progress(artifact_key("ingest", name, "progress"), len(futures), f"ingest {name}")
    for future in completed(futures, progress):
        future.result()
    parts = [future.result() for future in futures]
    version = ingest_tasks.commit_version(root, quote(plan), quote(parts))
    table(
        artifact_key("ingest", name, "shards"),
        [
            {
                "shard": p["shard"]["file"],
                "samples": p["shard"]["nsamples"],
                "quarantined": len(p["quarantine"]),
                "bytes": p["shard"]["filesize"],
            }
            for p in parts
        ],
        f"Shards of {version.ref}",
    )
    quarantined = [row for p in parts for row in p["quarantine"]]
    if quarantined:
        table(artifact_key("ingest", name, "quarantine"), quarantined, f"Quarantined frames of {version.ref}")
        logger.warning("%d frame(s) quarantined: see %s/quarantine.parquet", len(quarantined), version.path)
    logger.info("committed %s: %d samples in %d shards", version.ref, version.num_samples, len(parts))
    return summary(version, created=True)


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
