"""Reading versions back with stock ``webdataset``: a chain of small steps, error policy as an argument.

``decoded_samples`` is what model code consumes: per frame the key, the image as an H×W×3 uint8
array, the trainId map, boxes and meta. URLs are plain paths for local roots; object-store URLs
(``s3://…``, ``gs://…``) are opened through fsspec.

Missing is not empty: a sample without ``seg.png`` has ``seg`` None and one without ``boxes.json`` has
``boxes`` None ("no labels of that kind"), while ``boxes == []`` means "labelled, no objects".
``require`` keeps only the samples that have the given members. An endless (``resampled``) stream first
checks that at least one sample passes, and raises :class:`EmptyStream` otherwise: over an empty or
all-filtered version it would read shards forever without yielding.
"""

from __future__ import annotations

import importlib
import io
import json
from collections.abc import Callable, Iterable
from typing import Any

import fsspec
import numpy as np
import webdataset as wds
from PIL import Image

from sim2real.storage import schema

Sample = dict[str, Any]


class EmptyStream(ValueError):
    """A stream over shards that hold no (or no selected) samples; the message names the shards."""


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any) -> Any:
    return fsspec.open(url, mode).open()


def register_fsspec_schemes(schemes: Iterable[str] = ("s3", "gs", "gcs", "memory")) -> None:
    """Let webdataset open these URL schemes through fsspec (idempotent)."""
    # ``wds.gopen`` is the function; the dispatch table lives in the module of the same name.
    table = importlib.import_module("webdataset.gopen").gopen_schemes
    for scheme in schemes:
        table.setdefault(scheme, _gopen_fsspec)


def decode_rgb(data: bytes) -> np.ndarray:
    """Image bytes → H×W×3 uint8.

    A 16-bit grey PNG (only in versions ingested before the camera rule of ``sources/image_files.py``) is
    reduced by its high byte as ingest now does; PIL's own ``convert("RGB")`` would clip it to white.
    """
    image = Image.open(io.BytesIO(data))
    if image.mode.startswith("I;16"):
        grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes → array in the file's own depth (8-bit seg, 16-bit inst/depth)."""
    image = Image.open(io.BytesIO(data))
    array = np.asarray(image)
    return array.astype(np.uint16) if image.mode.startswith("I") else array


def decode_sample(raw: Sample) -> Sample:
    """A raw webdataset sample (member → bytes) → decoded arrays and parsed JSON."""
    key = raw["__key__"]
    try:
        rgb_name = schema.rgb_member([m for m in raw if not m.startswith("__")])
        sample: Sample = {
            "__key__": key,
            "__url__": raw.get("__url__"),
            "rgb": decode_rgb(raw[rgb_name]),
            "seg": decode_png(raw[schema.SEG]) if schema.SEG in raw else None,
            "boxes": json.loads(raw[schema.BOXES]) if schema.BOXES in raw else None,
            "meta": json.loads(raw[schema.META]) if schema.META in raw else {},
        }
        if schema.INST in raw:
            sample["inst"] = decode_png(raw[schema.INST])
    except Exception as exc:
        raise schema.SchemaError(f"{raw.get('__url__')}: key {key!r}: cannot decode sample: {exc}") from exc
    return sample


def raw_samples(
    urls: str | list[str],
    *,
    shuffle_buffer: int = 0,
    seed: int = 0,
    resampled: bool = False,
    handler: Callable[[Exception], bool] = wds.reraise_exception,
) -> wds.WebDataset:
    """Stock ``webdataset.WebDataset`` over the shards: samples as member → raw bytes."""
    register_fsspec_schemes()
    dataset = wds.WebDataset(
        urls,
        handler=handler,
        resampled=resampled,
        shardshuffle=100 if shuffle_buffer and not resampled else False,
        seed=seed,
        empty_check=False,
        nodesplitter=wds.split_by_node,
    )
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, initial=min(100, shuffle_buffer), seed=seed)
    return dataset


def has_members(members: Iterable[str]) -> Callable[[Sample], bool]:
    """A predicate on raw samples: every member of ``members`` is present."""
    wanted = tuple(members)
    return lambda raw: all(member in raw for member in wanted)


def require_samples(urls: str | list[str], members: Iterable[str] = ()) -> None:
    """Raise :class:`EmptyStream` unless the shards hold a sample with every member of ``members``.

    Reads shards in order up to the first such sample (one sample's headers when most have them; the
    whole version, once, when none has).
    """
    wanted = tuple(members)
    for _ in raw_samples(urls).select(has_members(wanted)):
        return
    first = urls if isinstance(urls, str) else (urls[0] if urls else "<no shards>")
    count = 1 if isinstance(urls, str) else len(urls)
    what = f"no samples with {', '.join(wanted)}" if wanted else "no samples"
    raise EmptyStream(f"{first} ({count} shard(s)): {what}; an endless stream over them would never yield")


def decoded_samples(
    urls: str | list[str],
    *,
    shuffle_buffer: int = 0,
    seed: int = 0,
    resampled: bool = False,
    require: Iterable[str] = (),
    handler: Callable[[Exception], bool] = wds.reraise_exception,
) -> wds.WebDataset:
    """Samples with ``__key__``, ``rgb`` (H×W×3 uint8), ``seg`` (H×W uint8 or None), ``boxes`` (list or
    None), ``meta``, ``inst``; only those with every member in ``require``.

    Raises :class:`EmptyStream` at once for a ``resampled`` stream that would yield nothing.
    """
    wanted = tuple(require)
    if resampled:
        require_samples(urls, wanted)
    dataset = raw_samples(
        urls, shuffle_buffer=shuffle_buffer, seed=seed, resampled=resampled, handler=handler
    )
    if wanted:
        dataset = dataset.select(has_members(wanted))
    return dataset.map(decode_sample, handler=handler)
