"""Deterministic WebDataset tar shards, written atomically through fsspec.

A shard is a plain POSIX tar where each sample's members are consecutive files named
``{key}.{member}``. The bytes depend only on the samples: fixed mtime, owner and mode, members in
sorted order. A shard is written to ``{name}.tmp-{nonce}`` and renamed into place, so a reader never
sees a partial shard.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import fsspec

from sim2real.storage.schema import check_key

#: Fixed mtime of every tar member (2020-01-01T00:00:00Z) so that shard bytes are reproducible.
FIXED_MTIME = 1577836800


@dataclass(frozen=True)
class ShardInfo:
    """What the index needs about a finished shard."""

    url: str
    nsamples: int
    filesize: int
    md5: str


def tar_member_info(name: str, size: int) -> tarfile.TarInfo:
    """A TarInfo with the fixed metadata every member gets."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardBuilder:
    """A shard built in memory one sample at a time (the bytes :func:`encode_shard` gives for the same
    samples), its md5 taken as it grows; :meth:`write` puts it in place atomically.

    Lets a writer add each sample as soon as it is ready instead of tarring and hashing the whole shard
    at the end, when the pipeline in front of it has nothing left to overlap with. Headers are built by
    :func:`ustar_header` (the bytes ``tarfile`` writes, ~10x cheaper: 0.30 → 0.10 ms per 6-member
    translated sample).
    """

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._md5 = hashlib.md5()
        self.count = 0

    @classmethod
    def of(cls, samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> ShardBuilder:
        """A builder holding ``samples``, in the given order."""
        builder = cls()
        for key, members in samples:
            builder.add(key, members)
        return builder

    def add(self, key: str, members: Mapping[str, bytes]) -> None:
        """Append one sample (members in sorted order)."""
        for block in sample_blocks(key, members):
            self._write(block)
        self.count += 1

    def finish(self) -> bytes:
        """Close the archive (two zero blocks, padded to tar's record size); its bytes."""
        for block in end_blocks(self._buffer.tell()):
            self._write(block)
        return self._buffer.getvalue()

    def write(self, fs: fsspec.AbstractFileSystem, path: str) -> ShardInfo:
        """Close the archive and write it atomically to ``path``."""
        data = self.finish()
        write_atomic(fs, path, data)
        return ShardInfo(url=path, nsamples=self.count, filesize=len(data), md5=self._md5.hexdigest())

    def _write(self, data: bytes) -> None:
        self._md5.update(data)
        self._buffer.write(data)


class _HashingWriter:
    """A write-only file object that md5s and counts what passes through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.md5 = hashlib.md5()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        self.size += len(data)
        self.handle.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size


_HEADER_TEMPLATE = bytes(tar_member_info("", 0).tobuf(tarfile.USTAR_FORMAT))
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
# The checksum of every header field but the name and size (the name is zeros in the template), with
# the checksum field as spaces, as it is taken: a header's checksum is this plus its name and size bytes.
_TEMPLATE_SUM = sum(_HEADER_TEMPLATE[100:124]) + sum(_HEADER_TEMPLATE[136:148]) + 8 * ord(" ")
_TEMPLATE_SUM += sum(_HEADER_TEMPLATE[156:])


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte header :func:`tar_member_info` gives (USTAR), built directly: ~10x faster than
    ``TarInfo.tobuf``. Raises ``ValueError`` for a name over 100 bytes (those need the prefix field)."""
    encoded = name.encode()
    if len(encoded) > 100 or size >= 8**11:
        raise ValueError(f"{name!r}: name over 100 bytes or size over 8 GiB")
    size_field = b"%011o\0" % size
    header = bytearray(_HEADER_TEMPLATE)
    header[0 : len(encoded)] = encoded
    header[124:136] = size_field
    header[148:156] = b"%06o\0 " % (_TEMPLATE_SUM + sum(encoded) + sum(size_field))
    return bytes(header)


def sample_blocks(key: str, members: Mapping[str, bytes]) -> Iterator[bytes]:
    """The tar bytes of one sample, in pieces: per member (sorted by name) its USTAR header, its data and
    the zero padding to the next 512-byte block. Raises ``SchemaError`` for a bad key."""
    check_key(key)
    for member in sorted(members):
        data = members[member]
        name = f"{key}.{member}"
        try:
            yield ustar_header(name, len(data))
        except ValueError:
            yield bytes(tar_member_info(name, len(data)).tobuf(tarfile.USTAR_FORMAT))
        yield data
        padding = -len(data) % tarfile.BLOCKSIZE
        if padding:
            yield _ZERO_BLOCK[:padding]


def end_blocks(size: int) -> Iterator[bytes]:
    """What closes a tar of ``size`` bytes so far, as ``tarfile`` closes it: two zero blocks, then zeros
    up to a whole record (20 blocks)."""
    yield _ZERO_BLOCK * 2
    remainder = (size + 2 * tarfile.BLOCKSIZE) % tarfile.RECORDSIZE
    if remainder:
        yield bytes(tarfile.RECORDSIZE - remainder)


class ShardWriter:
    """A shard streamed to a temporary file sample by sample (flat memory, any shard size), its md5
    taken as it grows; :meth:`close` renames it into place. The bytes equal :func:`encode_shard`'s.

    Use as a context manager: an exception inside the block removes the temporary file.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.path = path
        self._target = atomic_open(fs, path)
        self._sink = _HashingWriter(self._target.__enter__())
        self.count = 0

    def add(self, key: str, members: Mapping[str, bytes]) -> None:
        """Append one sample (members in sorted order)."""
        for block in sample_blocks(key, members):
            self._sink.write(block)
        self.count += 1

    def close(self) -> ShardInfo:
        """Finish the archive (two zero blocks, padded to tar's record size) and move it into place."""
        for block in end_blocks(self._sink.size):
            self._sink.write(block)
        self._target.__exit__(None, None, None)
        return ShardInfo(
            url=self.path, nsamples=self.count, filesize=self._sink.size, md5=self._sink.md5.hexdigest()
        )

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: object, value: BaseException | None, traceback: object) -> None:
        if value is not None:
            self._target.__exit__(type(value), value, None)


def encode_shard(samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> tuple[bytes, int]:
    """Tar bytes of ``(key, members)`` samples (in the given order) and the sample count."""
    builder = ShardBuilder.of(samples)
    return builder.finish(), builder.count


@contextmanager
def atomic_open(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[IO[bytes]]:
    """A binary file to write ``path`` through: a temporary name, renamed to ``path`` when the block
    ends without an exception (and removed when it raises)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    fs.makedirs(fs._parent(path), exist_ok=True)
    try:
        with fs.open(tmp, "wb") as handle:
            yield handle
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name and a rename."""
    with atomic_open(fs, path) as handle:
        handle.write(data)


def move_folder(fs: fsspec.AbstractFileSystem, source: str, target: str, last: str) -> None:
    """Move the folder ``source`` to ``target`` (which must not exist) so that its file ``last`` (a name
    directly in ``source``, the folder's completion marker) arrives only once everything else has.

    A local rename does that at once. On an object store (S3, GCS) a "rename" is a copy of every
    object, then a delete: a kill part-way leaves some objects under both names, so the marker is
    copied last and a reader or a rerun that finds it under ``target`` finds everything. The cost is
    a server-side copy of every byte under ``source``.
    """
    if "file" in fs.protocol or "local" in fs.protocol:
        fs.mv(source, target, recursive=True)
        return
    source, target = source.rstrip("/"), target.rstrip("/")
    marker = f"{source}/{last}"
    for path in fs.find(source):
        if path.rstrip("/") != marker:
            fs.copy(path, target + path[len(source) :])
    fs.copy(marker, f"{target}/{last}")
    fs.rm(source, recursive=True)


def write_shard(
    fs: fsspec.AbstractFileSystem, path: str, samples: Iterable[tuple[str, Mapping[str, bytes]]]
) -> ShardInfo:
    """Encode ``samples`` into one tar and write it atomically to ``path``."""
    return ShardBuilder.of(samples).write(fs, path)


def read_shard(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, members)`` from a shard written by :func:`write_shard` (raw bytes, no decoding)."""
    with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        key: str | None = None
        members: dict[str, bytes] = {}
        for info in tar:
            if not info.isfile():
                continue
            sample_key, _, member = info.name.partition(".")
            extracted = tar.extractfile(info)
            data = extracted.read() if extracted else b""
            if key is not None and sample_key != key:
                yield key, members
                members = {}
            key = sample_key
            members[member] = data
        if key is not None:
            yield key, members
