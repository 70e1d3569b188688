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
from sim2real.models.translator.model import Translator
from sim2real.models.translator.student import StudentTranslator
from sim2real.models.translator.training import TrainingState, new_training_state


def restore_training_state(
    data: bytes, device: torch.device | str, source: str = "<bytes>"
) -> tuple[TrainingState, TranslatorConfig]:
    """Rebuild the training state saved by :func:`~.fit.checkpoint_bytes` (``weights_only=True``)."""
    what = "translator training"
    return restore_checkpoint(data, device, TranslatorConfig, new_training_state, source, what)


def translator_weights(translator: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Inference weights of a translator of any kind (a student too): its state dict as contiguous CPU
    tensors (safetensors-ready)."""
    return {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in translator.state_dict().items()
    }


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
    try:
        model = model_from_weights(weights, card, device, source=registry.path(translator_id))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    if isinstance(model, Translator) and torch.device(device).type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, card
