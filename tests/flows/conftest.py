"""Fixtures and helpers shared by the flow tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sim2real.models.translator.checkpoint import translator_weights
from sim2real.models.translator.config import GeneratorConfig, TrainConfig, TranslatorConfig
from sim2real.models.translator.model import Translator, build_translator
from sim2real.storage import ingest
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.sources.toysim import ToySimConfig, write_export
from sim2real.storage.versions import DatasetStore


def tiny_model() -> tuple[TranslatorConfig, Translator]:
    config = TranslatorConfig(
        gen=GeneratorConfig(dim=8, style_dim=4, n_downsample=2, n_res=1, mlp_dim=16, style_n_downsample=2),
        train=TrainConfig(crop_height=32, crop_width=32),
    )
    torch.manual_seed(0)
    model = build_translator(config)
    with torch.no_grad():
        model.real_style.normal_()
    return config, model.eval()


def canary(model: Translator) -> str:
    """This platform's float kernels: CPU capability, bf16 support and an fp32 forward pass's bytes."""
    images = torch.from_numpy(np.random.default_rng(3).random((2, 3, 32, 64), dtype=np.float32))
    with torch.inference_mode():
        out = model.translate(images * 2 - 1).add(1).mul(127.5).round().to(torch.uint8).numpy().tobytes()
    capability = torch.backends.cpu.get_cpu_capability()
    if torch.cpu._is_amx_tile_supported():  # bf16 convolutions run on AMX tiles, other kernels
        capability += "+AMX"
    return f"{capability}/{torch.__version__}/{hashlib.md5(out).hexdigest()[:12]}"


@pytest.fixture(scope="module")
def translate_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """7 toy frames ingested in shards of 4 (no Prefect) and the tiny translator in the registry."""
    tmp = tmp_path_factory.mktemp("pins")
    write_export(tmp / "export", ToySimConfig(style="sim", height=32, width=64, seed=11), 7)
    root = str(tmp / "root")
    config4 = ingest.IngestConfig(max_shard_samples=4)
    source = ingest.ingest_serially(DatasetStore(root), str(tmp / "export"), "pin", config4)
    config, model = tiny_model()
    translator = TranslatorRegistry(root).save(
        translator_weights(model), {"config": config.model_dump(mode="json"), "steps": 0}
    )
    return {"root": root, "source": source.ref, "translator": translator, "canary": canary(model)}


def ingest_toy_pair(base: Path, root: str, seeds: tuple[int, int] = (0, 1), frames: int = 12) -> None:
    """Toy ``sim`` and ``real`` exports (32×64, ``frames`` each) ingested by the ingest flow into ``root``."""
    from sim2real.flows.ingest import ingest_flow

    for style, seed in zip(("sim", "real"), seeds, strict=True):
        write_export(base / style, ToySimConfig(style=style, height=32, width=64, seed=seed), frames=frames)
        ingest_flow(source_dir=str(base / style), name=style, root=root)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> str:
    """A root with toy ``sim`` and ``real`` versions (12 frames each), one per test module."""
    base = tmp_path_factory.mktemp("toy-pair")
    root = str(base / "root")
    ingest_toy_pair(base, root)
    return root
