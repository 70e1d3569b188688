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


def encode_shard(samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> tuple[bytes, int]:
    """Tar bytes of ``(key, members)`` samples (in the given order) and the sample count."""
    buffer = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            check_key(key)
            for member in sorted(members):
                data = members[member]
                tar.addfile(tar_member_info(f"{key}.{member}", len(data)), io.BytesIO(data))
            count += 1
    return buffer.getvalue(), count


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
    data, count = encode_shard(samples)
    write_atomic(fs, path, data)
    return ShardInfo(url=path, nsamples=count, filesize=len(data), md5=hashlib.md5(data).hexdigest())


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
