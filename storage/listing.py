"""Listings: an export's frames streamed into sorted, per-shard listing files (never one list in memory).

An ingest lists its inputs once, cheaply (names, sizes, mtimes: no file is opened), in key order:

* :func:`external_sorted` sorts any number of text lines in bounded memory (sorted runs spilled to
  local temporary files, then a k-way merge), so an importer can stream a folder of 10⁷ files in key
  order (``storage.sources.folder``);
* :func:`sorted_keys` streams the keys of committed versions in key order (their manifests' ``key``
  column, batch by batch) so :func:`write_listing` can leave them out by a merge join instead of a
  Python set of every earlier key;
* :func:`entries_fingerprint` recognises an unchanged export before anything is written: an
  order-independent hash of its files' names, sizes, mtimes and modes (no sort, no spill, flat memory);
  :func:`frames_fingerprint` does the same for importers that list frames in memory;
* :func:`write_listing` cuts the frames into shards (bounded by samples and input bytes) and writes
  one listing file per shard (``{index:06d}.jsonl.gz``: one JSON object per frame, paths relative to
  the export, gzip level 1: ~40 bytes a frame, so reading listings adds ~1 % to the bytes a shard task
  reads).
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice, takewhile
from typing import IO, Any

import fsspec
import pyarrow.parquet as pq

from sim2real.storage.schema import KEY_PATTERN
from sim2real.storage.sources.base import SourceFormat, SourceFrame

#: Lines held in memory per sorted run of :func:`external_sorted` (~100 bytes each).
SORT_RUN_LINES = 200_000
Stat = Callable[[str], tuple[int, int]]


def external_sorted(lines: Iterable[str], run_lines: int = SORT_RUN_LINES) -> Iterator[str]:
    """``lines`` (without newlines) in sorted order, holding at most ``run_lines`` of them in memory.

    Runs that do not fit are sorted and spilled to a local temporary directory, removed when the
    iterator is exhausted or closed.
    """
    iterator = iter(lines)
    first = sorted(islice(iterator, run_lines))
    if len(first) < run_lines:
        yield from first
        return
    with tempfile.TemporaryDirectory(prefix="sim2real-sort-") as spool:
        paths = [_spill(spool, 0, first)]
        del first
        while run := sorted(islice(iterator, run_lines)):
            paths.append(_spill(spool, len(paths), run))
        handles = [gzip.open(path, "rt", encoding="utf-8") for path in paths]  # noqa: SIM115 - closed below
        try:
            for line in heapq.merge(*handles):
                yield line[:-1]
        finally:
            for handle in handles:
                handle.close()


def _spill(spool: str, index: int, run: list[str]) -> str:
    # gzip level 1: sorted neighbours share long prefixes, so a run shrinks ~5-10x and so do the bytes
    # read back by the merge (at 32x64 frames, uncompressed runs were ~15 % of the export's bytes).
    path = os.path.join(spool, f"run-{index:06d}.txt.gz")
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as handle:
        handle.writelines(line + "\n" for line in run)
    return path


def sorted_keys(manifest_urls: Iterable[str], batch_rows: int = 65_536) -> Iterator[str]:
    """The ``key`` column of the given manifests merged into one sorted stream (duplicates kept).

    Each manifest is read batch by batch; one that is not sorted by key (older writers) is sorted
    with :func:`external_sorted` first. Memory is a few batches whatever the number of keys.
    """
    streams = [_manifest_keys(url, batch_rows) for url in manifest_urls]
    return heapq.merge(*streams)


def _manifest_keys(url: str, batch_rows: int) -> Iterator[str]:
    if _is_sorted(url, batch_rows):
        yield from _column(url, batch_rows)
    else:
        yield from external_sorted(_column(url, batch_rows))


def _column(url: str, batch_rows: int) -> Iterator[str]:
    with fsspec.open(url, "rb") as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=["key"]):
            yield from batch.column(0).to_pylist()


def _is_sorted(url: str, batch_rows: int) -> bool:
    previous = ""
    for key in _column(url, batch_rows):
        if key < previous:
            return False
        previous = key
    return True


def without_keys(
    frames: Iterable[SourceFrame], excluded: Callable[[], Iterator[str]]
) -> Iterator[SourceFrame]:
    """``frames`` less those whose key is in the sorted stream ``excluded()``: a merge join.

    Frames are expected in key order; a frame whose key breaks the order (an importer renamed a
    colliding key) is looked up by a fresh scan of ``excluded()`` up to its key (rare). Keys that
    break the key rule cannot be in a committed version; they pass through (and are quarantined at
    load) without moving the join.
    """
    stream = excluded()
    pending = next(stream, None)
    previous = ""
    for frame in frames:
        key = frame.key
        if not KEY_PATTERN.fullmatch(key):
            yield frame
            continue
        if key < previous:
            if not any(k == key for k in takewhile(lambda k: k <= key, excluded())):  # noqa: B023
                yield frame
            continue
        previous = key
        while pending is not None and pending < key:
            pending = next(stream, None)
        if pending != key:
            yield frame


def entries_fingerprint(root: str, entries: Iterable[str]) -> tuple[str, int]:
    """An order-independent fingerprint of the files ``entries`` (paths relative to the local folder
    ``root``, in any order) by their names, sizes, mtimes and modes: (sha256 hex, number of entries).

    Each entry is ``stat``-ed, never opened; its line is hashed (blake2b) and the hashes are summed, so
    the export needs no sorting and nothing is written or held but the running sum: memory is flat.
    An entry that vanished or is a dangling link counts as such.
    """
    prefix = root.rstrip("/") + "/"
    total = count = 0
    for entry in entries:
        try:
            info = os.stat(prefix + entry)
        except OSError:
            try:
                info = os.lstat(prefix + entry)
            except OSError:
                info = None
        stats = f"{info.st_size}\0{info.st_mtime_ns}\0{info.st_mode}" if info is not None else "-"
        line = f"{entry}\0{stats}".encode("utf-8", "surrogateescape")  # a file name has no NUL
        total += int.from_bytes(hashlib.blake2b(line, digest_size=32).digest(), "big")
        count += 1
    return hashlib.sha256(f"{count}:{total % 2**256:064x}".encode()).hexdigest(), count


def frames_fingerprint(frames: Iterable[SourceFrame], stat: Stat, base: str = "") -> str:
    """The fingerprint of a listing that is not written: sha256 of every frame's listing line (as
    :func:`write_listing` writes it) and its files' (size, mtime), in the given order."""
    prefix = base.rstrip("/") + "/" if base else ""
    digest = hashlib.sha256()
    for frame in frames:
        line, stats = _listing_line(frame, stat, prefix)
        digest.update(line)
        digest.update(json.dumps(sorted(stats.items()), separators=(",", ":")).encode())
    return digest.hexdigest()


