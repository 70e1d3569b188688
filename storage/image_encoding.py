"""How translated images are stored: PNG (our row-filter writer or PIL's) or JPEG, deterministically.

Same pixels and settings, same bytes: no timestamps, fixed deflate/libjpeg settings. The defaults (PNG,
``paeth`` on every row, ISA-L level 1) were chosen by ``bench/encode.py``: on translated 128×256 frames
ISA-L deflates in 0.29 ms what zlib-ng's RLE at level 6 deflates in 0.67 (the whole encode 1.6× faster),
into files 6-12 % larger; ``png_deflate: zlib-ng`` still writes those.
"""

from __future__ import annotations

import io
from typing import Any, Literal, TypeAlias

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim2real.storage import schema
from sim2real.storage.png import DEFLATE_MAX_LEVEL, Deflate, RowFilter, encode_png_rgb

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
    # deflate library of our writer (png only): isal (ISA-L, levels 0-3) deflates 2.3x faster than zlib-ng's
    # RLE, for 6-12 % larger files; zlib-ng has levels 0-9 and zlib's strategies. None: isal, zlib-ng when
    # png_strategy or a level above 3 is set, none with png_filter 'adaptive' (Pillow deflates with zlib)
    png_deflate: Deflate | None = Field(
        default=None,
        description="png only: isal (fastest, the default) or zlib-ng (smaller, strategies); not with "
        "png_filter adaptive (Pillow's zlib)",
    )
    # deflate level (png only): None: 1 with isal (its 2 and 3 came out no smaller on translated frames,
    # 0 larger), 6 otherwise (zlib-ng: higher is smaller and slower); a level above 3 means zlib-ng
    png_compress_level: int | None = Field(
        default=None, ge=0, le=9, description="deflate level (png only): isal 0-3 (default 1), else 0-9 (6)"
    )
    # zlib strategy (png only, zlib-ng or adaptive): on translated images rle writes smaller files than
    # zlib's default strategy in under a third of the time (bench/encode.py). None: rle (isal: none)
    png_strategy: PngStrategy | None = Field(
        default=None, description="zlib strategy (png with zlib-ng or adaptive only; default rle)"
    )
    # PNG row filter (png only): paeth on every row (our writer) is as small as PIL's per-row choice
    # ('adaptive') on translated images, in 30-40 % less CPU (bench/encode.py)
    png_filter: PngFilter = Field(default="paeth", description="PNG row filter, or adaptive (PIL's choice)")

    @model_validator(mode="before")
    @classmethod
    def _png_defaults(cls, data: Any) -> Any:
        """Fill the library, level and strategy that depend on each other, so that the resolved values
        (what the version id hashes) are the same whether they were written out or left to defaults."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        adaptive = data.get("png_filter") == "adaptive"
        if data.get("png_deflate") is None and not adaptive:
            # A strategy or a level above ISA-L's asks for zlib-ng (configs written for the defaults
            # before ISA-L, png_compress_level 6 with png_strategy rle, keep their meaning and bytes).
            level = data.get("png_compress_level")
            above_isal = isinstance(level, int | float | str) and _number(level) > DEFLATE_MAX_LEVEL["isal"]
            data["png_deflate"] = "zlib-ng" if data.get("png_strategy") is not None or above_isal else "isal"
        isal = data.get("png_deflate") == "isal"
        if data.get("png_compress_level") is None:
            data["png_compress_level"] = 1 if isal else 6
        if data.get("png_strategy") is None and not isal:
            data["png_strategy"] = "rle"
        return data

    @model_validator(mode="after")
    def _check_png(self) -> EncodeConfig:
        if self.png_filter == "adaptive":
            if self.png_deflate is not None:
                raise ValueError(
                    f"png_deflate {self.png_deflate!r}: png_filter 'adaptive' is Pillow's writer, which "
                    "deflates with zlib; leave png_deflate unset"
                )
        elif self.png_deflate == "isal":
            if self.png_strategy is not None:
                raise ValueError(
                    f"png_strategy {self.png_strategy!r}: ISA-L has no zlib strategies; set png_deflate: "
                    "zlib-ng for them"
                )
        top = DEFLATE_MAX_LEVEL.get(self.png_deflate or "zlib-ng", 9)
        if self.png_compress_level is not None and self.png_compress_level > top:
            raise ValueError(
                f"png_compress_level {self.png_compress_level}: {self.png_deflate} has levels 0-{top}"
                + ("; set png_deflate: zlib-ng for 4-9" if self.png_deflate == "isal" else "")
            )
        return self

    @property
    def member(self) -> str:
        """The output image member, ``rgb.png`` or ``rgb.jpg``."""
        return schema.RGB_PNG if self.image_format == "png" else schema.RGB_JPG


def _number(value: int | float | str) -> float:
    """A level as pydantic will read it (``"6"`` is 6); NaN when it is not a number (the field refuses)."""
    try:
        return float(value)
    except ValueError:
        return float("nan")


def encode_rgb(rgb: np.ndarray, config: EncodeConfig) -> bytes:
    """H×W×3 uint8 → PNG or JPEG bytes (fixed settings, no timestamps: deterministic)."""
    level = 6 if config.png_compress_level is None else config.png_compress_level
    strategy = PNG_STRATEGIES[config.png_strategy] if config.png_strategy else 0
    if config.image_format == "png" and config.png_filter != "adaptive":
        return encode_png_rgb(rgb, config.png_filter, level, strategy, config.png_deflate or "isal")
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    buffer = io.BytesIO()
    if config.image_format == "png":
        image.save(buffer, format="PNG", compress_level=level, compress_type=strategy, optimize=False)
    else:
        image.save(buffer, format="JPEG", quality=config.jpeg_quality, subsampling=0, optimize=False)
    return buffer.getvalue()
