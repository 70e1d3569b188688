"""The student's uint8 space-to-depth path: the engine's pixels bit for bit, permuted as bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sim2real.models.translator.engine import TranslatorEngine
from sim2real.models.translator.engine_config import EngineConfig, native_bf16
from sim2real.models.translator.student import StudentConfig, build_student
from sim2real.models.translator.student_pixels import StudentPixels
from sim2real.storage.sources.toysim import ToySimConfig, render_frame

pytestmark = pytest.mark.usefixtures("one_thread")

PRECISIONS = ["fp32", *(["bf16"] if native_bf16(torch.device("cpu")) else [])]


def trained_like_student(**fields) -> torch.nn.Module:
    """A small student with random weights scaled so its outputs span the whole pixel range."""
    torch.manual_seed(3)
    student = build_student(StudentConfig(channels=(8, 16), n_res=1, **fields)).eval()
    with torch.no_grad():
        student.head.weight.mul_(4)
    return student


def frames(batch: int, height: int, width: int) -> torch.Tensor:
    """``batch`` toy-sim frames as the read step hands them over: B×3×H×W views of B×H×W×3 memory."""
    rgb = np.stack(
        [render_frame(ToySimConfig("sim", height=height, width=width, seed=i), i).rgb for i in range(batch)]
    )
    return torch.from_numpy(rgb).permute(0, 3, 1, 2)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", [(4, 32, 64), (1, 16, 16), (3, 21, 45)])
def test_student_pixels_equal_the_whole_graph_bit_for_bit(precision: str, shape: tuple[int, int, int]):
    engine = TranslatorEngine(
        trained_like_student(), EngineConfig(device="cpu", precision=precision, forward_threads=1)
    )
    assert engine._student_pixels is not None, "an eager CPU student takes the uint8 path"
    images = frames(*shape)
    fast = engine.pixels(images)
    engine._student_pixels = None  # the whole graph: pixel_unshuffle, trunk, pixel_shuffle on tensors
    reference = engine.pixels(images)
    engine.close()
    assert fast.shape == (shape[0], shape[1], shape[2], 3) and fast.dtype == torch.uint8
    assert torch.equal(fast, reference)
    assert len(torch.unique(fast)) > 64, "outputs span many levels: the comparison covers real values"


def test_trunk_between_space_to_depth_and_depth_to_space_is_the_forward():
    student = trained_like_student()
    x = torch.rand(2, 3, 32, 64) * 2 - 1
    with torch.no_grad():
        expected = student(x)
        rebuilt = F.pixel_shuffle(student.trunk(F.pixel_unshuffle(x, student.space_to_depth)), 4)
    assert torch.equal(expected, rebuilt)


def test_an_input_skip_student_keeps_the_whole_graph():
    student = trained_like_student(input_skip=True)
    with pytest.raises(ValueError, match="input_skip"):
        StudentPixels(student, torch.float32, torch.contiguous_format)
    engine = TranslatorEngine(student, EngineConfig(device="cpu", precision="fp32", forward_threads=1))
    assert engine._student_pixels is None
    images = frames(2, 32, 64)
    with torch.no_grad():
        expected = student(images.float() / 255 * 2 - 1)
    pixels = engine.pixels(images)
    engine.close()
    levels = ((expected.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert (pixels.int() - levels.int()).abs().max() <= 1  # fp32 rounding order only
