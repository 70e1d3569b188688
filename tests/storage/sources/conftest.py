"""Helpers for the importer tests: write small real images, decode members back."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image


def _save(path: str, array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    """Write ``array`` as an image file (creating folders) and return the file's bytes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    data = buffer.getvalue()
    with open(path, "wb") as handle:
        handle.write(data)
    return data


@pytest.fixture
def save_image() -> Callable[..., bytes]:
    """``save_image(path, array, fmt="PNG", mode=None) -> bytes`` written to disk."""
    return _save


@pytest.fixture
def random_rgb() -> Callable[[int, int, int], np.ndarray]:
    """``random_rgb(h, w, seed)``: a reproducible H×W×3 uint8 camera image."""

    def make(height: int, width: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)

    return make


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture
def decode_png() -> Callable[[bytes], np.ndarray]:
    """``decode_png(bytes) -> array`` (mode kept: 8-bit ids stay 2-D)."""
    return _decode


@pytest.fixture
def decode_json() -> Callable[[bytes], Any]:
    """``decode_json(bytes)``."""
    return json.loads


def _ingest(source_dir: str, fmt: str, options: dict[str, Any], root: str) -> tuple[Any, dict, dict]:
    """List, build every shard and commit (the ingest flow's steps, without Prefect); read back.

    Returns the committed version, raw samples (member → bytes) and decoded samples, both by key.
    """
    from sim2real.storage.ingest import IngestConfig, ingest_serially
    from sim2real.storage.reader import decoded_samples, raw_samples
    from sim2real.storage.versions import DatasetStore

    name = fmt.replace("_", "-")
    config = IngestConfig(format=fmt, options=options, max_shard_samples=2)
    version = ingest_serially(DatasetStore(root), source_dir, name, config)
    raw = {s["__key__"]: s for s in raw_samples(version.shard_urls)}
    decoded = {s["__key__"]: s for s in decoded_samples(version.shard_urls)}
    return version, raw, decoded


@pytest.fixture
def ingest(tmp_path) -> Callable[..., tuple[Any, dict, dict]]:
    """``ingest(source_dir, fmt, options) -> (version, raw_by_key, decoded_by_key)`` into ``tmp_path``."""

    def run(source_dir: str, fmt: str, options: dict[str, Any] | None = None) -> tuple[Any, dict, dict]:
        return _ingest(source_dir, fmt, options or {}, str(tmp_path / "store"))

    return run


def load_errors(format_name: str, root: str, options: dict[str, Any]) -> dict[str, str]:
    """The :class:`BadFrame` message of each frame of ``root`` that fails to load, by key (frames that
    load are left out)."""
    from sim2real.storage.sources.base import BadFrame, get_format

    fmt, errors = get_format(format_name), {}
    for frame in fmt.discover(root, options):
        try:
            fmt.load(frame)
        except BadFrame as exc:
            errors[frame.key] = str(exc)
    return errors
