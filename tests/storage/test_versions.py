"""Dataset versions: ids, resolution, aliases, the commit marker."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sim2real.storage.manifest import manifest_table
from sim2real.storage.versions import DatasetStore, VersionNotFound, commit_version, content_hash


def _commit(store: DatasetStore, name: str, version: str) -> None:
    part = {
        "shard": {"file": f"{name}-000000.tar", "nsamples": 0, "filesize": 0, "md5": ""},
        "quarantine": [],
    }
    commit_version(store, name, version, [part], {"kind": "test"}, manifest_table([]))


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
    assert isinstance(version.manifest(), pa.Table) and version.manifest().num_rows == 0
    assert version.quarantine().num_rows == 0
    assert version.info["samples"] == 0 and version.index_url.endswith("/index.json")
