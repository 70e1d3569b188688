"""Pretrained backbone weights as users have them on disk; never a download.

A spec is either a path to a torchvision state-dict file (``torch.save(model.state_dict(), path)``,
e.g. ``resnet18-f37072fd.pth``) or a torchvision weights name (``ResNet18_Weights.IMAGENET1K_V1``,
``ResNet18_Weights.DEFAULT``) resolved to the file torchvision itself would have cached:
``$TORCH_HOME/hub/checkpoints/<basename of the weights' URL>``. Only the file is read (``torch.load``
with ``weights_only=True``); torchvision's own loader (which downloads) is never called.

The state dict of a whole classification network fits the backbone: keys the backbone lacks (the
classifier ``fc.*`` / ``classifier.*``) are ignored, a ``features.`` prefix is matched (MobileNet);
every backbone tensor must be present with its shape and nothing else may be left over (a deeper
network of the same family), otherwise the file is refused.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_weight

#: Keys of a classification network that are not backbone (the classifier head): ignored when present.
HEAD_PREFIXES = ("fc.", "classifier.")


class BackboneWeightsError(ValueError):
    """A weights spec that cannot be used; the message names the file (or name) and the reason."""


def resolve(spec: str) -> Path:
    """The file of ``spec`` (a path, or a torchvision weights name looked up in the hub cache).

    Raises :class:`BackboneWeightsError` naming the file when it does not exist.
    """
    path = Path(spec).expanduser()
    if not path.exists() and "_Weights." in spec and "/" not in spec:
        try:
            weights = get_weight(spec)
        except (ValueError, KeyError, AttributeError) as exc:
            raise BackboneWeightsError(f"{spec}: not a torchvision weights name ({exc})") from exc
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not path.is_file():
            raise BackboneWeightsError(
                f"{path}: no such file for torchvision weights {spec} (looked in the local hub cache "
                "$TORCH_HOME/hub/checkpoints; nothing is downloaded: copy the file there)"
            )
        return path
    if not path.is_file():
        raise BackboneWeightsError(f"{path}: no such backbone weights file")
    return path


def digest(spec: str) -> str:
    """sha256 (first 16 hex digits) of the resolved weights file: a changed file is a new model."""
    sha = hashlib.sha256()
    with resolve(spec).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def read_state_dict(spec: str) -> dict[str, torch.Tensor]:
    """The tensors of the weights file (``weights_only=True``); refuses anything but a state dict."""
    path = resolve(spec)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BackboneWeightsError(f"{path}: not a torch state-dict file ({type(exc).__name__})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise BackboneWeightsError(f"{path}: not a state dict of named tensors")
    return state


def load_into(backbone: nn.Module, spec: str) -> None:
    """Copy the weights of ``spec`` into ``backbone`` (a torchvision body: ResNet or MobileNet features).

    Raises :class:`BackboneWeightsError` naming the file when a backbone tensor is missing or has
    another shape (the file is for another architecture).
    """
    path = resolve(spec)
    state = read_state_dict(spec)
    own = backbone.state_dict()
    if not any(key in state for key in own) and any(k.startswith("features.") for k in state):
        state = {k.removeprefix("features."): v for k, v in state.items()}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise BackboneWeightsError(
            f"{path}: {len(missing)} of {len(own)} backbone tensors missing (e.g. {missing[0]!r}): "
            "weights for another architecture?"
        )
    extra = [k for k in state if k not in own and not k.startswith(HEAD_PREFIXES)]
    if extra:
        raise BackboneWeightsError(
            f"{path}: {len(extra)} tensors the backbone does not have (e.g. {extra[0]!r}): "
            "weights for another architecture?"
        )
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if wrong:
        key = wrong[0]
        raise BackboneWeightsError(
            f"{path}: tensor {key!r} is {tuple(state[key].shape)}, the backbone needs {tuple(own[key].shape)}"
        )
    backbone.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
