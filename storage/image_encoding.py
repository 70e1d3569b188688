"""How translated images are stored: PNG (our row-filter writer or PIL's) or JPEG, deterministically.

Same pixels and settings, same bytes: no timestamps, fixed zlib/libjpeg settings. The defaults (PNG,
``paeth`` on every row, zlib ``rle``) were chosen by ``bench/encode.py``.
"""

from __future__ import annotations

import io
from typing import Literal, TypeAlias

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from sim2real.storage import schema
from sim2real.storage.png import RowFilter, encode_png_rgb

PngStrategy = Literal["default", "filtered", "huffman", "rle", "fixed"]
# ``adaptive``: PIL's per-row filter choice; the others: one filter for every row (``storage.png``).
PngFilter: TypeAlias = Literal["adaptive"] | RowFilter
# zlib's deflateInit2 strategy constants (Z_DEFAULT_STRATEGY … Z_FIXED), as Pillow's ``compress_type``.
PNG_STRATEGIES: dict[str, int] = {"default": 0, "filtered": 1, "huffman": 2, "rle": 3, "fixed": 4}


class EncodeConfig(BaseModel):
    """How translated images are stored (``encode:`` of the translate config); every field changes the
    output bytes. Encoding is deterministic: same pixels, same bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # format of the translated rgb member
    image_format: Literal["png", "jpg"] = Field(default="png", description="png (lossless) or jpg")
    # libjpeg quality (jpg only)
    jpeg_quality: int = Field(default=95, ge=1, le=95, description="JPEG quality, 1-95 (jpg only)")
    # zlib level (png only): higher is smaller and slower
    png_compress_level: int = Field(default=6, ge=0, le=9, description="zlib level, 0-9 (png only)")
    # zlib strategy (png only): on translated images rle writes smaller files than zlib's default
    # strategy in under a third of the time (bench/encode.py)
    png_strategy: PngStrategy = Field(default="rle", description="zlib strategy (png only)")
    # PNG row filter (png only): paeth on every row (our writer) is as small as PIL's per-row choice
    # ('adaptive') on translated images, in 30-40 % less CPU (bench/encode.py)
    png_filter: PngFilter = Field(default="paeth", description="PNG row filter, or adaptive (PIL's choice)")

    @property
    def member(self) -> str:
        """The output image member, ``rgb.png`` or ``rgb.jpg``."""
        return schema.RGB_PNG if self.image_format == "png" else schema.RGB_JPG


def encode_rgb(rgb: np.ndarray, config: EncodeConfig) -> bytes:
    """H×W×3 uint8 → PNG or JPEG bytes (fixed settings, no timestamps: deterministic)."""
    if config.image_format == "png" and config.png_filter != "adaptive":
        strategy = PNG_STRATEGIES[config.png_strategy]
        return encode_png_rgb(rgb, config.png_filter, config.png_compress_level, strategy)
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    buffer = io.BytesIO()
    if config.image_format == "png":
        image.save(
            buffer,
            format="PNG",
            compress_level=config.png_compress_level,
            compress_type=PNG_STRATEGIES[config.png_strategy],
            optimize=False,
        )
    else:
        image.save(buffer, format="JPEG", quality=config.jpeg_quality, subsampling=0, optimize=False)
    return buffer.getvalue()
