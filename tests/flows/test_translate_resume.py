"""Translate killed with SIGKILL (as the OOM killer would) at three points, then rerun: it completes,
nothing lost or twice, and no partial version is ever visible."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import webdataset as wds

from sim2real.flows.translate import TranslateConfig, translate_flow
from sim2real.models.translator.checkpoint import translator_weights
from sim2real.models.translator.config import GeneratorConfig, TrainConfig, TranslatorConfig
from sim2real.models.translator.model import build_translator
from sim2real.storage import ingest, translate_read
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.sources.toysim import ToySimConfig, write_export
from sim2real.storage.versions import DatasetStore
from sim2real.tasks import translate as translate_tasks
from sim2real.tasks import workers
from sim2real.tasks.workers import shutdown_pool

pytestmark = pytest.mark.usefixtures("prefect_harness")
# Threads per forward pass fixed: the killed child and this process resolve the same version id. The
# shard work runs in the flow's own process here (the kill hits the process that writes); a killed
# worker process is the last test's case.
SETTINGS = {
    "pipeline": {"batch_size": 2, "shard_processes": 0},
    "engine": {"device": "cpu", "intra_op_threads": 1},
}

# Imported at start-up by every worker process the test starts (PYTHONPATH): the first worker to add a
# sample to a shard kills itself with SIGKILL, as the OOM killer would; the marker file says it happened.
SITECUSTOMIZE = """
import os, signal
from pathlib import Path
from sim2real.storage import shards

marker = Path(os.environ["SIM2REAL_TEST_KILL_MARKER"])
real_add = shards.ShardBuilder.add

def add(self, key, members):
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return real_add(self, key, members)

shards.ShardBuilder.add = add
"""

# The flow's own steps (the tasks' functions, no API needed), with a SIGKILL planted at ``point``.
CHILD = """
import json, os, signal, sys
from sim2real.flows.translate_config import TranslateConfig
from sim2real.storage import shards, versions
from sim2real.tasks import translate as steps

point, root, source, translator = sys.argv[1:5]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if point == "mid-shard":
    real_add, added = shards.ShardBuilder.add, []
    def add(self, key, members):
        added.append(key)
        if len(added) == 6:  # the second sample of the second shard
            die()
        return real_add(self, key, members)
    shards.ShardBuilder.add = add
elif point == "mid-commit":
    versions.DatasetStore.write_table_streaming = die
elif point == "before-version-json":
    real_json = versions.DatasetStore.write_json
    versions.DatasetStore.write_json = lambda self, path, payload: (
        die() if path.endswith("/version.json") else real_json(self, path, payload)
    )
config = TranslateConfig.model_validate(json.loads(sys.argv[5])).resolve()
plan = steps.plan_translate.fn(root, source, translator, "out", config.version_key())
settings = (config.encode, config.pipeline, config.engine)
for index in range(len(plan.shard_urls)):
    steps.translate_shard.fn(root, plan, index, *settings)
steps.commit_translation.fn(root, plan)
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("resume")
    write_export(tmp / "export", ToySimConfig(style="sim", height=24, width=40, seed=4), 10)
    return tmp, str(tmp / "export")


TINY = TranslatorConfig(
    gen=GeneratorConfig(dim=8, style_dim=4, n_downsample=2, n_res=1, mlp_dim=16, style_n_downsample=2),
    train=TrainConfig(crop_height=32, crop_width=32),
)


def prepare(tmp: Path, export: str, point: str) -> tuple[str, str, str]:
    root = str(tmp / f"root-{point}")
    config = ingest.IngestConfig(max_shard_samples=4)
    source = ingest.ingest_serially(DatasetStore(root), export, "toy", config)
    torch.manual_seed(0)
    weights = translator_weights(build_translator(TINY))
    translator = TranslatorRegistry(root).save(weights, {"config": TINY.model_dump(mode="json")})
    return root, source.ref, translator


