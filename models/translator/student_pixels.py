"""A student's CPU forward pass on uint8 pixels, with its space-to-depth and depth-to-space done on bytes.

:class:`~sim2real.models.translator.student.StudentTranslator` starts with ``pixel_unshuffle`` of its
input and ends with ``pixel_shuffle`` of its head's output. Run as a graph, both are copies of bf16
tensors in torch's channels-last kernels (0.37 and 0.22 ms per 128×256 frame on one core). Both are
pure permutations of values and the pixel conversions on either side are element-wise, so they
commute: :class:`StudentPixels` folds the permutations into the conversions and runs only the
student's :meth:`~sim2real.models.translator.student.StudentTranslator.trunk`. The convolutions see
the same tensors (values and layout) as the whole graph's, so the pixels are bit-identical to
:meth:`TranslatorEngine.pixels` on the whole graph (``tests/models/test_student_pixels.py``).
"""

from __future__ import annotations

import numpy as np
import torch

from sim2real.models.translator.inference import padded_size
from sim2real.models.translator.pixel_blocks import (
    bf16_codes,
    bf16_tensor,
    depth_to_space_view,
    from_blocks,
    space_to_depth_view,
    to_blocks,
    to_levels,
)
from sim2real.models.translator.student import StudentTranslator


class StudentPixels:
    """``student`` (cast to ``dtype``, in ``memory_format``) as uint8 B×3×H×W → uint8 B×H×W×3, on CPU.

    In bf16, the permutations and conversions on either side are one pass each
    (:mod:`~sim2real.models.translator.pixel_blocks`); in float32, numpy permutes the uint8 pixels
    and torch converts them. Frames whose height or width is not a multiple of the student's stride are
    edge-padded as uint8 (the same values as padding the scaled input) and cropped back.
    """

    def __init__(
        self, student: StudentTranslator, dtype: torch.dtype, memory_format: torch.memory_format
    ) -> None:
        if student.input_skip:
            raise ValueError("StudentPixels: a student with input_skip adds its full-resolution input")
        self.student = student
        self.block = student.space_to_depth
        self.dtype = dtype
        self.memory_format = memory_format

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """B×3×H×W uint8 (CPU, any strides) → B×H×W×3 uint8, C-contiguous."""
        rgb = images.permute(0, 2, 3, 1).numpy()
        frames, height, width, _ = rgb.shape
        padded_h, padded_w = padded_size(height, width, self.student.stride)
        if (padded_h, padded_w) != (height, width):
            pad = ((0, 0), (0, padded_h - height), (0, padded_w - width), (0, 0))
            rgb = np.pad(rgb, pad, mode="edge")
        pixels = self._bf16(rgb) if self.dtype == torch.bfloat16 else self._float(rgb)
        if (padded_h, padded_w) != (height, width):
            pixels = np.ascontiguousarray(pixels[:, :height, :width])
        return pixels

    def _bf16(self, rgb: np.ndarray) -> np.ndarray:
        x = bf16_tensor(to_blocks(rgb, self.block)).contiguous(memory_format=self.memory_format)
        return from_blocks(bf16_codes(self.student.trunk(x)), self.block)

    def _float(self, rgb: np.ndarray) -> np.ndarray:
        frames, height, width, _ = rgb.shape
        r = self.block
        blocks = np.ascontiguousarray(space_to_depth_view(rgb, r))
        blocks = blocks.reshape(frames, height // r, width // r, 3 * r * r)
        x = torch.from_numpy(blocks).permute(0, 3, 1, 2).to(torch.float32).div_(255).mul_(2).sub_(1)
        out = self.student.trunk(x.to(self.dtype, memory_format=self.memory_format))
        levels = to_levels(out.permute(0, 2, 3, 1)).numpy()
        return np.ascontiguousarray(depth_to_space_view(levels, r)).reshape(frames, height, width, 3)
