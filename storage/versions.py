"""Dataset versions on an fsspec root: immutable, content-addressed, committed by ``version.json``.

Layout (see DESIGN.md)::

    {root}/datasets/{name}/{version}/shards/{name}-{000000}.tar
    {root}/datasets/{name}/{version}/manifest.parquet
    {root}/datasets/{name}/{version}/quarantine.parquet
    {root}/datasets/{name}/{version}/index.json          wids shard index
    {root}/datasets/{name}/{version}/version.json        written LAST: the commit marker
    {root}/datasets/{name}/aliases/{alias}.json          e.g. ``production`` → a version id

Each shard may have its manifest rows next to it (``shards/{name}-{000000}.parquet``); the version's
``manifest.parquet`` is then assembled by streaming those files into row groups of about
``ROW_GROUP_BYTES``, so the commit holds at most that much of the rows at a time.

While a version is being built, each finished shard leaves a small part file under ``_parts/``;
the commit (``storage.version_commit``) gathers them into the manifest, quarantine and index and
writes ``version.json``. This module names the layout and reads committed versions. A
directory without ``version.json`` is invisible to readers, and so is everything under a dataset's
``_staging/`` (versions whose id is not known yet, see ``storage.ingest``) and ``_listings/``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from sim2real.storage.shards import atomic_open, write_atomic

VERSION_FILE = "version.json"
MANIFEST_FILE = "manifest.parquet"
QUARANTINE_FILE = "quarantine.parquet"
INDEX_FILE = "index.json"
PARTS_DIR = "_parts"
STAGING_DIR = "_staging"
LISTINGS_DIR = "_listings"
PENDING_FILE = "_commit.json"  # version.json's content, waiting for the version directory's rename
#: Arrow bytes gathered into one row group of a streamed parquet file (``write_table_streaming``).
#: A parquet writer keeps each row group's metadata until it closes the file and then copies it all
#: (~30 KB of memory a row group of the manifest's 17 columns), so one row group per shard made a
#: commit's memory grow with the shard count (+30 MB from 100 to 1,000 shards). Larger groups cost
#: memory while they are encoded; 4 MiB (~6,000 manifest rows) measured best of 0-16 MiB.
ROW_GROUP_BYTES = 4 * 2**20
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")


class VersionNotFound(LookupError):
    """The requested ``name@version`` has no committed version under the root."""


def content_hash(payload: Any, length: int = 16) -> str:
    """A short sha256 of a JSON-serialisable payload (sorted keys): the version/checkpoint id rule."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid dataset name (lowercase letters, digits, ``-``, ``_``)."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"dataset name {name!r}: use lowercase letters, digits, '-' and '_'")
    return name


def shard_file_name(name: str, index: int) -> str:
    """The file name of shard ``index`` of dataset ``name``."""
    return f"{name}-{index:06d}.tar"


def shard_manifest_name(shard_file: str) -> str:
    """The file name of a shard's own manifest rows, next to it: ``x-000000.tar`` → ``x-000000.parquet``."""
    return shard_file.removesuffix(".tar") + ".parquet"


