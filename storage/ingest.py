"""Ingest: turn a dataset on disk into a committed dataset version (plain functions, no Prefect).

``plan_ingest`` lists and hashes the inputs and derives the version id; ``build_shard`` turns one
slice of frames into one shard (quarantining bad frames); ``commit_ingest`` gathers the shard parts
and commits the version. The Prefect flow runs ``build_shard`` once per shard as a task.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from sim2real import __version__
from sim2real.storage import schema
from sim2real.storage.manifest import manifest_row, manifest_table, with_member_hashes
from sim2real.storage.schema import SchemaError
from sim2real.storage.shards import write_shard
from sim2real.storage.sources.base import BadFrame, SourceFrame, get_format, load_frame, printable
from sim2real.storage.versions import DatasetStore, Version, commit_version, content_hash, shard_file_name

SCHEMA_VERSION = 1
#: Label members counted per version when a frame lacks them (``frames_without_labels``).
LABEL_KINDS: tuple[str, ...] = (schema.BOXES, schema.SEG, schema.INST)


@dataclass(frozen=True)
class IngestConfig:
    """How an export is read and cut into shards."""

    format: str = "folder"  # importer name (see storage.sources)
    options: Mapping[str, Any] = field(default_factory=dict)  # importer options, e.g. {"split": "val"}
    max_shard_samples: int = 1000  # at most this many samples per shard
    max_shard_bytes: int = 512 * 2**20  # and at most about this many input bytes per shard


@dataclass(frozen=True)
class IngestPlan:
    """The version id and the frames of each shard, decided before any shard is written."""

    name: str
    version: str
    config: IngestConfig
    shards: tuple[tuple[SourceFrame, ...], ...]
    mapping_table: Mapping[str, Any]
    source_dir: str

    @property
    def num_frames(self) -> int:
        return sum(len(s) for s in self.shards)


def _file_digest(path: str) -> tuple[str, int]:
    """sha256 and size of a file: a local path or any fsspec URL (e.g. ``zip://member::archive.zip``)."""
    digest = hashlib.sha256()
    size = 0
    with fsspec.open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def split_into_shards(
    frames: Sequence[SourceFrame], sizes: Sequence[int], max_samples: int, max_bytes: int
) -> list[tuple[SourceFrame, ...]]:
    """Greedy, order-preserving split bounded by sample count and input bytes."""
    shards: list[tuple[SourceFrame, ...]] = []
    current: list[SourceFrame] = []
    current_bytes = 0
    for frame, size in zip(frames, sizes, strict=True):
        if current and (len(current) >= max_samples or current_bytes + size > max_bytes):
            shards.append(tuple(current))
            current, current_bytes = [], 0
        current.append(frame)
        current_bytes += size
    if current:
        shards.append(tuple(current))
    return shards


def plan_ingest(
    source_dir: str, name: str, config: IngestConfig, exclude_keys: frozenset[str] = frozenset()
) -> IngestPlan:
    """List and hash the export's frames (skipping ``exclude_keys``) and derive the version id."""
    importer = get_format(config.format)
    frames = [f for f in importer.discover(source_dir, config.options) if f.key not in exclude_keys]
    paths = sorted({p for f in frames for p in f.files.values()})
    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = dict(zip(paths, pool.map(_file_digest, paths), strict=True))
    # `extra` carries per-frame records parsed from shared annotation files (boxes, colour tables).
    inputs = [[f.key, {role: digests[p][0] for role, p in sorted(f.files.items())}, f.extra] for f in frames]
    config_payload = {k: v for k, v in asdict(config).items()}
    version = content_hash(
        {"kind": "ingest", "schema": SCHEMA_VERSION, "name": name, "config": config_payload, "inputs": inputs}
    )
    sizes = [sum(digests[p][1] for p in f.files.values()) for f in frames]
    shards = split_into_shards(frames, sizes, config.max_shard_samples, config.max_shard_bytes)
    return IngestPlan(name, version, config, tuple(shards), importer.mapping_table(), source_dir)


def build_shard(
    store: DatasetStore, name: str, version: str, format_name: str, index: int, frames: Sequence[SourceFrame]
) -> dict[str, Any]:
    """Write shard ``index`` of ``name@version`` from ``frames`` and its part record.

    A shard whose part record exists (finished before a crash) is not redone. Bad frames are
    quarantined with the file and the reason; the rest of the shard completes.
    """
    part_path = store.part_path(name, version, index)
    if store.fs.exists(part_path):
        return store.read_json(part_path)
    importer = get_format(format_name)
    shard_file = shard_file_name(name, index)
    samples, rows, quarantine = [], [], []
    unknown_ids: dict[str, int] = {}
    dropped_boxes: dict[str, int] = {}
    without_labels: dict[str, int] = {}
    for frame in frames:
        try:
            loaded = load_frame(importer, frame)
            members = with_member_hashes(frame.key, loaded.members)
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
        samples.append((frame.key, members))
        rows.append(manifest_row(frame.key, shard_file, members))
    info = write_shard(store.fs, store.shard_path(name, version, index), samples)
    part = {
        "shard": {"file": shard_file, "nsamples": info.nsamples, "filesize": info.filesize, "md5": info.md5},
        "rows": rows,
        "quarantine": quarantine,
        "unknown_ids": unknown_ids,
        "dropped_boxes": dropped_boxes,
        "frames_without_labels": without_labels,
    }
    store.write_json(part_path, part)
    return part


def commit_ingest(store: DatasetStore, plan: IngestPlan, parts: Sequence[Mapping[str, Any]]) -> Version:
    """Commit the version from every shard's part (``version.json`` last)."""
    unknown: dict[str, int] = {}
    dropped: dict[str, int] = {}
    without: dict[str, int] = {member: 0 for member in LABEL_KINDS}
    for part in parts:
        for source_id, count in part["unknown_ids"].items():
            unknown[source_id] = unknown.get(source_id, 0) + count
        for category, count in part.get("dropped_boxes", {}).items():
            dropped[category] = dropped.get(category, 0) + count
        for member, count in part.get("frames_without_labels", {}).items():
            without[member] = without.get(member, 0) + count
    info = {
        "kind": "ingest",
        "source_dir": plan.source_dir,
        "format": plan.config.format,
        "options": dict(plan.config.options),
        "config": {
            "max_shard_samples": plan.config.max_shard_samples,
            "max_shard_bytes": plan.config.max_shard_bytes,
        },
        "mapping_table": dict(plan.mapping_table),
        "unknown_ids": dict(sorted(unknown.items())),
        "dropped_boxes": dict(sorted(dropped.items())),  # source boxes with no detection class, by category
        "frames_without_labels": without,  # committed frames that have no such member (unknown, not empty)
        "code_version": __version__,
        "schema_version": SCHEMA_VERSION,
    }
    rows = [row for part in parts for row in part["rows"]]
    return commit_version(store, plan.name, plan.version, parts, info, manifest_table(rows))
