"""The student translator: a small paired sim → real generator distilled from a trained translator.

A shallow U-Net without normalisation layers, so a frame's output depends only on a neighbourhood of
each pixel (crops train it exactly as full frames run it):

* **space-to-depth stem** — ``pixel_unshuffle`` by ``space_to_depth`` and a 3×3 conv: every later layer
  runs at 1/``space_to_depth`` of the resolution or less;
* **encoder** — one stride-2 3×3 conv per further level (``channels`` lists the widths per level);
* **body** — ``n_res`` residual blocks (two 3×3 convs) at the coarsest level;
* **decoder** — per level a 1×1 conv to 4× the finer level's width, ``pixel_shuffle`` ×2, the encoder's
  skip added, a 3×3 conv;
* **head** — a 3×3 conv to ``3·space_to_depth²`` channels and ``pixel_shuffle`` back to full resolution;
  with ``input_skip`` added to the input (the network then learns the change of appearance and keeps
  every sim edge: a distilled demo student came out sharper than its teacher, 85 % further from real
  images by the realism distance, so the profiles leave it off).

There is no upsampling followed by a wide convolution (pixel shuffle instead) and no normalisation,
so the inference graph is the module itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: The frame size ``gflops_per_frame`` is quoted at (height, width).
FLOPS_FRAME_SIZE: tuple[int, int] = (256, 512)


class StudentConfig(BaseModel):
    """Sizes of the student network."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    space_to_depth: int = Field(default=4, ge=1, le=8, description="pixel-unshuffle factor of the stem")
    channels: tuple[int, ...] = Field(
        default=(32, 64), min_length=1, description="widths per level, finest first; each level halves H, W"
    )
    n_res: int = Field(default=2, ge=0, description="residual blocks at the coarsest level")
    input_skip: bool = Field(
        default=False,
        description="add the input to the output (keeps every sim edge: sharper than a blurring teacher)",
    )

    @model_validator(mode="after")
    def _check_channels(self) -> StudentConfig:
        if min(self.channels) < 4:
            raise ValueError(f"student channels {self.channels}: each level needs at least 4")
        return self

    @property
    def stride(self) -> int:
        """The factor an input's height and width must be divisible by (callers pad to it)."""
        return self.space_to_depth * 2 ** (len(self.channels) - 1)


def _conv3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, 1, padding_mode="replicate")


def _relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU of a fresh activation: in place without autograd (inference: the same values, one
    allocation less per layer, 6 % of the student's CPU forward), out of place when training."""
    return F.relu(x) if torch.is_grad_enabled() else x.relu_()


def _add(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh + other`` (the same values either order), into ``fresh`` without autograd."""
    return fresh + other if torch.is_grad_enabled() else fresh.add_(other)


class PlainResBlock(nn.Module):
    """Two 3×3 convs with a ReLU between and an identity shortcut (no normalisation)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = _conv3(ch, ch)
        self.conv2 = _conv3(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _relu(_add(self.conv2(_relu(self.conv1(x))), x))


class UpBlock(nn.Module):
    """Coarse features → 1×1 conv → pixel shuffle ×2 → + skip → ReLU → 3×3 conv → ReLU."""

    def __init__(self, coarse_ch: int, fine_ch: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(coarse_ch, 4 * fine_ch, 1)
        self.conv = _conv3(fine_ch, fine_ch)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = _add(F.pixel_shuffle(self.expand(coarse), 2), skip)
        return _relu(self.conv(_relu(x)))


class StudentTranslator(nn.Module):
    """Sim images B×3×H×W in [-1, 1] (H, W divisible by ``stride``) → real style, same shape and range
    (unbounded: the output may overshoot [-1, 1] slightly; callers clamp)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.space_to_depth = config.space_to_depth
        self.stride = config.stride
        widths = list(config.channels)
        self.stem = _conv3(3 * config.space_to_depth**2, widths[0])
        self.down = nn.ModuleList(
            _conv3(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.body = nn.Sequential(*(PlainResBlock(widths[-1]) for _ in range(config.n_res)))
        self.up = nn.ModuleList(UpBlock(b, a) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.head = _conv3(widths[0], 3 * config.space_to_depth**2)
        self.input_skip = config.input_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pixel_shuffle(self.trunk(F.pixel_unshuffle(x, self.space_to_depth)), self.space_to_depth)
        return x + out if self.input_skip else out

    def trunk(self, blocks: torch.Tensor) -> torch.Tensor:
        """The network between the space-to-depth and the depth-to-space: B×3r²×H/r×W/r input blocks
        (``pixel_unshuffle`` of the input by r = ``space_to_depth``) → B×3r²×H/r×W/r output blocks
        (``pixel_shuffle`` of them by r is the output, before any input skip)."""
        features = _relu(self.stem(blocks))
        skips = []
        for down in self.down:
            skips.append(features)
            features = _relu(down(features))
        features = self.body(features)
        for up, skip in zip(reversed(self.up), reversed(skips), strict=True):
            features = up(features, skip)
        return self.head(features)

    def translate(self, sim: torch.Tensor) -> torch.Tensor:
        """The same as calling the module (the interface a teacher translator offers too)."""
        return self(sim)


def build_student(config: StudentConfig) -> StudentTranslator:
    """A fresh student for ``config`` (parameters from the current torch seed)."""
    return StudentTranslator(config)


def count_flops(forward: Callable[[torch.Tensor], torch.Tensor], height: int, width: int) -> int:
    """FLOPs (2 per multiply-add of convolutions and matrix products) of ``forward`` on one 3×``height``×
    ``width`` frame, counted by ``torch.utils.flop_counter`` on a meta tensor (nothing is computed).

    ``forward`` must belong to a module built under ``torch.device("meta")``. Element-wise ops (ReLU,
    adds, norms) are not counted, as is usual for network FLOPs.
    """
    with FlopCounterMode(display=False) as counter:
        forward(torch.zeros(1, 3, height, width, device="meta"))
    return int(counter.get_total_flops())


def student_gflops_per_frame(config: StudentConfig, size: tuple[int, int] = FLOPS_FRAME_SIZE) -> float:
    """GFLOPs of one student forward pass on a frame of ``size`` (height, width)."""
    with torch.device("meta"):
        model = build_student(config)
    return count_flops(model, *size) / 1e9
