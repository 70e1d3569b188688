"""How translated images are stored: PNG (our row-filter writer or PIL's) or JPEG, deterministically.

Same pixels and settings, same bytes: no timestamps, fixed zlib/libjpeg settings. The defaults (PNG,
``paeth`` on every row, zlib ``rle``) were chosen by ``bench/encode.py``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
from PIL import Image

from sim2real.storage import schema
from sim2real.storage.png import PNG_FILTER_TYPES, RowFilter, encode_png_rgb

PngStrategy = Literal["default", "filtered", "huffman", "rle", "fixed"]
# ``adaptive``: PIL's per-row filter choice; the others: one filter for every row (``storage.png``).
PngFilter: TypeAlias = Literal["adaptive"] | RowFilter
# zlib's deflateInit2 strategy constants (Z_DEFAULT_STRATEGY … Z_FIXED), as Pillow's ``compress_type``.
PNG_STRATEGIES: dict[str, int] = {"default": 0, "filtered": 1, "huffman": 2, "rle": 3, "fixed": 4}


@dataclass(frozen=True)
class EncodeConfig:
    """How translated images are stored. Encoding is deterministic: same pixels, same bytes."""

    image_format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = 95  # libjpeg quality for ``jpg`` (1-95)
    png_compress_level: int = 6  # zlib level for ``png`` (0-9); higher is smaller and slower
    # zlib strategy for ``png``. ``rle`` (run-length matches only) is the default: on translated images
    # it writes smaller files than zlib's default strategy in under a third of the time (bench/encode.py).
    png_strategy: PngStrategy = "rle"
    # PNG row filter. ``paeth`` for every row (our writer) is the default: as small as PIL's per-row
    # choice on translated images, in 30-40 % less CPU (bench/encode.py).
    png_filter: PngFilter = "paeth"

    def __post_init__(self) -> None:
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image_format {self.image_format!r}: choose 'png' or 'jpg'")
        if self.png_strategy not in PNG_STRATEGIES:
            raise ValueError(f"png_strategy {self.png_strategy!r}: choose one of {sorted(PNG_STRATEGIES)}")
        if self.png_filter != "adaptive" and self.png_filter not in PNG_FILTER_TYPES:
            raise ValueError(
                f"png_filter {self.png_filter!r}: choose 'adaptive' or one of {sorted(PNG_FILTER_TYPES)}"
            )
        if not 1 <= self.jpeg_quality <= 95 or not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"encode config {self}: jpeg_quality in 1..95, png_compress_level in 0..9")

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
