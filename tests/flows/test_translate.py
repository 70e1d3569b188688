"""End-to-end translate: toy sim export → ingest → translate flow → stock webdataset reads the result."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from sim2real.flows.ingest import ingest_flow
from sim2real.flows.reporting import ShardsFailed
from sim2real.flows.runners import RunnerConfig
from sim2real.flows.translate import TranslateConfig, run_translate, translate_flow
from sim2real.models.translator.checkpoint import translator_weights
from sim2real.models.translator.config import GeneratorConfig, TrainConfig, TranslatorConfig
from sim2real.models.translator.engine_config import EngineConfig
from sim2real.models.translator.model import build_translator
from sim2real.storage import schema
from sim2real.storage.manifest import manifest_row, manifest_table, with_member_hashes
from sim2real.storage.registry import WEIGHTS_FILE, RegistryError, TranslatorRegistry
from sim2real.storage.shards import read_shard, write_shard
from sim2real.storage.sources.toysim import ToySimConfig, write_export
from sim2real.storage.version_commit import commit_version
from sim2real.storage.versions import DatasetStore, shard_file_name
from sim2real.tasks import translate as translate_tasks
from sim2real.tasks import translate_work

pytestmark = pytest.mark.usefixtures("prefect_harness")
FRAMES = 10
CONFIG = TranslateConfig.model_validate(
    {"pipeline": {"batch_size": 3, "decode_workers": 1}, "engine": {"device": "cpu"}}
)


def tiny_translator_config() -> TranslatorConfig:
    return TranslatorConfig(
        gen=GeneratorConfig(dim=8, style_dim=4, n_downsample=2, n_res=1, mlp_dim=16, style_n_downsample=2),
        train=TrainConfig(crop_height=32, crop_width=32),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A root with a 3-shard toy sim version, a tiny translator and its thread-runner translation."""
    tmp = tmp_path_factory.mktemp("translate")
    write_export(tmp / "export", ToySimConfig(style="sim", height=32, width=64, seed=5), FRAMES)
    root = str(tmp / "root")
    source = ingest_flow(str(tmp / "export"), "toy", root=root, max_shard_samples=4)
    torch.manual_seed(0)
    config = tiny_translator_config()
    model = build_translator(config)
    with torch.no_grad():
        model.real_style.normal_()
    translator = TranslatorRegistry(root).save(
        translator_weights(model), {"config": config.model_dump(mode="json"), "steps": 0}
    )
    ref = f"toy@{source['version']}"
    result = translate_flow(ref, translator, root=root, config=CONFIG)
    return {"root": root, "source": ref, "translator": translator, "result": result}


def shard_bytes(root: str, result: dict[str, Any]) -> list[bytes]:
    version = DatasetStore(root).open(f"{result['name']}@{result['version']}")
    return [Path(url).read_bytes() for url in version.shard_urls]


def snapshot(root: str) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in Path(root).rglob("*") if p.is_file()}


def test_translated_version_reads_back_with_labels_byte_identical(world: dict[str, Any]):
    result, store = world["result"], DatasetStore(world["root"])
    assert set(result) >= {"name", "version", "samples", "shards", "skipped_shards", "path"}
    assert (result["name"], result["samples"], result["shards"], result["skipped_shards"]) == (
        "toy-translated",
        FRAMES,
        3,
        0,
    )
    source = {
        s["__key__"]: s for s in wds.WebDataset(store.open(world["source"]).shard_urls, shardshuffle=False)
    }
    translated = store.open(f"{result['name']}@{result['version']}")
    samples = list(wds.WebDataset(translated.brace_url, shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(source) and len(samples) == FRAMES
    for sample in samples:
        original = source[sample["__key__"]]
        for member in schema.LABEL_MEMBERS:
            if member in original:
                assert hashlib.sha256(sample[member]).digest() == hashlib.sha256(original[member]).digest()
        rgb = np.asarray(Image.open(io.BytesIO(sample["rgb.png"])))
        seg = np.asarray(Image.open(io.BytesIO(sample["seg.png"])))
        assert rgb.shape == (*seg.shape, 3) and sample["rgb.png"] != original["rgb.png"]
        meta = json.loads(sample["meta.json"])
        assert meta["translation"] == {
            "source_version": world["source"],
            "translator_id": world["translator"],
            "translator_weights_sha256": TranslatorRegistry(world["root"]).card(world["translator"])[
                "weights_sha256"
            ],
            "source_rgb_sha256": hashlib.sha256(original["rgb.png"]).hexdigest(),
        }
        assert meta["sha256"]["rgb.png"] == hashlib.sha256(sample["rgb.png"]).hexdigest()
        assert meta["frame"] == json.loads(original["meta.json"])["frame"]  # source meta kept
    assert translated.info["kind"] == "translate" and translated.info["source"] == world["source"]


def test_artifacts_show_progress_table_and_before_after_grid(world: dict[str, Any]):
    with get_client(sync_client=True) as client:
        artifacts = {
            a.key: a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="translate-toy-translated"))
            )
        }
    assert {"translate-toy-translated-progress", "translate-toy-translated-shards"} <= set(artifacts)
    preview = artifacts["translate-toy-translated-preview"].data
    images = re.findall(r"\*\*([\w-]+)\*\*\s+!\[[^]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", preview)
    assert len(images) == 2  # two frames, each large enough to judge
    store = DatasetStore(world["root"])
    source = {k: m for url in store.open(world["source"]).shard_urls for k, m in read_shard(store.fs, url)}
    for key, data in images:
        pair = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
        frame = np.asarray(Image.open(io.BytesIO(source[key]["rgb.png"])).convert("RGB"))
        assert pair.shape == (256, 2 * 512 + 8, 3)  # 32x64 frames enlarged 8x, side by side
        assert np.array_equal(pair[::8, :512:8], frame)  # the source frame, every pixel, left
    assert (
        len(
            artifacts["translate-toy-translated-shards"].data
            and json.loads(artifacts["translate-toy-translated-shards"].data)
        )
        == 3
    )


