"""Where models run: the one place that turns a device name into a ``torch.device``."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Raises ``RuntimeError`` naming the device when CUDA is asked for and not available.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r}: CUDA is not available on this machine")
    return resolved
