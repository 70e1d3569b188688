"""Deterministic tar shards: bytes, round trip, atomic writes."""

from __future__ import annotations

import tarfile

import fsspec
import pytest
import webdataset as wds

from sim2real.storage.schema import SchemaError
from sim2real.storage.shards import (
    FIXED_MTIME,
    encode_shard,
    read_shard,
    tar_member_info,
    ustar_header,
    write_shard,
)

SAMPLES = [
    ("a-0", {"seg.png": b"\x01\x02", "rgb.png": b"img-a", "meta.json": b"{}"}),
    ("b-1", {"meta.json": b'{"x": 1}', "rgb.jpg": b"img-b", "seg.png": b"\x03"}),
]


@pytest.mark.parametrize(
    "name", ["", "a.rgb.png", "sim-s1-002048.boxes.json", "ü-clé_日本.seg.png", "x" * 100, "~!@#$%^&().json"]
)
@pytest.mark.parametrize("size", [0, 1, 511, 512, 934, 47540, 8**11 - 1])
def test_our_header_is_the_one_tarfile_writes(name: str, size: int):
    assert ustar_header(name, size) == tar_member_info(name, size).tobuf(tarfile.USTAR_FORMAT)


def test_encoding_is_deterministic_and_members_sorted():
    first, count = encode_shard(SAMPLES)
    second, _ = encode_shard([(k, dict(reversed(list(m.items())))) for k, m in SAMPLES])
    assert count == 2
    assert first == second
    with tarfile.open(fileobj=__import__("io").BytesIO(first)) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == ["a-0.meta.json", "a-0.rgb.png", "a-0.seg.png",
                                       "b-1.meta.json", "b-1.rgb.jpg", "b-1.seg.png"]
    assert {i.mtime for i in infos} == {FIXED_MTIME}
    assert {(i.uid, i.gid, i.uname, i.gname) for i in infos} == {(0, 0, "", "")}


def test_round_trip_with_our_reader_and_stock_webdataset(tmp_path):
    fs = fsspec.filesystem("file")
    path = str(tmp_path / "x" / "s-000000.tar")
    info = write_shard(fs, path, SAMPLES)
    assert info.nsamples == 2 and info.filesize == (tmp_path / "x" / "s-000000.tar").stat().st_size
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["s-000000.tar"]  # no temporary left behind
    assert list(read_shard(fs, path)) == [(k, m) for k, m in SAMPLES]
    stock = list(wds.WebDataset(path, shardshuffle=False))
    assert [s["__key__"] for s in stock] == ["a-0", "b-1"]
    assert stock[0]["seg.png"] == b"\x01\x02" and stock[1]["rgb.jpg"] == b"img-b"


@pytest.mark.parametrize("key", ["a.b", "a/b", "", "ü"])
def test_bad_keys_are_refused(key):
    with pytest.raises(SchemaError, match="key"):
        encode_shard([(key, {"seg.png": b""})])
