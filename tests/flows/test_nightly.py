"""The nightly flow on toy data, twice with new frames in between (embedded Prefect, CPU, tiny sizes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sim2real.flows.ingest import ingest_flow
from sim2real.flows.nightly import NightlyParams, nightly_flow
from sim2real.flows.promotion import promote_flow
from sim2real.flows.translate import TranslateConfig
from sim2real.models.metrics.gate import GateConfig, QualityReport, check_gate
from sim2real.models.metrics.translation import (
    RealismConfig,
    ReferenceSegmenterConfig,
    TranslationMetricsConfig,
)
from sim2real.models.translator.checkpoint import translator_weights
from sim2real.models.translator.config import GeneratorConfig, TrainConfig, TranslatorConfig
from sim2real.models.translator.model import build_translator
from sim2real.storage.promotion import read_gate
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.sources.toysim import ToySimConfig, write_export
from sim2real.storage.versions import DatasetStore

pytestmark = pytest.mark.usefixtures("prefect_harness")


def promote_translator(root: str, translator_id: str) -> None:
    TranslatorRegistry(root).set_alias("production", translator_id)


def resolve_translator(root: str, ref: str) -> str:
    return TranslatorRegistry(root).resolve(ref)


SIZE = {"height": 32, "width": 64}
FIRST, ADDED = 6, 4
LAX = GateConfig(min_label_fidelity=None, min_detail_retention=-1.0, max_realism_ratio=1e6)
STRICT = GateConfig(min_label_fidelity=0.99, min_detail_retention=0.99, max_realism_ratio=0.01)
QUALITY = TranslationMetricsConfig(
    frames=4,
    batch_size=4,
    segmenter=ReferenceSegmenterConfig(
        aspp_channels=8,
        low_level_channels=4,
        decoder_channels=8,
        steps=2,
        batch_size=2,
        crop_height=32,
        crop_width=32,
    ),
    realism=RealismConfig(levels=2, patch_size=5, patches_per_image=16, projections=32),
)


def register_tiny_translator(root: str) -> str:
    """A randomly initialised tiny translator in the registry (weights do not matter to the pipeline)."""
    torch.manual_seed(0)
    config = TranslatorConfig(
        gen=GeneratorConfig(dim=8, style_dim=4, n_downsample=2, n_res=1, mlp_dim=16, style_n_downsample=2),
        train=TrainConfig(crop_height=32, crop_width=32),
    )
    model = build_translator(config)
    with torch.no_grad():
        model.real_style.normal_()
    return TranslatorRegistry(root).save(
        translator_weights(model), {"config": config.model_dump(mode="json")}
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A root with real train/val versions, a promoted tiny translator and a sim export of 6 frames."""
    tmp = tmp_path_factory.mktemp("nightly")
    root = str(tmp / "root")
    for name, seed, frames in (("real", 11, 8), ("real-val", 12, 4)):
        write_export(tmp / name, ToySimConfig(style="real", seed=seed, **SIZE), frames)
        ingest_flow(str(tmp / name), name, root=root)
    promote_translator(root, register_tiny_translator(root))
    write_export(tmp / "sim", ToySimConfig(style="sim", seed=3, **SIZE), FIRST)
    return {"root": root, "export": tmp / "sim"}


def params(world: dict[str, Any], gate: GateConfig) -> NightlyParams:
    return NightlyParams(
        source_dir=str(world["export"]),
        real="real@latest",
        val="real-val@latest",
        profile="tiny",
        tasks=["segmentation"],
        gate=gate,
        quality=QUALITY,
        translate=TranslateConfig.model_validate(
            {"pipeline": {"batch_size": 4, "decode_workers": 0}, "engine": {"device": "cpu"}}
        ),
        root=world["root"],
    )


