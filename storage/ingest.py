"""Ingest: turn a dataset on disk into a committed dataset version (plain functions, no Prefect).

One pass over the data, in parallel, with O(shards) state outside the shard tasks:

1. :func:`list_inputs` first computes the export's **fingerprint** without writing anything: an
   order-independent hash of the names, sizes, mtimes and modes of the files the importer would list
   (``storage.listing.entries_fingerprint``: ``stat`` only, no sort, no spill, flat memory), with the
   config and the excluded versions. ``_listings/{fingerprint}.json`` pointing at a committed version
   ends the ingest there. Otherwise it lists the export in key order, in bounded memory (importers
   that stream, like ``folder``, go through an external sort; no file is opened), leaves out the keys
   of earlier versions by a merge join against their sorted manifest keys (no set of old keys), and
   writes one listing file per shard into a spool renamed to
   ``datasets/{name}/_staging/{fingerprint}/listing/`` (with ``summary.json``). A file changed while
   it is being listed may leave that listing describing the later state; the version id is derived
   from the bytes the shard tasks read, so the committed version is right for its content either way.
2. :func:`build_shard` (one task per shard, in parallel) reads its listing file, then reads each input
   file exactly once: validates it (images by header and CRC where only their size matters, labels
   decoded where they must be converted or counted), hashes each member once (the sha256s serve
   ``meta.json``, the manifest row and the shard digest), and streams the shard's tar to a temporary
   name. Next to it go the shard's manifest rows (``shards/{name}-{i}.parquet``) and, last, a part
   record (``_parts/{i}.json``: counts, quarantined frames, the shard's content digest). A shard
   whose part record exists is not redone.
3. :func:`commit_ingest` derives the **version id** from content: the shards' digests (keys and the
   sha256 of every member, quarantined frames and reasons), the mapping table and the config; so the
   same inputs and config give the same id whatever their mtimes or path. It records
   ``_listings/{fingerprint}.json`` → id, then ``storage.version_commit.commit_staged`` streams the shard
   manifests into ``manifest.parquet``, renames the staging directory to the version's and writes
   ``version.json`` last.

Promises: a rerun over an unchanged export finds ``_listings/{fingerprint}.json`` pointing at a
committed version after the fingerprint pass and writes nothing at all (no spool, no sort run). A
kill -9 at any point leaves either no ``version.json`` (readers see nothing; a rerun with the same
fingerprint resumes the staging directory, redoing only unfinished shards) or a committed version. An
export whose files were touched but not changed is rebuilt under a new fingerprint and commits to
the same id (the existing version is kept). Bytes read from the export: each file once, plus tiny
shared files (``classes.json``) once per shard task and once by the fingerprint pass.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sim2real import __version__
from sim2real.storage import schema
from sim2real.storage.listing import (
    export_fingerprint,
    frames_in_key_order,
    listing_file,
    local_stat,
    read_listing,
    sorted_keys,
    without_keys,
    write_listing,
)
from sim2real.storage.manifest import manifest_row, manifest_table, rows_digest, with_member_hashes
from sim2real.storage.schema import SchemaError
from sim2real.storage.shards import ShardWriter, move_folder
from sim2real.storage.sources.base import (
    BadFrame,
    SourceFormat,
    SourceFrame,
    get_format,
    load_frame,
    printable,
)
from sim2real.storage.version_commit import commit_staged, finish_commit
from sim2real.storage.versions import (
    PARTS_DIR,
    PENDING_FILE,
    STAGING_DIR,
    DatasetStore,
    Version,
    content_hash,
    shard_file_name,
    shard_manifest_name,
)

SCHEMA_VERSION = 2
#: Label members counted per version when a frame lacks them (``frames_without_labels``).
LABEL_KINDS: tuple[str, ...] = (schema.BOXES, schema.SEG, schema.INST)
LISTING_DIR = "listing"
LISTING_SUMMARY = "summary.json"  # in the listing folder: frames, shards (the listing is complete)
STALE_SPOOL_S = 3600.0  # listing spools older than this (a killed listing pass) are removed


@dataclass(frozen=True)
class IngestConfig:
    """How an export is read and cut into shards."""

    format: str = "folder"  # importer name (see storage.sources)
    options: Mapping[str, Any] = field(default_factory=dict)  # importer options, e.g. {"split": "val"}
    max_shard_samples: int = 1000  # at most this many samples per shard
    max_shard_bytes: int = 512 * 2**20  # and at most about this many input bytes per shard


@dataclass(frozen=True)
class Listing:
    """An export listed into per-shard listing files: what the flow holds (never the frames)."""

    name: str
    source_dir: str
    config: IngestConfig
    fingerprint: str  # of the listing, config and excluded versions; names the staging directory
    staging: str  # file-system path of the staging directory
    num_frames: int
    num_shards: int
    mapping_table: Mapping[str, Any]
    committed: str | None = None  # the version id this listing was committed as, when it was


def list_inputs(
    store: DatasetStore, source_dir: str, name: str, config: IngestConfig, exclude_refs: Sequence[str] = ()
) -> Listing:
    """List ``source_dir`` into per-shard listing files (skipping the keys of ``exclude_refs``).

    Returns the listing's small record; ``committed`` is set when an export with the same fingerprint
    was committed before: then nothing at all was written. Raises ``FileNotFoundError``/``ValueError``
    from the importer for a missing or malformed export,
    :class:`~sim2real.storage.versions.VersionNotFound` for an unknown ``exclude_refs`` entry.
    """
    importer = get_format(config.format)
    excluded = [store.open(ref) for ref in exclude_refs]
    fingerprint = content_hash(
        {
            "kind": "ingest-listing",
            "schema": SCHEMA_VERSION,
            "name": name,
            "config": asdict(config),
            "export": export_fingerprint(importer, source_dir, config.options),
            "excluded": sorted(v.ref for v in excluded),
        }
    )
    staging = store.staging_dir(name, fingerprint)
    listing = Listing(name, source_dir, config, fingerprint, staging, 0, 0, importer.mapping_table())
    committed = _committed_as(store, name, fingerprint)
    if committed is not None:
        record = store.read_json(store.listing_record_path(name, fingerprint))
        return replace(
            listing,
            committed=committed,
            num_frames=int(record.get("num_frames", 0)),
            num_shards=int(record.get("num_shards", 0)),
        )
    summary_path = f"{staging}/{LISTING_DIR}/{LISTING_SUMMARY}"
    if not store.fs.exists(summary_path):  # not staged yet (or a listing cut short by a kill)
        _stage_listing(store, importer, listing, excluded)
    summary = store.read_json(summary_path)
    return replace(listing, num_frames=int(summary["num_frames"]), num_shards=int(summary["num_shards"]))


def _stage_listing(
    store: DatasetStore, importer: SourceFormat, listing: Listing, excluded: Sequence[Version]
) -> None:
    """Write the listing files into a spool under the dataset's staging folder, then rename the spool
    to ``{staging}/listing`` (its ``summary.json`` inside: the listing is complete once it is there)."""
    config = listing.config
    frames: Iterable[SourceFrame] = frames_in_key_order(importer, listing.source_dir, config.options)
    if excluded:
        urls = [store.url(v.manifest_url) for v in excluded]
        frames = without_keys(frames, lambda: sorted_keys(urls))
    spool = f"{store.root}/datasets/{listing.name}/{STAGING_DIR}/listing-{uuid.uuid4().hex[:12]}"
    _remove_stale_spools(store, listing.name)
    try:
        summary = write_listing(
            frames,
            local_stat(),
            store.fs,
            spool,
            config.max_shard_samples,
            config.max_shard_bytes,
            listing.source_dir,
        )
        store.write_json(
            f"{spool}/{LISTING_SUMMARY}",
            {
                "num_frames": summary.num_frames,
                "num_shards": summary.num_shards,
                "digest": summary.fingerprint,
            },
        )
        target = f"{listing.staging}/{LISTING_DIR}"
        if store.fs.exists(target):  # a listing cut short by a kill (no summary): replaced
            store.fs.rm(target, recursive=True)
        store.fs.makedirs(listing.staging, exist_ok=True)
        move_folder(store.fs, spool, target, last=LISTING_SUMMARY)
    except BaseException:
        if store.fs.exists(spool):
            store.fs.rm(spool, recursive=True)
        raise


def count_new_frames(
    store: DatasetStore, source_dir: str, config: IngestConfig, exclude_refs: Sequence[str]
) -> int:
    """How many frames of ``source_dir`` no version in ``exclude_refs`` holds (a listing pass that
    writes nothing: names only, merged against the versions' sorted keys; memory flat)."""
    importer = get_format(config.format)
    frames: Iterable[SourceFrame] = frames_in_key_order(importer, source_dir, config.options)
    urls = [store.url(store.open(ref).manifest_url) for ref in exclude_refs]
    if urls:
        frames = without_keys(frames, lambda: sorted_keys(urls))
    return sum(1 for _ in frames)


def _committed_as(store: DatasetStore, name: str, fingerprint: str) -> str | None:
    """The version a listing was committed as (finishing a commit a kill cut short), or None."""
    record = store.listing_record_path(name, fingerprint)
    if not store.fs.exists(record):
        return None
    version = str(store.read_json(record)["version"])
    if store.exists(name, version):
        return version
    if store.fs.exists(f"{store.version_dir(name, version)}/{PENDING_FILE}"):
        finish_commit(store, name, version)
        return version
    return None


def _remove_stale_spools(store: DatasetStore, name: str) -> None:
    base = f"{store.root}/datasets/{name}/{STAGING_DIR}"
    if not store.fs.exists(base):
        return
    for entry in store.fs.ls(base, detail=True):
        path = entry["name"].rstrip("/")
        mtime = float(entry.get("mtime") or entry.get("created") or time.time())
        if path.rsplit("/", 1)[-1].startswith("listing-") and time.time() - mtime > STALE_SPOOL_S:
            store.fs.rm(path, recursive=True)


def part_file(staging: str, index: int) -> str:
    """The part record a finished shard leaves in the staging directory."""
    return f"{staging}/{PARTS_DIR}/{index:06d}.json"


def shard_record(part: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The small record a shard task returns: shard file, counts, no rows."""
    return {
        "index": index,
        **part["shard"],
        "quarantined": len(part["quarantine"]),
        "unknown_ids": part["unknown_ids"],
    }


def build_shard(store: DatasetStore, listing: Listing, index: int) -> dict[str, Any]:
    """Write shard ``index`` of ``listing`` into its staging directory; returns :func:`shard_record`.

    Bad frames are quarantined with the file and the reason; the rest of the shard completes. A shard
    whose part record exists (finished before a crash) is not redone.
    """
    staging = listing.staging
    part_path = part_file(staging, index)
    if store.fs.exists(part_path):
        return shard_record(store.read_json(part_path), index)
    importer = get_format(listing.config.format)
    shard_file = shard_file_name(listing.name, index)
    rows: list[dict[str, Any]] = []
    quarantine: list[dict[str, str]] = []
    unknown_ids: dict[str, int] = {}
    dropped_boxes: dict[str, int] = {}
    without_labels: dict[str, int] = {}
    with ShardWriter(store.fs, f"{staging}/shards/{shard_file}") as writer:
        for frame in read_listing(
            store.fs, listing_file(f"{staging}/{LISTING_DIR}", index), listing.source_dir
        ):
            try:
                loaded = load_frame(importer, frame)
                digests = {
                    m: schema.sha256_hex(data) for m, data in loaded.members.items() if m != schema.META
                }
                members = with_member_hashes(frame.key, loaded.members, digests=digests)
            except BadFrame as exc:
                quarantine.append({"key": frame.key, "path": exc.path, "reason": exc.reason})
                continue
            except SchemaError as exc:
                path = printable(next(iter(frame.files.values())))
                quarantine.append({"key": frame.key, "path": path, "reason": printable(str(exc))})
                continue
            for source_id, count in loaded.unknown_ids.items():
                unknown_ids[str(source_id)] = unknown_ids.get(str(source_id), 0) + int(count)
            for category, count in loaded.dropped_boxes.items():
                dropped_boxes[category] = dropped_boxes.get(category, 0) + int(count)
            for member in LABEL_KINDS:
                if member not in members:  # no labels of that kind: not "empty" ones (DESIGN)
                    without_labels[member] = without_labels.get(member, 0) + 1
            writer.add(frame.key, members)
            rows.append(manifest_row(frame.key, shard_file, members, digests, loaded.seg_train_ids))
        info = writer.close()
    store.write_table(f"{staging}/shards/{shard_manifest_name(shard_file)}", manifest_table(rows))
    digest = hashlib.sha256(rows_digest(rows).encode())
    digest.update(json.dumps(quarantine, sort_keys=True).encode())
    part = {
        "shard": {"file": shard_file, "nsamples": info.nsamples, "filesize": info.filesize, "md5": info.md5},
        "digest": digest.hexdigest(),
        "quarantine": quarantine,
        "unknown_ids": unknown_ids,
        "dropped_boxes": dropped_boxes,
        "frames_without_labels": without_labels,
    }
    store.write_json(part_path, part)
    return shard_record(part, index)


def build_shard_at(root: str, listing: Listing, index: int) -> dict[str, Any]:
    """:func:`build_shard` under the storage root URL ``root`` (what a worker process is sent)."""
    return build_shard(DatasetStore(root), listing, index)


def commit_ingest(store: DatasetStore, listing: Listing) -> Version:
    """Derive the version id from the shards' digests and commit the staged version (``version.json`` last).

    Reads the part records (one at a time) and the shard manifests from storage, so the caller passes
    only the listing. Raises :class:`~sim2real.storage.version_commit.EmptyVersion` when no frame survived
    (every one quarantined, or none listed: e.g. a nightly run with no new frames).
    """

    def parts() -> Iterator[dict[str, Any]]:
        for index in range(listing.num_shards):
            yield store.read_json(part_file(listing.staging, index))

    digests: list[str] = []
    unknown: dict[str, int] = {}
    dropped: dict[str, int] = {}
    without: dict[str, int] = {member: 0 for member in LABEL_KINDS}
    for part in parts():
        digests.append(part["digest"])
        for source_id, count in part["unknown_ids"].items():
            unknown[source_id] = unknown.get(source_id, 0) + count
        for category, count in part.get("dropped_boxes", {}).items():
            dropped[category] = dropped.get(category, 0) + count
        for member, count in part.get("frames_without_labels", {}).items():
            without[member] = without.get(member, 0) + count
    config = {
        "max_shard_samples": listing.config.max_shard_samples,
        "max_shard_bytes": listing.config.max_shard_bytes,
    }
    options = dict(listing.config.options)
    version = content_hash(
        {
            "kind": "ingest",
            "schema": SCHEMA_VERSION,
            "name": listing.name,
            "format": listing.config.format,
            "options": options,
            "config": config,
            "mapping_table": listing.mapping_table,
            "shards": digests,
        }
    )
    info = {
        "kind": "ingest",
        "source_dir": listing.source_dir,
        "format": listing.config.format,
        "options": options,
        "config": config,
        "mapping_table": dict(listing.mapping_table),
        "unknown_ids": dict(sorted(unknown.items())),
        "dropped_boxes": dict(sorted(dropped.items())),  # source boxes with no detection class, by category
        "frames_without_labels": without,  # committed frames that have no such member (unknown, not empty)
        "listing_fingerprint": listing.fingerprint,
        "code_version": __version__,
        "schema_version": SCHEMA_VERSION,
    }
    store.write_json(
        store.listing_record_path(listing.name, listing.fingerprint),
        {"version": version, "num_frames": listing.num_frames, "num_shards": listing.num_shards},
    )
    return commit_staged(store, listing.name, version, listing.staging, parts, info)


def ingest_serially(
    store: DatasetStore, source_dir: str, name: str, config: IngestConfig, exclude_refs: Sequence[str] = ()
) -> Version:
    """The whole ingest in this process, one shard after another (tests, benchmarks, tools)."""
    listing = list_inputs(store, source_dir, name, config, exclude_refs)
    if listing.committed is not None:
        return store.open(f"{name}@{listing.committed}")
    for index in range(listing.num_shards):
        build_shard(store, listing, index)
    return commit_ingest(store, listing)
