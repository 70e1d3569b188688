"""The one training loop of the translator and of its distilled student, and their one checkpoint format.

A training state is a dataclass with a ``step`` and :meth:`components`: the networks, optimizers and
schedulers it checkpoints, by name. :func:`fit` runs a step function over batches until a step,
averaging the losses into a row every ``log_every`` steps and calling ``on_checkpoint`` every
``checkpoint_every`` steps and at the end. A checkpoint is ``torch.save`` of an explicit dict (each
component's state dict, ``step``, ``config``) read back with ``weights_only=True``; where its bytes go
is the caller's business.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import torch
from pydantic import BaseModel


class CheckpointError(ValueError):
    """A checkpoint or weight file cannot be used; the message names it and says why."""


class TrainingState(Protocol):
    """What :func:`fit` and the checkpoint functions need of a training state."""

    step: int

    def components(self) -> dict[str, Any]:
        """Name → object with ``state_dict``/``load_state_dict`` (networks, optimizers, schedulers)."""
        ...


S = TypeVar("S", bound=TrainingState)
B = TypeVar("B")
C = TypeVar("C", bound=BaseModel)


def fit(
    state: TrainingState,
    batches: Iterator[B],
    step: Callable[[B], dict[str, float]],
    until_step: int,
    log_every: int,
    checkpoint_every: int,
    on_checkpoint: Callable[[], None] | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
    what: str = "training",
) -> list[dict[str, float]]:
    """Run ``step`` (one optimizer update of ``state``, advancing ``state.step``; returns its loss
    values) on each batch until ``state.step`` reaches ``until_step``.

    Returns the logged rows: the mean of each loss over every ``log_every`` steps, with ``step``.
    Raises ``RuntimeError`` naming ``what`` when the batches run out first.
    """
    rows: list[dict[str, float]] = []
    window: list[dict[str, float]] = []
    while state.step < until_step:
        try:
            batch = next(batches)
        except StopIteration:
            raise RuntimeError(f"{what}: no data left at step {state.step}") from None
        window.append(step(batch))
        if state.step % log_every == 0 or state.step == until_step:
            row = {name: sum(w.get(name, 0.0) for w in window) / len(window) for name in window[-1]}
            row["step"] = float(state.step)
            rows.append(row)
            window = []
            if on_log is not None:
                on_log(row)
        due = state.step % checkpoint_every == 0 or state.step == until_step
        if on_checkpoint is not None and due:
            on_checkpoint()
    return rows


def checkpoint_bytes(state: TrainingState, config: BaseModel) -> bytes:
    """The training checkpoint of ``state`` as ``torch.save`` bytes of a plain dict."""
    payload: dict[str, Any] = {name: part.state_dict() for name, part in state.components().items()}
    payload.update(step=state.step, config=config.model_dump(mode="json"))
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _load(data: bytes, device: torch.device | str, source: str, what: str) -> dict[str, Any]:
    try:
        return torch.load(io.BytesIO(data), map_location=torch.device(device), weights_only=True)
    except (RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{source}: not a {what} checkpoint: {exc}") from exc


def restore_checkpoint(
    data: bytes,
    device: torch.device | str,
    config_type: type[C],
    new_state: Callable[[C, torch.device | str], S],
    source: str = "<bytes>",
    what: str = "training",
) -> tuple[S, C]:
    """Rebuild the state saved by :func:`checkpoint_bytes`: ``new_state(config, device)``, then every
    component's saved state loaded into it. Raises :class:`CheckpointError` naming ``source``."""
    payload = _load(data, device, source, what)
    try:
        config = config_type.model_validate(payload["config"])
        state = new_state(config, device)
        for name, part in state.components().items():
            part.load_state_dict(payload[name])
        state.step = int(payload["step"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: not a {what} checkpoint: {exc}") from exc
    return state, config


def checkpoint_step(data: bytes, source: str = "<bytes>", what: str = "training") -> int:
    """The step a checkpoint saved by :func:`checkpoint_bytes` reached (read on the CPU)."""
    payload = _load(data, "cpu", source, what)
    try:
        return int(payload["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a {what} checkpoint: {exc}") from exc
