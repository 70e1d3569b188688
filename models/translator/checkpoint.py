"""Translator checkpoints: explicit training dicts (resume) and inference weights (registry).

Training checkpoints are ``torch.save`` of a plain dict (networks, optimizers, schedulers, step, config)
read back with ``weights_only=True``. Where the bytes go (atomic writes, object stores) is the caller's
business; this module only turns state into bytes and back.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Protocol

import torch

from sim2real.models.translator.config import TranslatorConfig
from sim2real.models.translator.kinds import model_from_weights
from sim2real.models.translator.model import Translator, build_translator
from sim2real.models.translator.student import StudentTranslator
from sim2real.models.translator.training import TrainingState, new_training_state


class CheckpointError(ValueError):
    """A checkpoint or weight file cannot be used; the message names it and says why."""


def checkpoint_bytes(state: TrainingState, config: TranslatorConfig) -> bytes:
    """The training checkpoint of ``state`` as ``torch.save`` bytes."""
    payload = {
        "translator": state.translator.state_dict(),
        "discriminators": state.discriminators.state_dict(),
        "gen_optimizer": state.gen_optimizer.state_dict(),
        "dis_optimizer": state.dis_optimizer.state_dict(),
        "gen_scheduler": state.gen_scheduler.state_dict(),
        "dis_scheduler": state.dis_scheduler.state_dict(),
        "step": state.step,
        "config": config.model_dump(mode="json"),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def restore_training_state(
    data: bytes, device: torch.device | str, source: str = "<bytes>"
) -> tuple[TrainingState, TranslatorConfig]:
    """Rebuild the training state saved by :func:`checkpoint_bytes` (``weights_only=True``)."""
    try:
        payload = torch.load(io.BytesIO(data), map_location=torch.device(device), weights_only=True)
        config = TranslatorConfig.model_validate(payload["config"])
        state = new_training_state(config, device)
        state.translator.load_state_dict(payload["translator"])
        state.discriminators.load_state_dict(payload["discriminators"])
        state.gen_optimizer.load_state_dict(payload["gen_optimizer"])
        state.dis_optimizer.load_state_dict(payload["dis_optimizer"])
        state.gen_scheduler.load_state_dict(payload["gen_scheduler"])
        state.dis_scheduler.load_state_dict(payload["dis_scheduler"])
        state.step = int(payload["step"])
    except (KeyError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{source}: not a translator training checkpoint: {exc}") from exc
    return state, config


def translator_weights(translator: Translator) -> dict[str, torch.Tensor]:
    """Inference weights: the translator's state dict as contiguous CPU tensors (safetensors-ready)."""
    return {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in translator.state_dict().items()
    }


def translator_from_weights(
    weights: dict[str, torch.Tensor],
    config: dict[str, Any] | TranslatorConfig,
    device: torch.device | str = "cpu",
    source: str = "<weights>",
) -> Translator:
    """A translator in eval mode on ``device`` from :func:`translator_weights` output and its config."""
    try:
        cfg = config if isinstance(config, TranslatorConfig) else TranslatorConfig.model_validate(config)
        model = build_translator(cfg)
        model.load_state_dict(weights)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{source}: weights do not fit the translator config: {exc}") from exc
    model = model.to(torch.device(device)).eval()
    if torch.device(device).type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


class WeightRegistry(Protocol):
    """What :func:`load_translator` needs from ``sim2real.storage.registry.TranslatorRegistry``."""

    def read(self, model_id: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...

    def path(self, model_id: str) -> str: ...


def load_translator(
    registry: WeightRegistry, translator_id: str, device: torch.device | str = "cpu"
) -> tuple[Translator | StudentTranslator, dict[str, Any]]:
    """Load registry entry ``translator_id`` as an eval-mode network on ``device``, with its card: a
    :class:`Translator`, or the network of the card's ``kind`` (a distilled student) when it names one."""
    weights, card = registry.read(translator_id)
    source = registry.path(translator_id)
    if card.get("kind", "translator") != "translator":
        try:
            return model_from_weights(weights, card, device, source=source), card
        except ValueError as exc:
            raise CheckpointError(str(exc)) from exc
    model = translator_from_weights(weights, card["config"], device, source=source)
    return model, card