def _listing_line(frame: SourceFrame, stat: Stat, prefix: str) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """A frame's listing line (paths under ``prefix`` made relative) and its files' (size, mtime)."""
    stats = {role: stat(path) for role, path in frame.files.items()}
    files_rel = {
        role: path[len(prefix) :] if prefix and path.startswith(prefix) else path
        for role, path in frame.files.items()
    }
    record: dict[str, Any] = {"key": frame.key, "files": files_rel}
    if frame.extra:
        record["extra"] = frame.extra
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n", stats


def frames_in_key_order(
    importer: SourceFormat, source_dir: str, options: Mapping[str, Any]
) -> Iterator[SourceFrame]:
    """The importer's frames in key order: streamed (``iter_frames``) or sorted in memory."""
    streaming = getattr(importer, "iter_frames", None)
    if streaming is not None:
        yield from streaming(source_dir, options)
    else:  # a list-returning importer already holds its frames: sort them in memory
        yield from sorted(importer.discover(source_dir, options), key=lambda f: f.key)


def export_fingerprint(importer: SourceFormat, source_dir: str, options: Mapping[str, Any]) -> str:
    """What recognises an unchanged export before anything is written: :func:`entries_fingerprint` of
    the files the importer lists (``export_entries``), else :func:`frames_fingerprint` of its frames."""
    entries = getattr(importer, "export_entries", None)
    if entries is not None:
        return "entries:" + entries_fingerprint(source_dir, entries(source_dir, options))[0]
    # a list-returning importer holds its frames in memory anyway: hash their listing lines
    frames = frames_in_key_order(importer, source_dir, options)
    return "frames:" + frames_fingerprint(frames, local_stat(), source_dir)