def test_two_nights_translate_only_new_frames_and_gate_failures_are_not_promoted(
    world: dict[str, Any],
) -> None:
    store = DatasetStore(world["root"])

    first = nightly_flow(params(world, LAX))
    assert first["status"] == "promoted", first
    assert first["new_frames"] == FIRST
    assert store.open("sim-translated@production").ref == first["translated"]
    assert store.open(first["translated"]).num_samples == FIRST
    assert read_gate(world["root"], first["translated"])["passed"] is True

    write_export(Path(world["export"]), ToySimConfig(style="sim", seed=3, **SIZE), ADDED, start=FIRST)
    second = nightly_flow(params(world, STRICT))
    assert second["status"] == "not-promoted", second
    assert second["new_frames"] == ADDED
    translated = store.open(second["translated"])
    assert translated.num_samples == ADDED  # only tonight's frames were translated
    first_keys = set(store.open(first["translated"]).manifest()["key"].to_pylist())
    assert first_keys.isdisjoint(translated.manifest()["key"].to_pylist())
    assert store.open("sim-translated@production").ref == first["translated"]  # alias unchanged
    assert second["reasons"] and any("label fidelity" in r for r in second["reasons"])
    gate = read_gate(world["root"], second["translated"])
    assert gate["passed"] is False and gate["reasons"] == second["reasons"]

    with pytest.raises(PermissionError, match="failed the quality gate"):
        promote_flow(second["translated"], root=world["root"])
    forced = promote_flow(second["translated"], force=True, root=world["root"])
    assert forced["forced"] and store.open("sim-translated@production").ref == second["translated"]

    third = nightly_flow(params(world, LAX))
    assert (third["status"], third["new_frames"]) == ("no-new-frames", 0)


def test_gate_explains_each_failed_check() -> None:
    report = QualityReport(label_fidelity=0.5, detail_retention=None, realism_ratio=1.2)
    decision = check_gate(
        report, GateConfig(min_label_fidelity=0.6, min_detail_retention=0.3, max_realism_ratio=1.0)
    )
    assert not decision.passed
    assert decision.reasons == [
        "label fidelity 0.500 is not >= 0.6",
        "detail retention was not measured (needs >= 0.3)",
        "realism ratio 1.200 is not <= 1.0",
    ]
    off = GateConfig(min_label_fidelity=None, min_detail_retention=None, max_realism_ratio=None)
    assert check_gate(report, off).passed
    assert not check_gate(report, off.model_copy(update={"min_gain_points": 0.0}), gain_points=-1.5).passed


def test_translator_alias_resolves(tmp_path: Path) -> None:
    root = str(tmp_path)
    model_id = register_tiny_translator(root)
    assert resolve_translator(root, "latest") == model_id
    with pytest.raises(LookupError):
        resolve_translator(root, "production")
    promote_translator(root, model_id)
    assert resolve_translator(root, "production") == resolve_translator(root, model_id) == model_id


def test_cli_nightly_runs_embedded_and_clean(tmp_path: Path) -> None:
    """`sim2real nightly` with nothing new and no server configured: no traceback, no ERROR line."""
    import json
    import os
    import subprocess
    import sys

    root = tmp_path / "root"
    for name, style in (("sim", "sim"), ("real", "real"), ("real-val", "real")):
        write_export(tmp_path / name, ToySimConfig(style=style, seed=4, **SIZE), 2)
        ingest_flow(str(tmp_path / name), name, root=str(root))
    version = DatasetStore(str(root)).open("sim@latest").version
    promote_translator(str(root), register_tiny_translator(str(root)))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # embedded: no server configured
    env["SIM2REAL_ROOT"] = str(root)
    cli = [sys.executable, "-c", "from sim2real.flows.cli import main; main()"]

    def run(*args: str) -> dict[str, Any]:
        done = subprocess.run([*cli, *args, "--json"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "ERROR" not in done.stderr, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    nightly = run(
        "nightly", "--source-dir", str(tmp_path / "sim"), "--real", "real@latest", "--val", "real-val@latest"
    )
    assert (nightly["status"], nightly["new_frames"]) == ("no-new-frames", 0)
    assert [v.version for v in DatasetStore(str(root)).list_versions("sim")] == [version]  # nothing new made
