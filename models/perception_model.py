"""What the perception models (detector, segmenter) share: config dicts, checkpoints, the update step.

A model carries its config (a frozen dataclass with ``to_dict``/``from_dict``) as ``model.config``;
a checkpoint is ``torch.save`` of ``{"model": state dict, "config": config dict, **extra}``, read back
with ``weights_only=True`` and rebuilt without backbone weights (every weight comes from the file).
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

import torch
from torch import nn

C = TypeVar("C")
M = TypeVar("M", bound=nn.Module)
B = TypeVar("B")


def config_from_dict(cls: type[C], data: Mapping[str, Any], tuple_fields: Iterable[str] = ()) -> C:
    """Rebuild a config dataclass from :func:`config_to_dict` output; ``ValueError`` on unknown keys.
    ``tuple_fields``: fields stored as JSON lists that the dataclass holds as tuples."""
    unknown = set(data) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    values = dict(data)
    for key in tuple_fields:
        if key in values:
            values[key] = tuple(values[key])
    return cls(**values)


def config_to_dict(config: Any) -> dict:
    """Plain-types dict of a config dataclass (tuples as lists: JSON and ``weights_only`` safe)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def checkpoint_bytes(model: nn.Module, extra: dict | None = None) -> bytes:
    """A checkpoint dict (``model``, ``config``, plus ``extra``) serialised with ``torch.save``."""
    buffer = io.BytesIO()
    config = model.config.to_dict()  # type: ignore[union-attr, operator]  # detector and segmenter
    torch.save({"model": model.state_dict(), "config": config, **(extra or {})}, buffer)
    return buffer.getvalue()


def load_checkpoint(
    data: bytes, source: str, what: str, config_from: Callable[[dict], Any], build: Callable[[Any], M]
) -> M:
    """Rebuild a model from :func:`checkpoint_bytes` output: ``build(config_from(config))`` with
    ``backbone_weights`` unset, then the saved weights; ``ValueError`` naming ``source`` and ``what``."""
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = build(config_from({**checkpoint["config"], "backbone_weights": None}))
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"{source}: not a {what} checkpoint: {exc}") from exc
    return model


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> None:
    """Backpropagate ``loss`` and update: through ``scaler`` when given (AMP on CUDA), then one
    ``lr_scheduler`` step (schedulers here step per batch)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    if lr_scheduler is not None:
        lr_scheduler.step()


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: Iterable[B],
    batch_loss: Callable[[nn.Module, B, torch.device], tuple[torch.Tensor, bool]],
    device: torch.device | str,
    epoch: int,
    scaler: torch.amp.GradScaler | None = None,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, float]:
    """One pass of ``model`` over ``data_loader`` (torchvision's ``train_one_epoch`` with the model's
    ``batch_loss``: ``detector.detection_loss`` or ``segmenter.segmentation_loss``, which give the loss
    of a batch and whether it holds any label). :func:`optimizer_step` after each batch, AMP when a
    ``scaler`` is given (CUDA), ``lr_scheduler`` stepped per batch.

    A non-finite loss on a labelled batch raises ``FloatingPointError`` naming the loss, epoch and step;
    on a batch without labels it is left out of the mean. Returns ``{"epoch", "loss" (mean), "steps"}``.
    """
    model.train()
    device = torch.device(device)
    total, steps = 0.0, 0
    for batch in data_loader:
        with torch.autocast(device.type, enabled=scaler is not None):
            loss, labelled = batch_loss(model, batch, device)
        if not math.isfinite(loss.item()) and labelled:
            where = f"{getattr(batch_loss, '__name__', 'loss')}: epoch {epoch} step {steps}"
            raise FloatingPointError(f"{where}: loss is {loss.item()}")
        optimizer_step(loss, optimizer, scaler, lr_scheduler)
        if math.isfinite(loss.item()):
            total += loss.item()
        steps += 1
    return {"epoch": float(epoch), "loss": total / max(steps, 1), "steps": float(steps)}
