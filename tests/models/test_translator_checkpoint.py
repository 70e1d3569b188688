"""Translator checkpoints: registry round trip and resuming a crashed training run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sim2real.models.translator.checkpoint import load_translator, restore_training_state, translator_weights
from sim2real.models.translator.data import translator_batches
from sim2real.models.translator.fit import CheckpointError, checkpoint_bytes
from sim2real.models.translator.inference import translate_batch
from sim2real.models.translator.training import new_training_state, run_training
from sim2real.storage.registry import TranslatorRegistry

from .test_translator import cycle, tiny_config, toy_frames

pytestmark = pytest.mark.usefixtures("one_thread")


def batches(config, seed=0):
    return translator_batches(
        cycle(toy_frames(0, 6, False)), cycle(toy_frames(1, 6, True)), config.train, seed
    )


def test_registry_round_trip_gives_identical_outputs(tmp_path):
    config = tiny_config()
    state = new_training_state(config, "cpu")
    run_training(state, batches(config), config, "cpu", until_step=3)
    images = torch.rand(2, 3, 29, 41)
    before = translate_batch(state.translator, images)
    registry = TranslatorRegistry(str(tmp_path))
    model_id = registry.save(
        translator_weights(state.translator), {"config": config.model_dump(mode="json"), "steps": state.step}
    )
    model, card = load_translator(registry, model_id, "cpu")
    assert card["steps"] == 3 and not model.training
    assert torch.equal(translate_batch(model, images), before)
    assert torch.equal(model.real_style, state.translator.real_style)


class Crash(RuntimeError):
    pass


def crashing(iterator, after: int):
    for i, item in enumerate(iterator):
        if i == after:
            raise Crash(f"simulated crash after {after} batches")
        yield item


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_resume_after_crash_continues_from_saved_step(tmp_path):
    config = tiny_config()  # checkpoint_every=5
    path = tmp_path / "checkpoint.pt"
    state = new_training_state(config, "cpu")
    saved_steps = []

    def save(s):
        write_atomic(path, checkpoint_bytes(s, config))
        saved_steps.append(s.step)

    with pytest.raises(Crash):
        run_training(
            state, crashing(batches(config), after=7), config, "cpu", until_step=12, on_checkpoint=save
        )
    assert saved_steps == [5] and state.step == 7

    resumed, resumed_config = restore_training_state(path.read_bytes(), "cpu", source=str(path))
    assert resumed.step == 5 and resumed_config == config
    assert resumed.gen_optimizer.state_dict()["state"], "optimizer moments are restored"
    assert resumed.gen_scheduler.last_epoch == 5
    rows = run_training(resumed, batches(config, seed=1), config, "cpu", until_step=12, on_checkpoint=save)
    assert [r["step"] for r in rows] == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]
    assert saved_steps == [5, 10, 12]
    final, _ = restore_training_state(path.read_bytes(), "cpu")
    assert final.step == 12


def test_restoring_garbage_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        restore_training_state(b"not a checkpoint", "cpu", source="ckpt.pt")
