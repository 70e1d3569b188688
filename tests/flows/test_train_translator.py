"""End to end: toy sim and toy real versions → train-translator flow → registry entry; crash and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from prefect.artifacts import Artifact
from typer.testing import CliRunner

from sim2real.flows.cli import app
from sim2real.flows.cli_translator import register as register_translator_commands
from sim2real.flows.train_translator import segment_stops, train_translator_flow
from sim2real.models.translator.checkpoint import load_translator
from sim2real.models.translator.inference import translate_batch
from sim2real.storage.registry import TranslatorRegistry
from sim2real.tasks import translator as translator_tasks

pytestmark = pytest.mark.usefixtures("one_thread")


def test_segment_stops():
    assert segment_stops(0, 5, 2) == [2, 4, 5]
    assert segment_stops(2, 4, 2) == [4]
    assert segment_stops(3, 4, 2) == [4]
    assert segment_stops(4, 4, 2) == []


def test_crash_resume_register_and_rerun(toy_root, monkeypatch):
    real_run_training = translator_tasks.run_training

    def crash_after_step_two(state, batches, config, device, until_step, **kwargs):
        if state.step >= 2:
            raise RuntimeError("simulated crash in the second segment")
        return real_run_training(state, batches, config, device, until_step, **kwargs)

    monkeypatch.setattr(translator_tasks, "run_training", crash_after_step_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_translator_flow(source="sim@latest", target="real@latest", root=toy_root, profile="tiny")
    monkeypatch.undo()

    runs = list((Path(toy_root) / "runs" / "translators").iterdir())
    assert len(runs) == 1
    run_dir = runs[0]
    first_rows = json.loads((run_dir / "losses.json").read_text())
    assert [r["step"] for r in first_rows] == [1, 2], "the first segment finished and was checkpointed"

    result = train_translator_flow(source="sim@latest", target="real@latest", root=toy_root, profile="tiny")
    rows = json.loads((run_dir / "losses.json").read_text())
    assert [r["step"] for r in rows] == [1, 2, 3, 4], "resumed at step 2, not restarted"
    assert rows[:2] == first_rows
    assert result["steps"] == 4 and result["source"].startswith("sim@")

    registry = TranslatorRegistry(toy_root)
    card = registry.card(result["translator"])
    assert card["data"] == {"source": result["source"], "target": result["target"], "val_fraction": 0.25}
    assert card["steps"] == 4 and card["label_aware"] == {"semantic": True, "high_frequency": True}
    summary = card["metrics"]["summary"]
    for key in (
        "fidelity_miou_translated",
        "fidelity_miou_raw_sim",
        "segmenter_miou_real",
        "realism_swd_translated",
        "realism_swd_raw_sim",
    ):
        assert key in summary
    assert summary["realism_swd_translated"] > 0 and summary["realism_swd_raw_sim"] > 0
    assert set(card["metrics"]["translated"]["flip_matrix"]) <= set(
        card["metrics"]["translated"]["fidelity"]["iou"]
    )
    model, _ = load_translator(registry, result["translator"], "cpu")
    images = torch.rand(1, 3, 31, 45)
    assert translate_batch(model, images).shape == images.shape

    key = f"translator-{result['run']}"
    losses = Artifact.get(f"{key}-losses")
    assert losses is not None and losses.type == "table" and '"step": 4' in str(losses.data)
    preview = Artifact.get(f"{key}-preview")
    assert preview is not None and "data:image/png;base64," in str(preview.data)
    assert Artifact.get(f"{key}-progress").data == 100.0
    assert Artifact.get(f"{key}-metrics") is not None

    again = train_translator_flow(source="sim@latest", target="real@latest", root=toy_root, profile="tiny")
    assert again == result, "a finished run is returned, not retrained"


def test_cli_lists_translators_and_ablation_gets_its_own_entry(toy_root):
    register_translator_commands(app)
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "train-translator",
            "--source",
            "sim@latest",
            "--target",
            "real@latest",
            "--root",
            toy_root,
            "--steps",
            "2",
            "--no-label-aware",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    ablation = json.loads(out.output.strip().splitlines()[-1])
    card = TranslatorRegistry(toy_root).card(ablation["translator"])
    assert card["label_aware"] == {"semantic": False, "high_frequency": False} and card["steps"] == 2
    listed = runner.invoke(app, ["translators", "--root", toy_root, "--json"])
    assert listed.exit_code == 0, listed.output
    ids = [row["id"] for row in json.loads(listed.output.strip().splitlines()[-1])["translators"]]
    assert ablation["translator"] in ids
