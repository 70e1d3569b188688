"""Translator checkpoints: explicit training dicts (resume) and inference weights (registry).

Training checkpoints are the one format of :mod:`~sim2real.models.translator.fit` (``checkpoint_bytes``);
inference weights are contiguous CPU tensors with a card. Where the bytes go (atomic
writes, object stores) is the caller's business; this module only turns state into bytes and back.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from sim2real.models.translator.config import TranslatorConfig
from sim2real.models.translator.fit import CheckpointError, restore_checkpoint
from sim2real.models.translator.kinds import model_from_weights
from sim2real.models.translator.model import Translator, build_translator
from sim2real.models.translator.student import StudentTranslator
from sim2real.models.translator.training import TrainingState, new_training_state


def restore_training_state(
    data: bytes, device: torch.device | str, source: str = "<bytes>"
) -> tuple[TrainingState, TranslatorConfig]:
    """Rebuild the training state saved by :func:`~.fit.checkpoint_bytes` (``weights_only=True``)."""
    what = "translator training"
    return restore_checkpoint(data, device, TranslatorConfig, new_training_state, source, what)


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