@dataclass(frozen=True)
class Version:
    """A committed dataset version: where it is and what its ``version.json`` says."""

    store: DatasetStore
    name: str
    version: str
    info: dict[str, Any]

    @property
    def path(self) -> str:
        """The version's directory as a URL (a plain path on the local file system)."""
        return self.store.url(self.store.version_dir(self.name, self.version))

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def shard_names(self) -> list[str]:
        """Shard file names in order."""
        return [shard["file"] for shard in self.info["shards"]]

    @property
    def shard_urls(self) -> list[str]:
        """Full shard URLs in order, for stock ``webdataset.WebDataset``."""
        return [f"{self.path}/shards/{file}" for file in self.shard_names]

    @property
    def brace_url(self) -> str:
        """One brace-expanded URL covering every shard (what a trainer passes to ``WebDataset``)."""
        count = len(self.info["shards"])
        if count == 1:
            return self.shard_urls[0]
        return f"{self.path}/shards/{self.name}-{{{0:06d}..{count - 1:06d}}}.tar"

    @property
    def index_url(self) -> str:
        """URL of the wids ``index.json``."""
        return f"{self.path}/{INDEX_FILE}"

    @property
    def num_samples(self) -> int:
        """Samples in the version."""
        return int(self.info["samples"])

    def manifest(self, shard: str | None = None) -> pa.Table:
        """The manifest: one row per sample (only those of shard file ``shard`` if given: read from the
        shard's own manifest file where the version has them)."""
        vdir = self.store.version_dir(self.name, self.version)
        if shard is not None:
            own = f"{vdir}/shards/{shard_manifest_name(shard)}"
            if self.store.fs.exists(own):
                return self.store.read_table(own)
        filters = [("shard", "==", shard)] if shard is not None else None
        return self.store.read_table(f"{vdir}/{MANIFEST_FILE}", filters=filters)

    @property
    def manifest_url(self) -> str:
        """URL of ``manifest.parquet`` (one row per sample; pandas, duckdb and pyarrow read it)."""
        return f"{self.path}/{MANIFEST_FILE}"

    def quarantine(self) -> pa.Table:
        """Frames refused at build time, with the file and the reason."""
        return self.store.read_table(f"{self.store.version_dir(self.name, self.version)}/{QUARANTINE_FILE}")


