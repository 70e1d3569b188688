"""The kinds of translator the registry holds, in an explicit table: how each is built from its card.

A registry card's ``kind`` names an entry here (``translator``: the MUNIT-style teacher; ``student``: a
distilled :class:`~sim2real.models.translator.student.StudentTranslator`). Each entry builds the network
from the card's ``config``, says which of its parameters the sim → real path uses, and exposes that path
as ``translate`` (B×3×H×W in [-1, 1] → same). :func:`register_kind` refuses duplicates and
:func:`get_kind` raises ``ValueError`` naming an unknown kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from sim2real.models.named_registry import NamedRegistry
from sim2real.models.translator.config import TranslatorConfig
from sim2real.models.translator.distill import DistillConfig
from sim2real.models.translator.model import Translator, build_translator
from sim2real.models.translator.student import FLOPS_FRAME_SIZE, build_student, count_flops


class TranslatingModule(Protocol):
    """What every kind's network offers: the sim → real path and the input stride it needs."""

    stride: int

    def translate(self, sim: torch.Tensor) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Any: ...


@dataclass(frozen=True)
class TranslatorKind:
    """How to build one kind of translator and which modules its inference path runs."""

    name: str
    build: Callable[[Mapping[str, Any]], nn.Module]  # card["config"] → fresh network
    inference_modules: Callable[[Any], list[nn.Module]]  # network → the modules ``translate`` uses


KINDS: NamedRegistry[TranslatorKind] = NamedRegistry("translator kind")


def register_kind(kind: TranslatorKind) -> TranslatorKind:
    """Add ``kind`` to the table; ``ValueError`` when its name is taken."""
    return KINDS.add(kind.name, kind)


def get_kind(name: str) -> TranslatorKind:
    """The table entry of ``name``; ``ValueError`` naming the known kinds when there is none."""
    return KINDS.get(name)


def _teacher_inference(model: Translator) -> list[nn.Module]:
    return [model.sim.content, model.real.decoder]


register_kind(
    TranslatorKind(
        "translator",
        lambda config: build_translator(TranslatorConfig.model_validate(config)),
        _teacher_inference,
    )
)
register_kind(
    TranslatorKind(
        "student",
        lambda config: build_student(DistillConfig.model_validate(config).student),
        lambda model: [model],
    )
)


def footprint(card: Mapping[str, Any], size: tuple[int, int] = FLOPS_FRAME_SIZE) -> dict[str, Any]:
    """``gflops_per_frame`` of the card's sim → real path on one frame of ``size`` (height, width) and
    its ``parameters`` (that path's only), from the card's config alone (built on the meta device)."""
    kind = get_kind(str(card.get("kind", "translator")))
    with torch.device("meta"):
        model: Any = kind.build(card["config"])
    flops = count_flops(model.translate, *size)
    parameters = sum(p.numel() for module in kind.inference_modules(model) for p in module.parameters())
    return {"gflops_per_frame": round(flops / 1e9, 4), "parameters": int(parameters), "kind": kind.name}


def model_from_weights(
    weights: Mapping[str, torch.Tensor],
    card: Mapping[str, Any],
    device: torch.device | str = "cpu",
    source: str = "<weights>",
) -> Any:
    """The eval-mode network of ``card`` on ``device`` with ``weights`` loaded.

    Raises ``ValueError`` naming ``source`` when the weights do not fit the card's config.
    """
    kind = get_kind(str(card.get("kind", "translator")))
    try:
        model = kind.build(card["config"])
        model.load_state_dict(dict(weights))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(f"{source}: weights do not fit the {kind.name} config: {exc}") from exc
    return model.to(torch.device(device)).eval()
