"""Ingest without Prefect: one pass, content ids, kill -9 anywhere, increments that touch only new frames."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as pads
import pytest
import webdataset as wds
import wids

from sim2real.storage import ingest as ingest_lib
from sim2real.storage.listing import external_sorted, sorted_keys, without_keys
from sim2real.storage.sources import folder
from sim2real.storage.sources.base import SourceFrame
from sim2real.storage.sources.toysim import ToySimConfig, write_export
from sim2real.storage.version_commit import EmptyVersion
from sim2real.storage.versions import DatasetStore

CONFIG = ingest_lib.IngestConfig(max_shard_samples=4)


def make_export(path: Path, frames: int, start: int = 0) -> Path:
    write_export(path, ToySimConfig(style="sim", height=24, width=40, seed=5), frames, start=start)
    return path


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def test_external_sort_spills_runs_and_merges():
    lines = [f"{(i * 7919) % 1000:04d}" for i in range(1000)]
    assert list(external_sorted(lines, run_lines=64)) == sorted(lines)
    assert list(external_sorted(iter([]), run_lines=4)) == []


def test_merge_join_leaves_out_excluded_keys_and_passes_bad_keys():
    frames = [SourceFrame(k, {}) for k in ["a", "b", "b c", "c", "d", "a-renamed", "a-0", "e"]]
    kept = [f.key for f in without_keys(iter(frames), lambda: iter(["a", "a-renamed", "c", "zz"]))]
    assert kept == ["b", "b c", "d", "a-0", "e"]  # out-of-order keys looked up by a fresh scan


def test_same_export_twice_gives_same_id_and_writes_nothing(tmp_path: Path, changes_under, monkeypatch):
    export = make_export(tmp_path / "export", 10)
    store = DatasetStore(str(tmp_path / "root"))
    first = ingest_lib.ingest_serially(store, str(export), "toy", CONFIG)
    before = files_of(tmp_path / "root")

    def no_listing(*args, **kwargs):
        raise AssertionError("a repeat must not list the export (no sort runs, no spool)")

    with monkeypatch.context() as patched, changes_under(tmp_path) as changes:
        patched.setattr(ingest_lib, "write_listing", no_listing)
        again = ingest_lib.ingest_serially(store, str(export), "toy", CONFIG)
    assert again.version == first.version and files_of(tmp_path / "root") == before
    assert changes == []  # not even a temporary file written and removed
    # touched, not changed: a new listing fingerprint, rebuilt, the same content id (the version kept)
    for path in (export / "rgb").iterdir():
        os.utime(path, ns=(1, 1))
    touched = ingest_lib.ingest_serially(store, str(export), "toy", CONFIG)
    assert touched.version == first.version and len(store.list_versions("toy")) == 1
    assert files_of(tmp_path / "root" / "datasets" / "toy" / first.version) == {
        k: v for k, v in before.items() if f"/{first.version}/" in k
    }
    # a copy elsewhere (other paths, other mtimes) gets the same id too
    copy = make_export(tmp_path / "copy", 10)
    other = DatasetStore(str(tmp_path / "other"))
    assert ingest_lib.ingest_serially(other, str(copy), "toy", CONFIG).version == first.version
    # changed content, changed id
    (export / "boxes" / sorted(os.listdir(export / "boxes"))[0]).write_text("[]")
    assert ingest_lib.ingest_serially(store, str(export), "toy", CONFIG).version != first.version


def test_every_version_reads_with_stock_tools(tmp_path: Path):
    export = make_export(tmp_path / "export", 11)
    (export / "rgb" / sorted(os.listdir(export / "rgb"))[3]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    version = ingest_lib.ingest_serially(DatasetStore(str(tmp_path / "root")), str(export), "toy", CONFIG)
    keys = sorted(p.stem for p in (export / "rgb").iterdir())
    good = keys[:3] + keys[4:]
    assert version.num_samples == 10 and version.info["quarantined"] == 1
    assert [s["__key__"] for s in wds.WebDataset(version.brace_url, shardshuffle=False)] == good
    dataset = wids.ShardListDataset(version.index_url)
    assert sorted(dataset[i]["__key__"] for i in range(len(dataset))) == good
    assert pd.read_parquet(version.manifest_url)["key"].tolist() == good
    query = f"select count(*), count(distinct key) from '{version.manifest_url}'"
    assert duckdb.sql(query).fetchall() == [(10, 10)]
    assert pads.dataset(version.manifest_url).to_table().num_rows == 10
    assert pd.read_parquet(f"{version.path}/quarantine.parquet")["key"].tolist() == [keys[3]]
    # one manifest per shard, next to it, with the same rows
    shard_rows = [
        pd.read_parquet(f"{version.path}/shards/{s.removesuffix('.tar')}.parquet")
        for s in version.shard_names
    ]
    assert (
        sum(len(r) for r in shard_rows) == 10 and version.manifest(shard=version.shard_names[1]).num_rows == 4
    )
    with open(version.index_url) as handle:
        assert [s["nsamples"] for s in json.load(handle)["shardlist"]] == [3, 4, 3]


def test_nightly_increment_opens_only_new_frames(tmp_path: Path, monkeypatch):
    export = make_export(tmp_path / "export", 12)
    store = DatasetStore(str(tmp_path / "root"))
    first = ingest_lib.ingest_serially(store, str(export), "toy", CONFIG)
    make_export(export, 3, start=12)  # three new frames land in the export
    opened: list[str] = []

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(folder, "open", counting_open, raising=False)
    new = ingest_lib.ingest_serially(store, str(export), "toy", CONFIG, exclude_refs=[first.ref])
    new_keys = sorted(
        set(p.stem for p in (export / "rgb").iterdir()) - set(first.manifest()["key"].to_pylist())
    )
    assert len(new_keys) == 3 and new.manifest()["key"].to_pylist() == new_keys
    frame_files = [p for p in opened if not p.endswith("classes.json")]
    assert frame_files and {Path(p).stem for p in frame_files} == set(new_keys)  # no old frame read
    assert len(frame_files) == len(set(frame_files))  # and each new file read once
    with pytest.raises(EmptyVersion, match="no samples"):  # nothing new: no empty version
        ingest_lib.ingest_serially(store, str(export), "toy", CONFIG, exclude_refs=[first.ref, new.ref])


def test_sorted_keys_merges_versions_in_key_order(tmp_path: Path):
    store = DatasetStore(str(tmp_path / "root"))
    a = ingest_lib.ingest_serially(store, str(make_export(tmp_path / "a", 5)), "toy", CONFIG)
    b = ingest_lib.ingest_serially(store, str(make_export(tmp_path / "b", 4, start=5)), "toy", CONFIG)
    keys = list(sorted_keys([a.manifest_url, b.manifest_url], batch_rows=2))
    assert keys == sorted(keys) and len(keys) == 9


CHILD = """
import os, signal, sys
from sim2real.storage import ingest, version_commit
from sim2real.storage.versions import DatasetStore

