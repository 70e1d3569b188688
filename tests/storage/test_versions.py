"""Dataset versions: ids, resolution, aliases, the commit marker."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim2real.storage.manifest import manifest_table
from sim2real.storage.version_commit import EmptyVersion, commit_version
from sim2real.storage.versions import DatasetStore, VersionNotFound, content_hash


def _commit(store: DatasetStore, name: str, version: str) -> None:
    part = {
        "shard": {"file": f"{name}-000000.tar", "nsamples": 1, "filesize": 0, "md5": ""},
        "quarantine": [],
    }
    rows = [{"key": "k0", "shard": f"{name}-000000.tar"}]
    commit_version(store, name, version, [part], {"kind": "test"}, manifest_table(rows))


def test_content_hash_is_order_independent_and_sensitive():
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert len(content_hash({"a": 1})) == 16


def test_latest_alias_and_uncommitted_versions(tmp_path):
    store = DatasetStore(str(tmp_path))
    _commit(store, "cars", "v1")
    _commit(store, "cars", "v2")
    (tmp_path / "datasets" / "cars" / "v3" / "shards").mkdir(parents=True)  # crashed build: no version.json
    assert [v.version for v in store.list_versions("cars")] == ["v1", "v2"]
    assert store.open("cars@latest").version == "v2"
    assert store.open("cars").version == "v2"
    with pytest.raises(VersionNotFound, match="cars@v3"):
        store.open("cars@v3")
    store.set_alias("cars", "production", "v1")
    assert store.open("cars@production").version == "v1"
    with pytest.raises(VersionNotFound):
        store.set_alias("cars", "staging", "v3")
    with pytest.raises(VersionNotFound, match="no committed version of 'bikes'"):
        store.open("bikes@latest")


def test_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="dataset name"):
        DatasetStore(str(tmp_path)).open("Bad/Name@latest")


def test_manifest_and_index_written_before_version_json(tmp_path):
    store = DatasetStore(str(tmp_path))
    _commit(store, "cars", "v1")
    version = store.open("cars@v1")
    assert isinstance(version.manifest(), pa.Table) and version.manifest().num_rows == 1
    assert version.quarantine().num_rows == 0
    assert version.info["samples"] == 1 and version.index_url.endswith("/index.json")


def test_a_version_without_samples_is_never_committed(tmp_path):
    """Issue 16 item 4a: all frames quarantined → no version.json, the reasons where the message says."""
    store = DatasetStore(str(tmp_path))
    _commit(store, "cars", "good")
    quarantine = [{"key": f"f{i}", "path": f"/x/f{i}.png", "reason": "rgb file is empty (0 bytes)"}
                  for i in range(5)]
    part = {"shard": {"file": "cars-000000.tar", "nsamples": 0, "filesize": 10, "md5": ""},
            "quarantine": quarantine}
    with pytest.raises(EmptyVersion, match=r"cars@bad: no samples: all 5 frame\(s\) quarantined") as caught:
        commit_version(store, "cars", "bad", [part], {"kind": "test"}, manifest_table([]))
    message = str(caught.value)
    assert "/x/f0.png: rgb file is empty (0 bytes)" in message and "(+2 more)" in message
    where = message.rsplit("every reason in ", 1)[1]
    assert pq.read_table(where).to_pylist() == quarantine
    assert not store.exists("cars", "bad") and store.open("cars@latest").version == "good"
    with pytest.raises(EmptyVersion, match="no samples and nothing quarantined"):
        commit_version(store, "cars", "none", [], {"kind": "test"}, manifest_table([]))


def test_streamed_parquet_gathers_small_tables_into_row_groups_in_order(tmp_path):
    """A commit streams one small table per shard; the file has row groups of ~row_group_bytes, not one
    per table (a parquet writer holds every row group's metadata until it closes)."""
    store = DatasetStore(str(tmp_path))
    schema = pa.schema([("key", pa.string()), ("value", pa.int64())])
    tables = [
        pa.table({"key": [f"k{t:03d}-{r}" for r in range(10)], "value": list(range(t * 10, t * 10 + 10))})
        for t in range(60)
    ]
    tables.insert(7, pa.Table.from_pylist([], schema))  # an empty shard (all quarantined) adds nothing
    table_bytes = tables[0].nbytes
    path = f"{tmp_path}/m.parquet"
    for row_group_bytes, groups in ((0, 60), (table_bytes * 20, 3), (2**30, 1)):
        assert store.write_table_streaming(path, schema, iter(tables), row_group_bytes) == 600
        written = pq.ParquetFile(path)
        assert written.metadata.num_row_groups == groups
        assert written.read().column("value").to_pylist() == list(range(600))
