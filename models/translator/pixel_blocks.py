"""uint8 pixels ↔ a CPU bf16 graph's tensors, with space-to-depth folded into the same pass.

The engine feeds a CPU bf16 graph ``bf16(2·v/255 − 1)`` for each uint8 level v and turns its output o
into ``round(255·clamp((o + 1)/2, 0, 1))`` (:func:`to_levels`). Both are functions of 8 or 16 bits, so
each is a table (:data:`INPUT_CODES`, :data:`OUTPUT_LEVELS`) built with the same torch arithmetic: the
same values as computing them. A distilled student starts with ``pixel_unshuffle`` and ends with
``pixel_shuffle`` (pure permutations), which fold into the same pass.

:func:`to_blocks` and :func:`from_blocks` run in C (``_pixel_blocks.c``, built by ``pip install``,
without the GIL) or, where it was not built, in numpy: the same values either way.
"""

from __future__ import annotations

import numpy as np
import torch

try:  # the C loops, built by `pip install`; numpy below computes the same values without them
    from sim2real.models.translator import _pixel_blocks
except ImportError:  # pragma: no cover - a source tree used without installing
    _pixel_blocks = None


def to_levels(out: torch.Tensor) -> torch.Tensor:
    """The graph's output in [-1, 1] (any float dtype) → uint8 levels, ``round(255 · (out + 1) / 2)``
    clamped, computed in float32 in place."""
    return out.float().add_(1).div_(2).clamp_(0, 1).mul_(255).round_().to(torch.uint8)


#: The graph's input for each uint8 level v, ``bf16(2 · v/255 − 1)``, as bfloat16 bit patterns.
INPUT_CODES: np.ndarray = (
    (torch.arange(256, dtype=torch.float32).div_(255).mul_(2).sub_(1).to(torch.bfloat16).view(torch.int16))
    .numpy()
    .view(np.uint16)
)

#: :func:`to_levels` of every bfloat16 value, indexed by its bit pattern.
OUTPUT_LEVELS: np.ndarray = to_levels(
    torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
).numpy()


def to_blocks(rgb: np.ndarray, block: int) -> np.ndarray:
    """B×H×W×3 uint8 (H, W divisible by ``block`` = r) → B×H/r×W/r×3r² uint16 bf16 codes of the graph's
    input, channels in ``pixel_unshuffle``'s order (colour, row offset, column offset)."""
    frames, height, width, _ = rgb.shape
    rows, cols = height // block, width // block
    out = np.empty((frames, rows, cols, 3 * block * block), np.uint16)
    if _pixel_blocks is not None:
        _pixel_blocks.convert(np.ascontiguousarray(rgb), out, INPUT_CODES, frames, rows, cols, block, True)
        return out
    out[...] = INPUT_CODES[space_to_depth_view(rgb, block)].reshape(out.shape)
    return out


def from_blocks(codes: np.ndarray, block: int) -> np.ndarray:
    """B×h×w×3r² uint16 bf16 codes of the graph's output → B×hr×wr×3 uint8 levels (:data:`OUTPUT_LEVELS`),
    channels read in ``pixel_shuffle``'s order."""
    frames, rows, cols, _ = codes.shape
    out = np.empty((frames, rows * block, cols * block, 3), np.uint8)
    if _pixel_blocks is not None:
        _pixel_blocks.convert(
            np.ascontiguousarray(codes), out, OUTPUT_LEVELS, frames, rows, cols, block, False
        )
        return out
    out[...] = OUTPUT_LEVELS[depth_to_space_view(codes, block)].reshape(out.shape)
    return out


def space_to_depth_view(rgb: np.ndarray, block: int) -> np.ndarray:
    """B×H×W×3 → a B×H/r×W/r×3×r×r view: per block, ``pixel_unshuffle``'s channel order (colour, row
    offset, column offset; r = ``block``)."""
    frames, height, width, _ = rgb.shape
    return rgb.reshape(frames, height // block, block, width // block, block, 3).transpose(0, 1, 3, 5, 2, 4)


def depth_to_space_view(blocks: np.ndarray, block: int) -> np.ndarray:
    """B×h×w×3r² (``pixel_shuffle``'s channel order) → a B×h×r×w×r×3 view: reshaped, the B×hr×wr×3 image."""
    frames, rows, cols, _ = blocks.shape
    return blocks.reshape(frames, rows, cols, 3, block, block).transpose(0, 1, 4, 2, 5, 3)


def bf16_tensor(codes: np.ndarray) -> torch.Tensor:
    """B×h×w×C uint16 bf16 codes → the B×C×h×w bfloat16 tensor they are (channels-last, no copy)."""
    return torch.from_numpy(codes.view(np.int16)).view(torch.bfloat16).permute(0, 3, 1, 2)


def bf16_codes(tensor: torch.Tensor) -> np.ndarray:
    """A B×C×h×w bfloat16 CPU tensor → its B×h×w×C uint16 codes (no copy when channels-last)."""
    return tensor.permute(0, 2, 3, 1).view(torch.int16).numpy().view(np.uint16)
