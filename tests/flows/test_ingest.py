"""End-to-end ingest: toy simulator export → dataset version → stock webdataset / wids read back."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
import webdataset as wds
import wids
from prefect.context import FlowRunContext

from sim2real.flows.ingest import ingest_flow
from sim2real.flows.reporting import shard_window
from sim2real.storage import ingest as ingest_lib
from sim2real.storage.sources.toysim import ToySimConfig, write_export
from sim2real.storage.versions import DatasetStore

pytestmark = pytest.mark.usefixtures("prefect_harness")
FRAMES = 10
LABEL_DIRS = {"seg": "seg.png", "inst": "inst.png", "boxes": "boxes.json", "depth": "depth.png"}


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    out = tmp_path / "export"
    write_export(out, ToySimConfig(style="sim", height=32, width=64, seed=3), FRAMES)
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def test_ingest_round_trip_with_stock_readers(export: Path, tmp_path: Path):
    root = tmp_path / "root"
    result = ingest_flow(str(export), "toy", root=str(root), max_shard_samples=4)
    assert (result["samples"], result["quarantined"], result["shards"]) == (FRAMES, 0, 3)
    version = DatasetStore(str(root)).open(f"toy@{result['version']}")

    samples = list(wds.WebDataset(version.brace_url, shardshuffle=False))
    keys = sorted(p.stem for p in (export / "rgb").iterdir())
    assert sorted(s["__key__"] for s in samples) == keys  # every sample exactly once
    for sample in samples:
        key = sample["__key__"]
        meta = json.loads(sample["meta.json"])
        for folder, member in LABEL_DIRS.items():
            exported = export / folder / f"{key}{Path(member).suffix}"
            digest = hashlib.sha256(sample[member]).hexdigest()
            assert digest == sha(exported), f"{key}.{member} differs from the export"
            assert meta["sha256"][member] == digest
        assert sample["rgb.png"] == (export / "rgb" / f"{key}.png").read_bytes()

    dataset = wids.ShardListDataset(version.index_url)
    assert len(dataset) == FRAMES
    assert sorted(dataset[i]["__key__"] for i in range(len(dataset))) == keys

    manifest = version.manifest().to_pylist()
    assert [r["key"] for r in manifest] == keys
    assert all(sum(r["class_pixels"]) + r["ignore_pixels"] == 32 * 64 for r in manifest)


def test_rerun_returns_same_version_and_writes_nothing(export: Path, tmp_path: Path, changes_under):
    root = tmp_path / "root"
    first = ingest_flow(str(export), "toy", root=str(root))
    before = snapshot(root)
    with changes_under(root) as changes:
        second = ingest_flow(str(export), "toy", root=str(root))
    assert second["version"] == first["version"] and second["created"] is False
    assert snapshot(root) == before
    assert changes == []  # not even a temporary listing written and removed


def test_crash_in_one_shard_then_rerun_completes(export: Path, tmp_path: Path, monkeypatch):
    root = tmp_path / "root"
    real_add = ingest_lib.ShardWriter.add

    def failing_add(self, key, members):
        if self.path.endswith("-000001.tar"):
            raise RuntimeError("injected failure while writing shard 1")
        return real_add(self, key, members)

    monkeypatch.setattr(ingest_lib.ShardWriter, "add", failing_add)
    with pytest.raises(RuntimeError, match="injected failure"):
        ingest_flow(str(export), "toy", root=str(root), max_shard_samples=4, workers=1)
    store = DatasetStore(str(root))
    assert store.list_versions("toy") == []  # no reader sees the unfinished version
    shard_files = [p.name for p in root.rglob("*.tar*")]
    assert all(name.endswith(".tar") for name in shard_files)  # never a partial shard under a real name
    done = {p.name: p.stat().st_mtime_ns for p in root.rglob("*.tar")}
    assert "toy-000001.tar" not in done and len(done) == 2

    monkeypatch.setattr(ingest_lib.ShardWriter, "add", real_add)
    result = ingest_flow(str(export), "toy", root=str(root), max_shard_samples=4, workers=1)
    assert result["samples"] == FRAMES and result["created"] is True
    after = {p.name: p.stat().st_mtime_ns for p in root.rglob("*.tar")}
    assert all(after[name] == mtime for name, mtime in done.items())  # finished shards were not redone
    samples = list(wds.WebDataset(store.open("toy@latest").brace_url, shardshuffle=False))
    assert len({s["__key__"] for s in samples}) == len(samples) == FRAMES
    version_dir = root / "datasets" / "toy" / result["version"]
    assert not (version_dir / "_parts").exists() and not (version_dir / "listing").exists()
    assert list((root / "datasets" / "toy" / "_staging").iterdir()) == []


def test_shards_run_in_a_bounded_window_and_leave_no_prefect_state_per_shard(
    export: Path, tmp_path: Path, monkeypatch
):
    """The flow holds O(1) in the shard count: at most ``shard_window`` shard tasks at once, and nothing
    Prefect keeps per finished task run (dependency links, asset sets, cancel events) at commit time."""
    lock = threading.Lock()
    running = {"now": 0, "peak": 0}
    held: dict[int, tuple[int, int, int]] = {}
    real_build, real_commit = ingest_lib.build_shard_at, ingest_lib.commit_ingest

    def counted_build(root, listing, index):
        with lock:
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
        try:
            time.sleep(0.05)  # so that shards submitted together overlap
            return real_build(root, listing, index)
        finally:
            with lock:
                running["now"] -= 1

    def commit_and_count(store, listing):
        context = FlowRunContext.get()
        assert context is not None
        cancel_events = getattr(context.task_runner, "_cancel_events", {})
        held[listing.num_shards] = (
            len(context.run_results),
            len(context.task_run_assets),
            len(cancel_events),
        )
        return real_commit(store, listing)

    monkeypatch.setattr(ingest_lib, "build_shard_at", counted_build)
    monkeypatch.setattr(ingest_lib, "commit_ingest", commit_and_count)
    root = str(tmp_path / "root")
    few = ingest_flow(str(export), "few", root=root, max_shard_samples=5, workers=1)
    many = ingest_flow(str(export), "many", root=root, max_shard_samples=1, workers=1)
    assert (few["shards"], many["shards"]) == (2, FRAMES)
    assert 1 <= running["peak"] <= shard_window(1) < FRAMES
    assert held[FRAMES] == held[2]  # 10 shards leave no more behind than 2


def test_bad_frames_are_quarantined_and_the_rest_completes(export: Path, tmp_path: Path):
    keys = sorted(p.stem for p in (export / "rgb").iterdir())
    (export / "rgb" / f"{keys[2]}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    from PIL import Image

    Image.new("L", (10, 10)).save(export / "seg" / f"{keys[5]}.png")
    os.remove(export / "seg" / f"{keys[7]}.png")
    result = ingest_flow(str(export), "toy", root=str(tmp_path / "root"), max_shard_samples=4)
    assert result["samples"] == FRAMES - 3 and result["quarantined"] == 3
    version = DatasetStore(str(tmp_path / "root")).open("toy@latest")
    quarantine = {r["key"]: r for r in version.quarantine().to_pylist()}
    assert set(quarantine) == {keys[2], keys[5], keys[7]}
    assert "unreadable rgb" in quarantine[keys[2]]["reason"] and quarantine[keys[2]]["path"].endswith(".png")
    assert "seg size 10x10 != rgb size 64x32" in quarantine[keys[5]]["reason"]
    assert "missing member seg" in quarantine[keys[7]]["reason"]
    good = sorted(set(keys) - set(quarantine))
    assert version.manifest()["key"].to_pylist() == good