@dataclass(frozen=True)
class ListingSummary:
    """What a listing pass found: small enough for a task result."""

    fingerprint: str  # sha256 of every listed frame's key, files, sizes, mtimes and extra records
    num_frames: int
    num_shards: int


class _ShardFiles:
    """Writes one listing file per shard into a folder of a file system, one frame at a time."""

    def __init__(self, fs: fsspec.AbstractFileSystem, folder: str) -> None:
        self.fs, self.folder = fs, folder
        self.count = 0
        self._raw: IO[bytes] | None = None
        self._handle: gzip.GzipFile | None = None
        fs.makedirs(folder, exist_ok=True)

    def start(self) -> None:
        self.close()
        self._raw = self.fs.open(listing_file(self.folder, self.count), "wb")
        self._handle = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=1, mtime=0)
        self.count += 1

    def write(self, line: bytes) -> None:
        assert self._handle is not None
        self._handle.write(line)

    def close(self) -> None:
        if self._handle is not None and self._raw is not None:
            self._handle.close()
            self._raw.close()
            self._handle = self._raw = None


def listing_file(folder: str, index: int) -> str:
    """The listing file of shard ``index`` in a listing folder."""
    return f"{folder}/{index:06d}.jsonl.gz"


def write_listing(
    frames: Iterable[SourceFrame],
    stat: Stat,
    fs: fsspec.AbstractFileSystem,
    folder: str,
    max_shard_samples: int,
    max_shard_bytes: int,
    base: str = "",
) -> ListingSummary:
    """Cut ``frames`` (in order) into shards and write one listing file per shard under ``folder``.

    ``stat(location)`` gives a file's (size in bytes, mtime in ns); a shard closes before a frame
    that would take it past ``max_shard_samples`` frames or ``max_shard_bytes`` input bytes. Paths
    under ``base`` (the export folder) are stored relative to it; :func:`read_listing` rejoins them.
    The fingerprint covers the relative names, so a moved export keeps it.
    """
    prefix = base.rstrip("/") + "/" if base else ""
    digest = hashlib.sha256()
    files = _ShardFiles(fs, folder)
    frames_total = shard_frames = shard_bytes = 0
    try:
        for frame in frames:
            line, stats = _listing_line(frame, stat, prefix)
            size = sum(s[0] for s in stats.values())
            full = shard_frames >= max_shard_samples or shard_bytes + size > max_shard_bytes
            if files.count == 0 or (shard_frames and full):
                files.start()
                shard_frames = shard_bytes = 0
            files.write(line)
            digest.update(line)
            digest.update(json.dumps(sorted(stats.items()), separators=(",", ":")).encode())
            frames_total += 1
            shard_frames += 1
            shard_bytes += size
    finally:
        files.close()
    return ListingSummary(digest.hexdigest(), frames_total, files.count if frames_total else 0)


def read_listing(fs: fsspec.AbstractFileSystem, path: str, base: str = "") -> Iterator[SourceFrame]:
    """The frames of one shard's listing file, in order (relative paths joined to ``base``)."""
    prefix = base.rstrip("/") + "/" if base else ""
    with fs.open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as handle:
        for line in handle:
            record = json.loads(line)
            files = {
                role: location if "://" in location or location.startswith("/") else prefix + location
                for role, location in record["files"].items()
            }
            yield SourceFrame(record["key"], files, record.get("extra", {}))


def local_stat(cache_size: int = 64) -> Stat:
    """A ``stat`` for :func:`write_listing`: local paths by ``os.stat``, URLs (``zip://…``) by fsspec.

    The last ``cache_size`` distinct locations are remembered (shared files such as ``classes.json``
    or a zip archive are listed with every frame).
    """
    cache: dict[str, tuple[int, int]] = {}

    def stat(location: str) -> tuple[int, int]:
        found = cache.pop(location, None)
        if found is not None:
            cache[location] = found  # most recently used last
            return found
        if "://" in location:
            fs, path = fsspec.core.url_to_fs(location)
            info = fs.info(path)
            found = (int(info.get("size") or 0), int(float(info.get("mtime") or 0) * 1e9))
        else:
            result = os.stat(location)
            found = (result.st_size, result.st_mtime_ns)
        if len(cache) >= cache_size:
            cache.pop(next(iter(cache)))
        cache[location] = found
        return found

    return stat
