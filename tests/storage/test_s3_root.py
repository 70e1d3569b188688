"""A storage root on ``s3://`` through s3fs, against moto's S3 server on loopback.

This is how s3fs's own test suite runs: ``moto.server.ThreadedMotoServer`` on 127.0.0.1 and a free
port, fake credentials, the endpoint given to botocore. Nothing leaves the machine.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed (pip install s3fs)")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")

import webdataset as wds  # noqa: E402

from sim2real.flows.ingest import ingest_flow  # noqa: E402
from sim2real.storage.ingest import IngestConfig, ingest_serially  # noqa: E402
from sim2real.storage.reader import decoded_samples, register_fsspec_schemes  # noqa: E402
from sim2real.storage.sources.toysim import ToySimConfig, write_export  # noqa: E402
from sim2real.storage.versions import DatasetStore  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect_harness")
BUCKET = "sim2real-test"
FRAMES = 6


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; env and fsspec config point s3fs/botocore at it."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,  # botocore reads it: also reaches Dask workers and subprocesses
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        s3fs.S3FileSystem(anon=False).mkdir(BUCKET)
        yield endpoint
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture()
def s3_root(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh root prefix in the test bucket, one per test."""
    return f"s3://{BUCKET}/{re.sub(r'[^A-Za-z0-9_-]+', '-', request.node.name)}"  # no glob characters


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    out = tmp_path / "export"
    write_export(out, ToySimConfig(style="sim", height=32, width=64, seed=5), FRAMES)
    return out


def test_ingest_to_s3_and_read_back_with_stock_webdataset(export: Path, s3_root: str) -> None:
    result = ingest_flow(str(export), "toy", root=s3_root, max_shard_samples=4)
    assert (result["samples"], result["shards"]) == (FRAMES, 2)
    assert result["path"].startswith(f"s3://{BUCKET}/")

    version = DatasetStore(s3_root).open("toy@latest")
    assert version.version == result["version"]
    assert all(url.startswith("s3://") for url in version.shard_urls)

    register_fsspec_schemes()  # stock webdataset opens s3:// through fsspec
    raw = list(wds.WebDataset(version.shard_urls, shardshuffle=False, empty_check=False))
    keys = sorted(p.stem for p in (export / "rgb").iterdir())
    assert sorted(s["__key__"] for s in raw) == keys
    for sample in raw:
        assert sample["rgb.png"] == (export / "rgb" / f"{sample['__key__']}.png").read_bytes()

    decoded = list(decoded_samples(version.brace_url))
    assert {s["rgb"].shape for s in decoded} == {(32, 64, 3)}

    again = ingest_flow(str(export), "toy", root=s3_root, max_shard_samples=4)
    assert (again["version"], again["created"]) == (result["version"], False)

    DatasetStore(s3_root).set_alias("toy", "production", result["version"])
    assert DatasetStore(s3_root).open("toy@production").version == result["version"]


def test_a_commit_killed_while_s3_copies_the_version_leaves_nothing_visible_and_a_rerun_completes(
    export: Path, s3_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On S3 the staging folder's "rename" to the version's is a copy of every object, then a delete:
    # a kill after some objects were copied leaves a version folder without ``_commit.json``.
    store = DatasetStore(s3_root)
    config = IngestConfig(max_shard_samples=4)
    real_copy, copied = store.fs.copy, []  # s3fs binds its sync methods per instance

    def copy_then_die(path1, path2, *args, **kwargs):
        if "/_staging/" in path1 and "/_staging/" not in path2:
            if len(copied) == 3:
                raise RuntimeError("killed while the version was being copied")
            copied.append(path2)
        return real_copy(path1, path2, *args, **kwargs)

    monkeypatch.setattr(store.fs, "copy", copy_then_die)
    with pytest.raises(RuntimeError, match="killed while"):
        ingest_serially(store, str(export), "toy", config)
    assert len(copied) == 3 and not any(p.endswith("_commit.json") for p in copied)
    assert store.list_versions("toy") == []  # nothing visible

    monkeypatch.setattr(store.fs, "copy", real_copy)
    version = ingest_serially(store, str(export), "toy", config)
    assert version.num_samples == FRAMES and len(version.shard_urls) == 2
    register_fsspec_schemes()
    raw = list(wds.WebDataset(version.shard_urls, shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in raw) == sorted(p.stem for p in (export / "rgb").iterdir())
    assert not store.fs.exists(f"{store.root}/datasets/toy/_staging/{version.info['listing_fingerprint']}")


RUNNERS = {
    # A local Dask cluster of two worker processes (prefect-dask).
    "dask": (
        "prefect_dask",
        {"kind": "dask", "dask_workers": 2, "dask_threads_per_worker": 1, "dask_processes": True},
    ),
    # A fresh local Ray instance (prefect-ray); skipped where ray does not install.
    "ray": ("prefect_ray", {"kind": "ray", "address": "local"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("engine", sorted(RUNNERS))
def test_translate_on_a_scale_out_engine_against_the_s3_root(engine: str, export: Path, s3_root: str) -> None:
    """Shards of an s3:// version translated by tasks on Dask / Ray workers; labels stay byte-identical."""
    module, runner_fields = RUNNERS[engine]
    pytest.importorskip(module, reason=f"{module} is not installed (pip install {module.replace('_', '-')})")
    if engine == "ray":
        pytest.importorskip("ray", reason="ray is not installed on this platform")
    import torch

    from sim2real.flows.runners import RunnerConfig
    from sim2real.flows.translate import TranslateConfig, run_translate
    from sim2real.models.translator.checkpoint import translator_weights
    from sim2real.models.translator.config import GeneratorConfig, TrainConfig, TranslatorConfig
    from sim2real.models.translator.model import build_translator
    from sim2real.storage.registry import TranslatorRegistry

    source = ingest_flow(str(export), "toy", root=s3_root, max_shard_samples=2)
    torch.manual_seed(0)
    config = TranslatorConfig(
        gen=GeneratorConfig(dim=8, style_dim=4, n_downsample=2, n_res=1, mlp_dim=16, style_n_downsample=2),
        train=TrainConfig(crop_height=32, crop_width=32),
    )
    translator = TranslatorRegistry(s3_root).save(
        translator_weights(build_translator(config)), {"config": config.model_dump(mode="json")}
    )
    result = run_translate(
        RunnerConfig(**runner_fields),
        source=f"toy@{source['version']}",
        translator=translator,
        root=s3_root,
        config=TranslateConfig.model_validate(
            {"pipeline": {"batch_size": 2, "decode_workers": 0}, "engine": {"device": "cpu"}}
        ),
    )
    assert (result["samples"], result["shards"]) == (FRAMES, 3)
    assert result["path"].startswith(f"s3://{BUCKET}/")

    translated = DatasetStore(s3_root).open(f"{result['name']}@{result['version']}")
    source_urls = DatasetStore(s3_root).open(f"toy@{source['version']}").shard_urls
    source_samples = {
        s["__key__"]: s for s in wds.WebDataset(source_urls, shardshuffle=False, empty_check=False)
    }
    translated_samples = list(wds.WebDataset(translated.shard_urls, shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in translated_samples) == sorted(source_samples)
    for sample in translated_samples:
        assert sample["seg.png"] == source_samples[sample["__key__"]]["seg.png"]  # labels byte-identical