def test_a_translator_alias_names_the_same_translator(world: dict[str, Any]):
    TranslatorRegistry(world["root"]).set_alias("production", world["translator"])
    again = translate_flow(world["source"], "production", root=world["root"], config=CONFIG)
    assert (again["version"], again["created"]) == (world["result"]["version"], False)
    with pytest.raises(RegistryError, match="no translators id or alias 'staging'"):
        translate_flow(world["source"], "staging", root=world["root"], config=CONFIG)


def test_a_translator_with_damaged_weights_is_refused_before_any_shard(world: dict[str, Any]):
    registry = TranslatorRegistry(world["root"])
    torch.manual_seed(1)
    config = tiny_translator_config()
    damaged = registry.save(translator_weights(build_translator(config)), {"config": config.model_dump()})
    weights = Path(registry.path(damaged)) / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit of a tensor: still a safetensors file, no longer these weights
    weights.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match=f"{weights}: sha256 .* does not match card"):
        translate_flow(world["source"], damaged, "toy-damaged", root=world["root"], config=CONFIG)
    assert not (Path(world["root"]) / "datasets" / "toy-damaged").exists()  # no shard task ran


def test_rerun_writes_nothing(world: dict[str, Any]):
    before = snapshot(world["root"])
    again = translate_flow(world["source"], world["translator"], root=world["root"], config=CONFIG)
    assert snapshot(world["root"]) == before
    assert (again["version"], again["skipped_shards"], again["created"]) == (
        world["result"]["version"],
        3,
        False,
    )