@pytest.mark.parametrize("point", ["mid-shard", "mid-commit", "before-version-json"])
def test_kill_9_during_translate_then_rerun_completes(world: tuple[Path, str], point: str):
    tmp, export = world
    root, source, translator = prepare(tmp, export, point)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, point, root, source, translator, json.dumps(SETTINGS)], timeout=600
    )
    assert child.returncode == -signal.SIGKILL
    store = DatasetStore(root)
    assert store.list_versions("out") == []  # nothing partial is visible
    finished = {p.name: p.stat().st_mtime_ns for p in Path(root, "datasets", "out").rglob("*.tar")}
    assert finished, "the killed run had finished at least one shard"

    config = TranslateConfig.model_validate(SETTINGS)
    result = translate_flow(source, translator, "out", root, config)
    assert result["created"] and result["samples"] == 10 and result["shards"] == 3
    version = store.open(f"out@{result['version']}")
    keys = [s["__key__"] for s in wds.WebDataset(version.brace_url, shardshuffle=False)]
    source_keys = store.open(source).manifest()["key"].to_pylist()
    assert keys == source_keys  # nothing lost, nothing twice, source order
    assert version.manifest()["key"].to_pylist() == source_keys
    if point != "mid-shard":  # every shard was done before the kill: none is redone
        assert result["skipped_shards"] == 3
    after = {p.name: p.stat().st_mtime_ns for p in Path(version.path, "shards").glob("*.tar")}
    assert all(after[name] == mtime for name, mtime in finished.items() if name in after)
    assert not list(Path(root).rglob("*.tmp-*")) and not Path(version.path, "_parts").exists()


def test_a_worker_process_killed_mid_shard_is_retried_on_a_fresh_pool(
    world: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    tmp, export = world
    root, source, translator = prepare(tmp, export, "worker")
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / "killed-worker.pid"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("SIM2REAL_TEST_KILL_MARKER", str(marker))
    shutdown_pool()  # workers start after this point, with the kill planted
    try:
        config = TranslateConfig.model_validate(
            {**SETTINGS, "pipeline": {"batch_size": 2, "shard_processes": 2}}
        )
        result = translate_flow(source, translator, "out", root, config)
    finally:
        shutdown_pool()
    killed = int(marker.read_text())  # a worker did die mid-shard
    assert not Path(f"/proc/{killed}").exists()
    assert result["created"] and result["samples"] == 10 and result["shards"] == 3
    store = DatasetStore(root)
    version = store.open(f"out@{result['version']}")
    keys = [s["__key__"] for s in wds.WebDataset(version.brace_url, shardshuffle=False)]
    assert keys == store.open(source).manifest()["key"].to_pylist()  # nothing lost, nothing twice
    assert not list(Path(root).rglob("*.tmp-*"))


def test_one_shard_is_translated_in_the_flows_process(world: tuple[Path, str], tmp_path: Path):
    _, export = world
    root = str(tmp_path / "root")
    one_shard = ingest.IngestConfig(max_shard_samples=16)
    source = ingest.ingest_serially(DatasetStore(root), export, "one", one_shard)
    torch.manual_seed(0)
    translator = TranslatorRegistry(root).save(
        translator_weights(build_translator(TINY)), {"config": TINY.model_dump(mode="json")}
    )
    shutdown_pool()
    assert TranslateConfig().pipeline.shard_processes is None  # the default: by the run's size
    config = TranslateConfig.model_validate({"pipeline": {"shard_processes": 2}, "engine": {"device": "cpu"}})
    result = translate_flow(source.ref, translator, "out", root, config)
    assert result["shards"] == 1 and result["samples"] == 10
    assert workers._pool is None  # no worker process was started for a single shard


def test_a_run_large_enough_translates_in_worker_processes_by_default(
    world: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
):
    tmp, export = world
    root, source, translator = prepare(tmp, export, "auto")
    # 10 frames in 3 shards count as a long run: the threshold lowered, two cores whatever the machine
    monkeypatch.setattr(translate_read, "AUTO_FRAMES_PER_PROCESS", 5)
    monkeypatch.setattr(translate_read, "usable_cores", lambda: 2)
    calls: list[int] = []

    def counted(processes: int, *args: object) -> object:
        calls.append(processes)
        return workers.run_in_pool(processes, *args)

    monkeypatch.setattr(translate_tasks, "run_in_pool", counted)
    shutdown_pool()
    config = TranslateConfig.model_validate({**SETTINGS, "pipeline": {"batch_size": 2}})
    try:
        result = translate_flow(source, translator, "out", root, config)
    finally:
        shutdown_pool()
    assert calls == [2, 2, 2]  # each shard's work went to the pool of two worker processes
    assert result["created"] and result["samples"] == 10 and result["shards"] == 3
    in_process = TranslateConfig.model_validate(SETTINGS)
    reference = translate_flow(source, translator, "in-process", root, in_process)
    assert reference["version"] == result["version"]  # throughput only: the same id ...
    store = DatasetStore(root)
    ours, theirs = (store.open(f"{n}@{result['version']}").path for n in ("out", "in-process"))
    for shard in sorted(Path(ours).glob("*.tar")):
        assert shard.read_bytes() == (Path(theirs) / shard.name).read_bytes()  # ... and the same bytes
