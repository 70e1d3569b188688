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
from dataclasses import dataclass

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
    at the end, when the pipeline in front of it has nothing left to overlap with.
    """

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=tarfile.USTAR_FORMAT)
        self._md5 = hashlib.md5()
        self._hashed = 0
        self.count = 0

    @classmethod
    def of(cls, samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> ShardBuilder:
        """A builder holding ``samples``, in the given order."""
        builder = cls()
        for key, members in samples:
            builder.add(key, members)
        return builder

    def add(self, key: str, members: Mapping[str, bytes]) -> None:
        check_key(key)
        for member in sorted(members):
            data = members[member]
            self._tar.addfile(tar_member_info(f"{key}.{member}", len(data)), io.BytesIO(data))
        self.count += 1
        self._hash_new_bytes()

    def finish(self) -> bytes:
        """Close the archive; its bytes."""
        self._tar.close()
        self._hash_new_bytes()
        return self._buffer.getvalue()

    def write(self, fs: fsspec.AbstractFileSystem, path: str) -> ShardInfo:
        """Close the archive and write it atomically to ``path``."""
        data = self.finish()
        write_atomic(fs, path, data)
        return ShardInfo(url=path, nsamples=self.count, filesize=len(data), md5=self._md5.hexdigest())

    def _hash_new_bytes(self) -> None:
        view = self._buffer.getbuffer()
        try:
            self._md5.update(view[self._hashed :])
            self._hashed = len(view)
        finally:
            view.release()  # an exported buffer would block the BytesIO from growing


def encode_shard(samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> tuple[bytes, int]:
    """Tar bytes of ``(key, members)`` samples (in the given order) and the sample count."""
    builder = ShardBuilder.of(samples)
    return builder.finish(), builder.count


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name and a rename."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    fs.makedirs(fs._parent(path), exist_ok=True)
    with fs.open(tmp, "wb") as handle:
        handle.write(data)
    try:
        fs.mv(tmp, path)
    except Exception:
        fs.rm(tmp)
        raise


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
