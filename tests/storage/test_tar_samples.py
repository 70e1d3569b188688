"""shard_samples yields what stock webdataset yields, for our shards and for tars we did not write."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import fsspec
import pytest
import webdataset as wds

from sim2real.storage import tar_samples
from sim2real.storage.shards import write_shard
from sim2real.storage.tar_samples import shard_samples

SAMPLES = [
    (f"frame-{i:03d}", {"rgb.png": bytes([i]) * (100 + 300 * i), "seg.png": b"s" * i, "boxes.json": b"[]"})
    for i in range(5)
]


def stock(path: Path) -> list[dict[str, Any]] | type[BaseException]:
    try:
        return list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False))
    except Exception as exc:
        return type(exc)


def ours(path: Path) -> list[dict[str, Any]] | type[BaseException]:
    try:
        return list(shard_samples(str(path)))
    except Exception as exc:
        return type(exc)


def comparable(result: list[dict[str, Any]] | type[BaseException]) -> Any:
    if isinstance(result, type):
        return result
    return [{k: v for k, v in s.items() if k != "__local_path__"} for s in result]


def tar_of(
    path: Path, members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT, **kinds: Any
) -> Path:
    """A tar of ``(name, data)`` files; ``kinds[name] = tarfile type`` makes that entry a dir/link."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if name in kinds:
                info.type, info.size = kinds[name], 0
                info.linkname = "x" if kinds[name] == tarfile.SYMTYPE else ""
                tar.addfile(info)
            else:
                tar.addfile(info, io.BytesIO(data))
    return path


def test_our_shards_are_read_without_webdataset(tmp_path, monkeypatch):
    path = tmp_path / "ours.tar"
    write_shard(fsspec.filesystem("file"), str(path), SAMPLES)
    expected = comparable(stock(path))
    monkeypatch.setattr(tar_samples.wds, "WebDataset", None)  # the fast path must not need it
    got = list(shard_samples(str(path)))
    assert comparable(got) == expected and len(got) == len(SAMPLES)
    assert [s["__key__"] for s in got] == [key for key, _ in SAMPLES]
    assert got[2]["rgb.png"] == SAMPLES[2][1]["rgb.png"] and got[0]["__url__"] == str(path)


def members(n: int = 3) -> list[tuple[str, bytes]]:
    return [(f"k{i}.{m}", f"{m}{i}".encode() * (i + 1)) for i in range(n) for m in ("rgb.png", "seg.png")]


CASES = {
    "plain": lambda p: tar_of(p, members()),
    "upper-case member": lambda p: tar_of(p, [*members(2), ("k2.RGB.PNG", b"x"), ("k2.seg.png", b"y")]),
    "gnu long name": lambda p: tar_of(p, [*members(2), ("k" * 120 + ".rgb.png", b"z")], tarfile.GNU_FORMAT),
    "pax header": lambda p: tar_of(p, [*members(2), ("k9." + "x" * 130, b"z")], tarfile.PAX_FORMAT),
    "directory": lambda p: tar_of(p, [("dir", b""), *members(2)], dir=tarfile.DIRTYPE),
    "symlink": lambda p: tar_of(
        p, [*members(1), ("k1.rgb.png", b""), *members(3)[2:]], **{"k1.rgb.png": tarfile.SYMTYPE}
    ),
    "no dot": lambda p: tar_of(p, [*members(1), ("README", b"hi"), *members(3)[2:]]),
    "meta file": lambda p: tar_of(p, [*members(1), ("__index__.json", b"{}"), *members(3)[2:]]),
    "slash in name": lambda p: tar_of(p, [*members(1), ("a/k1.rgb.png", b"q"), *members(3)[2:]]),
    "leading dot": lambda p: tar_of(p, [*members(1), (".k1.rgb.png", b"q")]),
    "duplicate member": lambda p: tar_of(p, [*members(2), ("k1.rgb.png", b"again")]),
    "key revisited": lambda p: tar_of(p, [*members(3), ("k0.depth.png", b"late")]),
    "empty archive": lambda p: tar_of(p, []),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_samples_as_stock_webdataset(tmp_path, case):
    path = CASES[case](tmp_path / f"{case}.tar")
    assert comparable(ours(path)) == comparable(stock(path))


@pytest.mark.parametrize("damage", ["truncated in data", "truncated in header", "bad checksum", "garbage"])
def test_damaged_tars_read_or_fail_as_webdataset_does(tmp_path, damage):
    good = tar_of(tmp_path / "good.tar", members(4)).read_bytes()
    data = {
        "truncated in data": good[: 512 * 5 + 3],
        "truncated in header": good[: 512 * 6 + 100],
        "bad checksum": good[: 512 * 4] + b"X" + good[512 * 4 + 1 :],  # the 3rd member's name
        "garbage": b"not a tar at all" * 64,
    }[damage]
    path = tmp_path / "damaged.tar"
    path.write_bytes(data)
    assert comparable(ours(path)) == comparable(stock(path))


def test_a_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(shard_samples(str(tmp_path / "absent.tar")))
