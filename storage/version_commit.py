"""Committing a dataset version: shard part records → quarantine, manifest and index, ``version.json`` last.

A version is built shard by shard; each finished shard leaves a part record (its file, sample count,
size, md5 and quarantined frames) and its own manifest rows next to the tar. The functions here gather
those into the version's ``quarantine.parquet``, ``manifest.parquet`` (streamed, in row groups of ~16 MiB)
and wids ``index.json``, then write ``version.json``, the commit marker. Two ways in:

- :func:`commit_in_place`: the version id was known before any shard was written (translate);
- :func:`commit_staged`: the id is known only now (ingest); the staging directory is renamed to the
  version's, each step safe to redo after a kill (:func:`finish_commit` completes a killed rename).
  On S3 or GCS that rename is a server-side copy of every object then a delete (O(bytes), not
  atomic): ``_commit.json`` is copied last (``storage.shards.move_folder``), so a version directory
  holding it is complete, and a kill part-way leaves a directory without it, removed and redone.

A version with no samples is never committed (:class:`EmptyVersion`, naming the quarantine file).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from sim2real.storage.manifest import MANIFEST_SCHEMA
from sim2real.storage.shards import move_folder
from sim2real.storage.versions import (
    INDEX_FILE,
    MANIFEST_FILE,
    PARTS_DIR,
    PENDING_FILE,
    QUARANTINE_FILE,
    VERSION_FILE,
    DatasetStore,
    Version,
    shard_manifest_name,
)

QUARANTINE_SCHEMA = pa.schema([("key", pa.string()), ("path", pa.string()), ("reason", pa.string())])


class EmptyVersion(ValueError):
    """A version would hold no samples: it is not committed (a reader would find nothing)."""


def commit_version(
    store: DatasetStore,
    name: str,
    version: str,
    parts: Sequence[Mapping[str, Any]],
    info: Mapping[str, Any],
    manifest: pa.Table,
) -> Version:
    """Write index, manifest and quarantine from the shard ``parts``, then ``version.json`` last."""
    vdir = store.version_dir(name, version)
    quarantine_rows = [row for part in parts for row in part.get("quarantine", [])]
    shards = [{k: part["shard"][k] for k in ("file", "nsamples", "filesize", "md5")} for part in parts]
    index = wids_index(name, version, shards)
    store.write_table(f"{vdir}/{QUARANTINE_FILE}", pa.Table.from_pylist(quarantine_rows, QUARANTINE_SCHEMA))
    if manifest.num_rows == 0:
        raise EmptyVersion(empty_version_message(f"{name}@{version}", quarantine_rows,
                                                 store.url(f"{vdir}/{QUARANTINE_FILE}")))
    store.write_table(f"{vdir}/{MANIFEST_FILE}", manifest)
    store.write_json(f"{vdir}/{INDEX_FILE}", index)
    full_info = version_info(info, name, version, manifest.num_rows, len(quarantine_rows), shards)
    return mark_committed(store, name, version, full_info)


def version_info(
    info: Mapping[str, Any], name: str, version: str, samples: int, quarantined: int,
    shards: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """What ``version.json`` says: ``info`` plus the id, counts, shards and the commit time."""
    counts = {"samples": samples, "quarantined": quarantined, "shards": list(shards)}
    return {**info, "name": name, "version": version, **counts, "created_at": time.time()}


def mark_committed(store: DatasetStore, name: str, version: str, full_info: dict[str, Any]) -> Version:
    """Write ``version.json`` (the commit marker) into the version's directory, then drop its part
    records."""
    vdir = store.version_dir(name, version)
    store.write_json(f"{vdir}/{VERSION_FILE}", full_info)
    if store.fs.exists(f"{vdir}/{PARTS_DIR}"):
        store.fs.rm(f"{vdir}/{PARTS_DIR}", recursive=True)
    return Version(store, name, version, full_info)


def empty_version_message(
    ref: str, quarantine_rows: Sequence[Mapping[str, Any]], where: str, total: int | None = None
) -> str:
    """Why ``ref`` is not committed: no samples, with the first quarantine reasons and where all are.

    ``total``: how many frames were quarantined when ``quarantine_rows`` holds only the first ones.
    """
    total = len(quarantine_rows) if total is None else total
    if not total:
        return f"{ref}: no samples and nothing quarantined; nothing committed"
    first = "; ".join(f"{r['path']}: {r['reason']}" for r in quarantine_rows[:3])
    more = f" (+{total - 3} more)" if total > 3 else ""
    return (f"{ref}: no samples: all {total} frame(s) quarantined, nothing committed; "
            f"{first}{more}; every reason in {where}")


def write_commit_files(
    store: DatasetStore,
    name: str,
    version: str,
    directory: str,
    parts: Callable[[], Iterator[Mapping[str, Any]]],
    info: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``quarantine.parquet``, ``manifest.parquet`` and ``index.json`` of a version built in
    ``directory``, streaming; return what ``version.json`` will say.

    ``parts()`` yields each shard's part record in shard order (``shard``: file, nsamples, filesize,
    md5; ``quarantine``: rows), one at a time; each shard's manifest rows are read from
    ``shards/{name}-{i}.parquet`` (gathered into ~16 MiB row groups of ``manifest.parquet``). Raises
    :class:`EmptyVersion` (quarantine written, naming it) when no shard holds a sample.
    """
    shards: list[dict[str, Any]] = []
    first_quarantined: list[Mapping[str, Any]] = []  # for the message of a version with no samples
    quarantined = 0

    def quarantine_tables() -> Iterator[pa.Table]:
        nonlocal quarantined
        for part in parts():
            shards.append({k: part["shard"][k] for k in ("file", "nsamples", "filesize", "md5")})
            rows = part.get("quarantine", [])
            quarantined += len(rows)
            first_quarantined.extend(rows[: 3 - len(first_quarantined)])
            yield pa.Table.from_pylist(rows, QUARANTINE_SCHEMA)

    store.write_table_streaming(f"{directory}/{QUARANTINE_FILE}", QUARANTINE_SCHEMA, quarantine_tables())
    if sum(s["nsamples"] for s in shards) == 0:
        where = store.url(f"{directory}/{QUARANTINE_FILE}")
        raise EmptyVersion(empty_version_message(f"{name}@{version}", first_quarantined, where, quarantined))
    manifests = (
        store.read_table(f"{directory}/shards/{shard_manifest_name(shard['file'])}") for shard in shards
    )
    samples = store.write_table_streaming(f"{directory}/{MANIFEST_FILE}", MANIFEST_SCHEMA, manifests)
    store.write_json(f"{directory}/{INDEX_FILE}", wids_index(name, version, shards))
    for leftover in store.fs.ls(f"{directory}/shards", detail=False):  # temp files of killed shard writers
        if ".tmp-" in leftover.rsplit("/", 1)[-1]:
            store.fs.rm(leftover)
    return version_info(info, name, version, samples, quarantined, shards)


