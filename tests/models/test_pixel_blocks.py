"""Pixel ↔ bf16 tables and the space-to-depth passes around a CPU graph, in C and in numpy alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sim2real.models.translator import pixel_blocks
from sim2real.models.translator.pixel_blocks import INPUT_CODES, OUTPUT_LEVELS, from_blocks, to_blocks

IMPLEMENTATIONS = ["numpy", *(["c"] if pixel_blocks._pixel_blocks is not None else [])]


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request, monkeypatch) -> str:
    if request.param == "numpy":
        monkeypatch.setattr(pixel_blocks, "_pixel_blocks", None)
    return request.param


def test_output_table_is_the_rounding_arithmetic_for_every_value():
    values = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).float().numpy()
    finite = ~np.isnan(values)
    one, two, full = np.float32(1), np.float32(2), np.float32(255)
    with np.errstate(invalid="ignore"):
        expected = np.round(np.clip((values + one) / two, 0, 1) * full).astype(np.uint8)  # half to even
    assert OUTPUT_LEVELS.shape == (65536,) and np.array_equal(OUTPUT_LEVELS[finite], expected[finite])
    known = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 7.0]).to(torch.bfloat16)
    bits = known.view(torch.int16).numpy().view(np.uint16)
    assert OUTPUT_LEVELS[bits].tolist() == [0, 0, 128, 191, 255, 255]  # 0 → 127.5 → 128; 0.5 → 191.25


def test_input_table_is_the_scaling_arithmetic_for_every_level():
    levels = np.arange(256, dtype=np.float32)
    expected = torch.from_numpy(levels / np.float32(255) * np.float32(2) - np.float32(1)).to(torch.bfloat16)
    assert np.array_equal(INPUT_CODES, expected.view(torch.int16).numpy().view(np.uint16))
    assert torch.from_numpy(INPUT_CODES[[0, 255]].view(np.int16)).view(torch.bfloat16).tolist() == [-1, 1]


@pytest.mark.parametrize("block", [1, 2, 4])
def test_to_blocks_is_pixel_unshuffle_of_the_scaled_input(implementation: str, block: int):
    rng = np.random.default_rng(block)
    rgb = rng.integers(0, 256, (2, 4 * block, 6 * block, 3), dtype=np.uint8)
    scaled = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div(255).mul(2).sub(1).to(torch.bfloat16)
    expected = F.pixel_unshuffle(scaled, block).permute(0, 2, 3, 1).contiguous()
    codes = to_blocks(rgb, block)
    assert codes.shape == (2, 4, 6, 3 * block * block) and codes.dtype == np.uint16
    assert np.array_equal(codes, expected.view(torch.int16).numpy().view(np.uint16))


@pytest.mark.parametrize("block", [1, 2, 4])
def test_from_blocks_is_pixel_shuffle_then_the_output_table(implementation: str, block: int):
    out = torch.randn(2, 3 * block * block, 5, 3, generator=torch.Generator().manual_seed(block)) * 1.5
    out = out.to(torch.bfloat16)
    codes = out.permute(0, 2, 3, 1).contiguous().view(torch.int16).numpy().view(np.uint16)
    expected = pixel_blocks.to_levels(F.pixel_shuffle(out, block)).permute(0, 2, 3, 1).numpy()
    pixels = from_blocks(codes, block)
    assert pixels.shape == (2, 5 * block, 3 * block, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, expected)
    assert 0 in pixels and 255 in pixels, "values beyond [-1, 1] are clamped"


@pytest.mark.skipif(pixel_blocks._pixel_blocks is None, reason="the C module was not built")
def test_c_passes_refuse_buffers_of_the_wrong_size():
    convert = pixel_blocks._pixel_blocks.convert
    rgb = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="to_blocks output"):
        convert(rgb, np.empty((1, 2, 2, 47), np.uint16), INPUT_CODES, 1, 2, 2, 4, True)
    codes = np.zeros((1, 2, 2, 48), np.uint16)
    with pytest.raises(ValueError, match="from_blocks table"):
        convert(codes, np.empty((1, 8, 8, 3), np.uint8), INPUT_CODES, 1, 2, 2, 4, False)
    with pytest.raises(ValueError, match="to_blocks: bad shape"):
        convert(rgb, np.empty((1, 8, 8, 3), np.uint16), INPUT_CODES, 1, 8, 8, 0, True)
    with pytest.raises(ValueError, match="bad shape"):  # a size product that overflows (was a segfault)
        convert(
            np.zeros((1, 2, 2, 3), np.uint8),
            np.zeros((1, 1, 1, 12), np.uint16),
            INPUT_CODES,
            1,
            2**62 + 1,
            1,
            2,
            True,
        )