def test_a_preview_that_fails_leaves_the_committed_version_and_a_successful_run(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    def unpreviewable(root, source, translated, count=2):
        raise OSError("image file is truncated (0 bytes not processed)")

    monkeypatch.setattr(translate_tasks, "preview_translation", unpreviewable)
    result = translate_flow(world["source"], world["translator"], "toy-no-preview", world["root"], CONFIG)
    assert (result["created"], result["samples"]) == (True, FRAMES)
    assert result["version"] == world["result"]["version"]  # the same inputs and config: the same id


def test_failure_after_some_shards_then_rerun_completes(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    real = translate_work.read_batches

    def failing(url, config):
        if url.endswith(shard_file_name("toy", 1)):
            raise RuntimeError("injected crash")
        return real(url, config)

    monkeypatch.setattr(translate_work, "read_batches", failing)
    monkeypatch.setattr(
        translate_tasks, "translate_shard", translate_tasks.translate_shard.with_options(retries=0)
    )
    # The crash is planted in this process: the shard work runs here (throughput only: the same id).
    in_process = CONFIG.model_copy(
        update={"pipeline": CONFIG.pipeline.model_copy(update={"shard_processes": 0})}
    )
    with pytest.raises(ShardsFailed, match=r"1 shard\(s\) failed \[1\]"):
        translate_flow(world["source"], world["translator"], "toy-crash", world["root"], in_process)
    monkeypatch.setattr(translate_work, "read_batches", real)

    result = translate_flow(world["source"], world["translator"], "toy-crash", world["root"], CONFIG)
    assert (result["samples"], result["skipped_shards"], result["version"]) == (
        FRAMES,
        2,
        world["result"]["version"],
    )
    keys = [
        s["__key__"]
        for s in wds.WebDataset(
            DatasetStore(world["root"]).open(f"toy-crash@{result['version']}").shard_urls, shardshuffle=False
        )
    ]
    assert len(keys) == len(set(keys)) == FRAMES
    assert shard_bytes(world["root"], result) == shard_bytes(world["root"], world["result"])


def test_dask_local_cluster_gives_byte_identical_shards(world: dict[str, Any]):
    runner = RunnerConfig(kind="dask", dask_workers=1, dask_processes=True)
    result = run_translate(
        runner,
        source=world["source"],
        translator=world["translator"],
        out_name="toy-dask",
        root=world["root"],
        config=CONFIG,
    )
    assert result["version"] == world["result"]["version"] and result["samples"] == FRAMES
    assert shard_bytes(world["root"], result) == shard_bytes(world["root"], world["result"])


def corrupt_copy(root: str, source_ref: str, bad_key_index: int) -> tuple[str, str]:
    """Commit a copy of ``source_ref`` as ``toybad@v1`` with one frame's image truncated."""
    store = DatasetStore(root)
    source = store.open(source_ref)
    parts, rows, bad_key = [], [], None
    for index, url in enumerate(source.shard_urls):
        samples = []
        for key, members in read_shard(store.fs, url):
            if len(rows) == bad_key_index:
                bad_key, members = (
                    key,
                    with_member_hashes(key, {**members, "rgb.png": members["rgb.png"][:60]}),
                )
            samples.append((key, members))
            rows.append(manifest_row(key, shard_file_name("toybad", index), members))
        info = write_shard(store.fs, store.shard_path("toybad", "v1", index), samples)
        parts.append(
            {
                "shard": {
                    "file": shard_file_name("toybad", index),
                    "nsamples": info.nsamples,
                    "filesize": info.filesize,
                    "md5": info.md5,
                }
            }
        )
    commit_version(store, "toybad", "v1", parts, {"kind": "test"}, manifest_table(rows))
    assert bad_key is not None
    return "toybad@v1", bad_key


def test_corrupt_frame_is_quarantined_and_the_rest_translates(world: dict[str, Any]):
    ref, bad_key = corrupt_copy(world["root"], world["source"], bad_key_index=5)
    result = translate_flow(ref, world["translator"], root=world["root"], config=CONFIG)
    assert (result["samples"], result["quarantined"], result["shards"]) == (FRAMES - 1, 1, 3)
    version = DatasetStore(world["root"]).open(f"toybad-translated@{result['version']}")
    quarantine = version.quarantine().to_pylist()
    assert [row["key"] for row in quarantine] == [bad_key]
    assert "cannot decode image" in quarantine[0]["reason"] and "toybad-000001.tar" in quarantine[0]["path"]
    keys = [s["__key__"] for s in wds.WebDataset(version.shard_urls, shardshuffle=False)]
    assert bad_key not in keys and len(keys) == FRAMES - 1


def test_compiled_engine_through_the_flow_matches_eager_pixels_and_copies_labels(world: dict[str, Any]):
    config = CONFIG.model_copy(update={"engine": CONFIG.engine.model_copy(update={"compile": True})})
    # (what the nightly deployment runs)
    result = translate_flow(world["source"], world["translator"], "toy-compiled", world["root"], config)
    assert result["samples"] == FRAMES and result["version"] != world["result"]["version"]
    store = DatasetStore(world["root"])

    def samples(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
        version = store.open(f"{res['name']}@{res['version']}")
        return {s["__key__"]: s for s in wds.WebDataset(version.shard_urls, shardshuffle=False)}

    compiled, eager = samples(result), samples(world["result"])
    assert compiled.keys() == eager.keys()
    for key, sample in compiled.items():
        for member in schema.LABEL_MEMBERS:
            assert sample.get(member) == eager[key].get(member)
        a = np.asarray(Image.open(io.BytesIO(sample["rgb.png"]))).astype(int)
        b = np.asarray(Image.open(io.BytesIO(eager[key]["rgb.png"]))).astype(int)
        assert np.abs(a - b).mean() < 1.0, key  # same network and precision, other kernels


def test_shard_tasks_starting_together_build_one_engine(monkeypatch):
    # The first shard tasks of a run start at once; each building its own engine would load (and,
    # compiled, compile) the translator once per task.
    loads = []

    def slow_load(registry, translator_id, device):
        loads.append(translator_id)
        time.sleep(0.2)  # widens the window in which a second task would miss the cache
        return build_translator(tiny_translator_config()), {}

    monkeypatch.setattr(translate_work, "load_translator", slow_load)
    config = EngineConfig(device="cpu", precision="fp32", forward_threads=1).resolve()
    key = f"race-{time.monotonic_ns()}"  # not in the process's cache yet
    with ThreadPoolExecutor(max_workers=3) as pool:
        engines = list(
            pool.map(lambda _: translate_work.cached_engine("/nowhere", key, config, 3), range(3))
        )
    assert loads == [key]
    assert engines[0] is engines[1] is engines[2]