point, export, root = sys.argv[1:4]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if point == "mid-shard":
    real_add, seen = ingest.ShardWriter.add, []
    def add(self, key, members):
        seen.append(key)
        if len(seen) == 7:  # the third sample of the second shard
            die()
        return real_add(self, key, members)
    ingest.ShardWriter.add = add
elif point == "before-commit":
    ingest.commit_staged = die
elif point == "after-rename":
    version_commit.finish_commit = die
ingest.ingest_serially(DatasetStore(root), export, "toy", ingest.IngestConfig(max_shard_samples=3))
"""


@pytest.mark.parametrize("point", ["mid-shard", "before-commit", "after-rename"])
def test_kill_9_during_ingest_then_rerun_completes(tmp_path: Path, point: str):
    export = make_export(tmp_path / "export", 10)
    root = tmp_path / "root"
    child = subprocess.run([sys.executable, "-c", CHILD, point, str(export), str(root)], timeout=300)
    assert child.returncode == -signal.SIGKILL
    store = DatasetStore(str(root))
    assert store.list_versions("toy") == []  # nothing partial is visible
    assert (
        not [p for p in root.rglob("*.tar") if f"/{ingest_lib.STAGING_DIR}/" not in str(p)]
        or point == "after-rename"
    )
    config = ingest_lib.IngestConfig(max_shard_samples=3)
    version = ingest_lib.ingest_serially(store, str(export), "toy", config)
    clean = ingest_lib.ingest_serially(DatasetStore(str(tmp_path / "clean")), str(export), "toy", config)
    assert version.version == clean.version and [v.ref for v in store.list_versions("toy")] == [version.ref]
    keys = [s["__key__"] for s in wds.WebDataset(version.brace_url, shardshuffle=False)]
    assert keys == sorted(set(keys)) and len(keys) == 10  # nothing lost, nothing twice
    assert version.manifest()["key"].to_pylist() == keys
    assert not list((root / "datasets" / "toy" / ingest_lib.STAGING_DIR).iterdir())
    assert not list(root.rglob("*.tmp-*"))
