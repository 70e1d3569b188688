"""``sim2real translate`` as a user runs it: JSON result, stock webdataset reads the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import typer
import webdataset as wds

from sim2real.flows.cli_translate import translate
from sim2real.models.translator.checkpoint import translator_weights
from sim2real.models.translator.config import GeneratorConfig, TrainConfig, TranslatorConfig
from sim2real.models.translator.model import build_translator
from sim2real.storage import ingest
from sim2real.storage.registry import WEIGHTS_FILE, RegistryError, TranslatorRegistry
from sim2real.storage.sources.toysim import ToySimConfig, write_export
from sim2real.storage.versions import DatasetStore, VersionNotFound

CLI = [sys.executable, "-c", "from sim2real.flows.cli import main; main()"]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)


def source_and_translator(tmp_path: Path) -> tuple[str, str, str]:
    """Ingest 5 toy frames without Prefect and save a fresh tiny translator; return root, ref, id."""
    root = str(tmp_path / "root")
    write_export(tmp_path / "export", ToySimConfig(style="sim", height=24, width=40, seed=2), 5)
    store = DatasetStore(root)
    version = ingest.ingest_serially(
        store, str(tmp_path / "export"), "sim", ingest.IngestConfig(max_shard_samples=3)
    )
    config = TranslatorConfig(
        gen=GeneratorConfig(dim=8, style_dim=4, n_downsample=2, n_res=1, mlp_dim=16, style_n_downsample=2),
        train=TrainConfig(crop_height=32, crop_width=32),
    )
    torch.manual_seed(0)
    model_id = TranslatorRegistry(root).save(
        translator_weights(build_translator(config)), {"config": config.model_dump(mode="json")}
    )
    return root, version.ref, model_id


def test_cli_translate_json(tmp_path: Path):
    root, ref, model_id = source_and_translator(tmp_path)
    env = {**os.environ, "SIM2REAL_ROOT": root}
    args = ["translate", "sim@latest", "--translator", model_id, "--batch-size", "2", "--format", "jpg"]
    done = run(*args, "--device", "cpu", "--cpu-streams", "1", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) >= {"name", "version", "samples", "shards", "skipped_shards", "path"}
    assert (result["name"], result["samples"], result["shards"], result["skipped_shards"]) == (
        "sim-translated",
        5,
        2,
        0,
    )
    assert "Traceback" not in done.stderr
    samples = list(
        wds.WebDataset(f"{result['path']}/shards/sim-translated-{{000000..000001}}.tar", shardshuffle=False)
    )
    assert len(samples) == 5 and all("rgb.jpg" in s and "rgb.png" not in s for s in samples)
    assert json.loads(samples[0]["meta.json"])["translation"]["source_version"] == ref


def test_cli_translate_refuses_bad_input_before_starting_a_flow(tmp_path: Path):
    root, _, model_id = source_and_translator(tmp_path)
    common = {
        "out_name": None,
        "address": None,
        "batch_size": 8,
        "image_format": "png",
        "device": "cpu",
        "precision": "auto",
        "compile_model": False,
        "forward_threads": 2,
        "config_file": None,
        "root": root,
        "as_json": False,
    }
    with pytest.raises(typer.BadParameter, match="runner 'spark'"):
        translate("sim@latest", translator=model_id, runner="spark", **common)
    with pytest.raises(typer.BadParameter, match="fp16: not supported on CPU"):
        translate("sim@latest", translator=model_id, runner="thread", **{**common, "precision": "fp16"})
    with pytest.raises(typer.BadParameter, match="engine.precision: Input should be .* \\(got 'fp8'\\)"):
        translate("sim@latest", translator=model_id, runner="thread", **{**common, "precision": "fp8"})
    with pytest.raises(VersionNotFound, match="sim@nope"):
        translate("sim@nope", translator=model_id, runner="thread", **common)
    with pytest.raises(RegistryError, match="no translators id or alias '0000'"):
        translate("sim@latest", translator="0000", runner="thread", **common)
    weights = Path(TranslatorRegistry(root).path(model_id)) / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-100])  # a truncated copy, as a failed sync leaves it
    with pytest.raises(RegistryError, match=f"{weights}: sha256 .* does not match card"):
        translate("sim@latest", translator=model_id, runner="thread", **common)


def _live_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_cli_translate_killed_leaves_no_embedded_server(tmp_path: Path):
    root, _, model_id = source_and_translator(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(SIM2REAL_ROOT=root, PREFECT_HOME=str(tmp_path / "prefect-home"))
    args = ["translate", "sim@latest", "--translator", model_id, "--device", "cpu"]
    process = subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        servers: list[int] = []
        while not servers and process.poll() is None and time.monotonic() < deadline:
            servers = _live_children(process.pid)
            time.sleep(0.05)
        assert servers, "the embedded Prefect server should be a child of the command"
        process.kill()  # kill -9, as the OOM killer would
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in servers):
            time.sleep(0.2)
        left = [p for p in servers if Path(f"/proc/{p}").exists()]
        for pid in left:
            os.kill(pid, 9)
        assert left == [], "the embedded Prefect server outlived a translate killed with kill -9"
    finally:
        process.kill()
        process.wait()