class DatasetStore:
    """Dataset versions under one fsspec root URL (a local folder by default)."""

    def __init__(self, root: str) -> None:
        self.root_url = root.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.root_url)
        self.root = self.root.rstrip("/")

    @cached_property
    def protocol(self) -> str:
        proto = self.fs.protocol
        return proto[0] if isinstance(proto, tuple | list) else proto

    def url(self, path: str) -> str:
        """A path in this store's file system as a URL readers understand."""
        if self.protocol in ("file", "local"):
            return path
        return f"{self.protocol}://{path}"

    def version_dir(self, name: str, version: str) -> str:
        """Directory (file-system path) of a version."""
        return f"{self.root}/datasets/{check_name(name)}/{version}"

    def shard_path(self, name: str, version: str, index: int) -> str:
        """Path of shard ``index`` of a version."""
        return f"{self.version_dir(name, version)}/shards/{shard_file_name(name, index)}"

    def part_path(self, name: str, version: str, index: int) -> str:
        """Path of the part record a finished shard leaves before the version is committed."""
        return f"{self.version_dir(name, version)}/{PARTS_DIR}/{index:06d}.json"

    def staging_dir(self, name: str, fingerprint: str) -> str:
        """Where a version whose id is not known yet is built (keyed by its inputs' listing fingerprint)."""
        return f"{self.root}/datasets/{check_name(name)}/{STAGING_DIR}/{fingerprint}"

    def listing_record_path(self, name: str, fingerprint: str) -> str:
        """The record naming the version a listing fingerprint was committed as."""
        return f"{self.root}/datasets/{check_name(name)}/{LISTINGS_DIR}/{fingerprint}.json"

    def exists(self, name: str, version: str) -> bool:
        """Whether ``name@version`` is committed."""
        return self.fs.exists(f"{self.version_dir(name, version)}/{VERSION_FILE}")

    def read_json(self, path: str) -> Any:
        with self.fs.open(path, "rb") as handle:
            return json.loads(handle.read())

    def write_json(self, path: str, payload: Any) -> None:
        """Write JSON atomically (sorted keys)."""
        write_atomic(self.fs, path, json.dumps(payload, sort_keys=True, indent=1).encode())

    def read_table(self, path: str, filters: list[tuple[str, str, Any]] | None = None) -> pa.Table:
        """A parquet table; ``filters`` (pyarrow's DNF) select rows without converting the rest."""
        with self.fs.open(path, "rb") as handle:
            return pq.read_table(handle, filters=filters)

    def write_table(self, path: str, table: pa.Table) -> None:
        """Write a parquet table atomically."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_atomic(self.fs, path, sink.getvalue().to_pybytes())

    def names(self) -> list[str]:
        """Dataset names that have at least one directory under the root."""
        base = f"{self.root}/datasets"
        if not self.fs.exists(base):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False))

    def write_table_streaming(
        self, path: str, schema: pa.Schema, tables: Iterable[pa.Table], row_group_bytes: int = ROW_GROUP_BYTES
    ) -> int:
        """Write ``tables`` (same ``schema``, in order) as one parquet file, atomically; returns the row
        count. Consecutive tables are gathered into row groups of about ``row_group_bytes`` (Arrow
        bytes), so at most that much of them is held at a time and the file's footer grows with the
        data's size, not with the number of tables."""
        rows = 0
        group: list[pa.Table] = []
        group_bytes = 0
        with atomic_open(self.fs, path) as handle, pq.ParquetWriter(handle, schema) as writer:
            for table in tables:
                if table.num_rows:
                    group.append(table.cast(schema))
                    group_bytes += table.nbytes
                    rows += table.num_rows
                if group and group_bytes >= row_group_bytes:
                    writer.write_table(pa.concat_tables(group))
                    group, group_bytes = [], 0
            if group:
                writer.write_table(pa.concat_tables(group))
        return rows

    def list_versions(self, name: str | None = None) -> list[Version]:
        """Committed versions (of ``name`` or of every dataset), oldest first."""
        versions = []
        for dataset in [name] if name else self.names():
            base = f"{self.root}/datasets/{dataset}"
            if not self.fs.exists(base):
                continue
            for entry in self.fs.ls(base, detail=False):
                version = entry.rstrip("/").rsplit("/", 1)[-1]
                if version != "aliases" and not version.startswith("_") and self.exists(dataset, version):
                    info = self.read_json(f"{self.version_dir(dataset, version)}/{VERSION_FILE}")
                    versions.append(Version(self, dataset, version, info))
        return sorted(versions, key=lambda v: (v.name, v.info.get("created_at", 0), v.version))

    def open(self, ref: str) -> Version:
        """Resolve ``name@version``, ``name@latest``, ``name@ALIAS`` or ``name`` (= latest)."""
        name, _, version = ref.partition("@")
        check_name(name)
        version = version or "latest"
        if version == "latest":
            versions = self.list_versions(name)
            if not versions:
                raise VersionNotFound(f"{ref}: no committed version of {name!r} under {self.root_url}")
            return versions[-1]
        alias_path = f"{self.root}/datasets/{check_name(name)}/aliases/{version}.json"
        if not self.exists(name, version) and self.fs.exists(alias_path):
            version = self.read_json(alias_path)["version"]
        if not self.exists(name, version):
            raise VersionNotFound(f"{ref}: no committed version under {self.root_url}")
        info = self.read_json(f"{self.version_dir(name, version)}/{VERSION_FILE}")
        return Version(self, name, version, info)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``name@alias`` (e.g. ``production``) at a committed version, atomically."""
        if not NAME_PATTERN.fullmatch(alias) or alias == "latest":
            raise ValueError(f"alias {alias!r}: use lowercase letters, digits, '-', '_' (not 'latest')")
        if not self.exists(name, version):
            raise VersionNotFound(f"{name}@{version}: cannot alias an uncommitted version")
        path = f"{self.root}/datasets/{name}/aliases/{alias}.json"
        self.write_json(path, {"version": version, "set_at": time.time()})


def default_root() -> str:
    """The storage root: ``$SIM2REAL_ROOT`` or ``./data``; local paths are made absolute."""
    import os

    root = os.environ.get("SIM2REAL_ROOT", "./data")
    return root if "://" in root else os.path.abspath(root)