def commit_in_place(
    store: DatasetStore,
    name: str,
    version: str,
    parts: Callable[[], Iterator[Mapping[str, Any]]],
    info: Mapping[str, Any],
) -> Version:
    """Commit a version whose shards were written in its own directory (its id was known up front, as
    for translate): :func:`write_commit_files`, then ``version.json`` last, then the part records go."""
    full_info = write_commit_files(store, name, version, store.version_dir(name, version), parts, info)
    return mark_committed(store, name, version, full_info)


def commit_staged(
    store: DatasetStore,
    name: str,
    version: str,
    staging: str,
    parts: Callable[[], Iterator[Mapping[str, Any]]],
    info: Mapping[str, Any],
) -> Version:
    """Commit the version built under ``staging`` (its id known only now, as for ingest) as
    ``name@version``, ``version.json`` last.

    Steps, each safe to redo after a kill: :func:`write_commit_files` into ``staging``, then
    ``version.json``'s content as ``_commit.json``; the directory renamed to the version's;
    ``version.json`` written from ``_commit.json``. A version already committed under the same id is
    kept and ``staging`` removed.
    """
    vdir = store.version_dir(name, version)
    if store.exists(name, version):
        store.fs.rm(staging, recursive=True)
        return store.open(f"{name}@{version}")
    full_info = write_commit_files(store, name, version, staging, parts, info)
    store.write_json(f"{staging}/{PENDING_FILE}", full_info)
    if store.fs.exists(f"{vdir}/{PENDING_FILE}"):  # killed between the rename and version.json: same content
        store.fs.rm(staging, recursive=True)
        return finish_commit(store, name, version)
    if store.fs.exists(vdir):  # a directory no commit finished moving in
        store.fs.rm(vdir, recursive=True)
    move_folder(store.fs, staging, vdir, last=PENDING_FILE)  # on S3: copies, _commit.json last
    return finish_commit(store, name, version)


def finish_commit(store: DatasetStore, name: str, version: str) -> Version:
    """Write ``version.json`` from the ``_commit.json`` a staged commit left in the version directory."""
    vdir = store.version_dir(name, version)
    info = store.read_json(f"{vdir}/{PENDING_FILE}")
    for leftover in (PARTS_DIR, "listing"):
        if store.fs.exists(f"{vdir}/{leftover}"):
            store.fs.rm(f"{vdir}/{leftover}", recursive=True)
    store.write_json(f"{vdir}/{VERSION_FILE}", info)
    store.fs.rm(f"{vdir}/{PENDING_FILE}")
    return Version(store, name, version, info)


def wids_index(name: str, version: str, shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The wids ``index.json`` of a version's shards (empty shards left out)."""
    return {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": f"{name}@{version}",
        "shardlist": [
            {
                "url": f"shards/{s['file']}",
                "nsamples": s["nsamples"],
                "filesize": s["filesize"],
                "md5": s["md5"],
            }
            for s in shards
            if s["nsamples"] > 0
        ],
    }
