"""Batched, overlapped translation of one WebDataset shard: decode → device → forward → uint8 frames.

Three stages run at once. The task reads the shard with stock ``webdataset`` and groups frames of
equal size into batches from their image headers; a pool of decode processes, started once per process
and kept, decodes the batches a few ahead (the translate flow's CPU default is no pool: decoding is a
small share of a CPU forward pass, and the task decodes itself); the task moves each batch to the
device (pinned, ``non_blocking``) and runs a
:class:`~sim2real.models.translator.engine.TranslatorEngine` on it (inference graph, bf16 where the
device computes it natively, channels-last, optionally compiled); the frames are encoded either by
the CPU forward stream that translated them or, on CUDA, by the consumer's threads. Batches are
launched ahead of collection, one more than the engine runs at once: on CUDA the device does not
wait on the host, and on CPU every forward stream has a batch while this thread decodes the next one.
Label members travel as raw bytes and are never decoded.
"""

from __future__ import annotations

import io
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image, UnidentifiedImageError

from sim2real.models.translator.engine import TranslatorEngine
from sim2real.storage import schema


@dataclass(frozen=True)
class InferenceConfig:
    """Throughput knobs; none of them changes the translated pixels beyond float rounding."""

    batch_size: int = 8  # frames per forward pass (frames of one size; others wait for their own batch)
    decode_workers: int = 1  # worker processes decoding images (0: decode in this process)
    prefetch_batches: int = 2  # batches each worker decodes ahead
    start_method: str = "forkserver"  # how decode workers start: forkserver or spawn (fork: see decode_pool)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.decode_workers < 0 or self.prefetch_batches < 1:
            raise ValueError(f"inference config {self}: batch_size >= 1, decode_workers >= 0, prefetch >= 1")


@dataclass(frozen=True)
class TranslatedFrame:
    """One source frame after translation (or the reason it could not be translated)."""

    position: int  # index of the sample in the source shard
    key: str
    members: dict[str, bytes]  # the source members except the image, raw bytes
    source_rgb_sha256: str | None
    rgb: np.ndarray | None  # H×W×3 uint8 translated image
    error: str | None = None
    encoded: bytes | None = None  # ``rgb`` encoded on the forward stream (see translate_shard_frames)


@dataclass
class DecodedBatch:
    """Frames of one size, decoded; ``images`` is B×3×H×W uint8 (None for a batch of failures)."""

    positions: list[int]
    keys: list[str]
    members: list[dict[str, bytes]]
    rgb_sha256: list[str | None]
    images: np.ndarray | None = None
    errors: list[str] | None = None


def decode_image(where: str, data: bytes) -> tuple[np.ndarray, str]:
    """Encoded image bytes → (3×H×W uint8 image, sha256 of the bytes).

    Raises :class:`~sim2real.storage.schema.SchemaError` naming ``where`` (shard and key) and the reason.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.array(image.convert("RGB"))
    except UnidentifiedImageError as exc:  # its message names a BytesIO object's address
        reason = f"no known image format ({len(data)} bytes)"
        raise schema.SchemaError(f"{where}: cannot decode image: {reason}") from exc
    except Exception as exc:  # PIL raises many types for corrupt images
        raise schema.SchemaError(f"{where}: cannot decode image: {exc}") from exc
    return array.transpose(2, 0, 1), schema.sha256_hex(data)


def _image_member(raw: dict[str, Any]) -> tuple[str, bytes] | str:
    """(where, bytes) of a raw sample's image, or why it has none."""
    where = f"{raw.get('__url__')}: key {raw.get('__key__')!r}"
    try:
        name = schema.rgb_member([k for k in raw if not k.startswith("__")])
    except schema.SchemaError as exc:
        return f"{where}: cannot decode image: {exc}"
    return where, raw[name]


def decode_images(images: list[tuple[str, bytes] | str]) -> list[tuple[np.ndarray, str] | str]:
    """Decode each ``(where, bytes)`` to ``(image, sha256)``, or to the reason it failed (an entry that
    is already a reason passes through). What a decode worker runs: only image bytes travel to it, the
    label members stay with the caller."""
    out: list[tuple[np.ndarray, str] | str] = []
    for item in images:
        if isinstance(item, str):
            out.append(item)
            continue
        try:
            out.append(decode_image(*item))
        except schema.SchemaError as exc:
            out.append(str(exc))
    return out


def planned_batches(url: str, batch_size: int) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """Groups of ``(position, raw sample)`` of the shard at ``url``, equal image size within a group, in
    the order they fill up. Planned from the image headers (no pixel decoding), so which frames share a
    batch, and hence the output bytes, do not depend on how many workers decode them."""
    dataset = wds.WebDataset(
        url, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False
    )
    buckets: dict[tuple[int, int], list[tuple[int, dict[str, Any]]]] = {}
    for position, raw in enumerate(dataset):
        size = image_size(raw)
        if size is None:  # no readable header: a batch of its own, which will fail to decode
            yield [(position, raw)]
            continue
        bucket = buckets.setdefault(size, [])
        bucket.append((position, raw))
        if len(bucket) == batch_size:
            yield buckets.pop(size)
    yield from sorted(buckets.values(), key=lambda bucket: bucket[0][0])


def image_size(raw: dict[str, Any]) -> tuple[int, int] | None:
    """(height, width) from the image header, or None when there is no readable image."""
    try:
        data = raw[schema.rgb_member([k for k in raw if not k.startswith("__")])]
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except Exception:  # decode_frame reports the reason
        return None


def decode_group(group: list[tuple[int, dict[str, Any]]]) -> list[DecodedBatch]:
    """Decode one planned batch here: the frames that decode as one batch, each failure as its own."""
    return assemble_group(group, decode_images([_image_member(raw) for _, raw in group]))


def assemble_group(
    group: list[tuple[int, dict[str, Any]]], decoded: list[tuple[np.ndarray, str] | str]
) -> list[DecodedBatch]:
    """A planned batch and its :func:`decode_images` results → the decoded batch and one batch per
    failure; label members are taken from the raw samples as they are (bytes, never decoded)."""
    batches, frames = [], []
    for (position, raw), result in zip(group, decoded, strict=True):
        # A sample has exactly one image member (or failed above): every other member is a label.
        other = {k: v for k, v in raw.items() if not k.startswith("__") and k not in schema.RGB_MEMBERS}
        if isinstance(result, str):
            batches.append(DecodedBatch([position], [raw["__key__"]], [other], [None], errors=[result]))
        else:
            frames.append((position, raw["__key__"], result[0], other, result[1]))
    if frames:
        positions, keys, images, members, shas = zip(*frames, strict=True)
        batches.append(DecodedBatch(list(positions), list(keys), list(members), list(shas), np.stack(images)))
    return batches


_POOLS: dict[tuple[int, str], ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _worker_init() -> None:
    torch.set_num_threads(1)  # decoding is PIL work; leave the cores to the forward pass


def decode_pool(workers: int, start_method: str) -> ProcessPoolExecutor:
    """This process's pool of ``workers`` decode processes, started on first use and kept for every
    shard after (starting clean processes costs seconds; a pool per shard would pay it each time).

    ``forkserver`` and ``spawn`` workers start from a fresh interpreter. ``fork`` copies this process,
    which here runs Prefect's threads and possibly inductor's compile workers: a forked child can
    inherit a lock held by another thread, so it is accepted but not the default.
    """
    key = (workers, start_method)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            context = multiprocessing.get_context(start_method)
            if start_method == "forkserver":
                # The fork server imports the main module and this one once; each worker forks from it
                # instead of importing torch, webdataset and the caller's main script itself.
                context.set_forkserver_preload(["__main__", __name__])
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init)
            # The executor starts forkserver and spawn workers one per submitted job, so a first shard
            # of few batches would leave the rest to start while a later shard waits on them: start
            # them all now, one job each.
            try:
                for future in [pool.submit(_worker_ready) for _ in range(workers)]:
                    future.result()
            except BrokenProcessPool as exc:
                pool.shutdown(wait=False, cancel_futures=True)
                raise RuntimeError(f"{workers} {start_method} decode workers failed to start: {exc}") from exc
            _POOLS[key] = pool
        return pool


def _worker_ready() -> int:
    return multiprocessing.current_process().pid or 0


def _forget_pool(pool: ProcessPoolExecutor) -> None:
    with _POOLS_LOCK:
        for key, value in list(_POOLS.items()):
            if value is pool:
                del _POOLS[key]
    pool.shutdown(wait=False, cancel_futures=True)


def shard_batches(url: str, config: InferenceConfig) -> Iterator[DecodedBatch]:
    """The decoded batches of the shard at ``url``, in planned order.

    Groups are planned here and decoded in the pool, at most ``decode_workers × prefetch_batches``
    ahead of the consumer; with no workers (or inside a daemonic process such as a Dask worker, which may
    not start children) they are decoded in this thread.
    """
    workers = config.decode_workers
    if workers and multiprocessing.current_process().daemon:
        workers = 0
    if not workers:
        for group in planned_batches(url, config.batch_size):
            yield from decode_group(group)
        return
    pool = decode_pool(workers, config.start_method)
    # Only the image bytes go to a worker and only pixels come back; the labels stay here.
    window: deque[tuple[list[tuple[int, dict[str, Any]]], Future[list[tuple[np.ndarray, str] | str]]]]
    window = deque()
    try:
        for group in planned_batches(url, config.batch_size):
            window.append((group, pool.submit(decode_images, [_image_member(raw) for _, raw in group])))
            if len(window) >= workers * config.prefetch_batches:
                done, future = window.popleft()
                yield from assemble_group(done, future.result())
        while window:
            done, future = window.popleft()
            yield from assemble_group(done, future.result())
    except BrokenProcessPool as exc:
        _forget_pool(pool)  # a retry starts a fresh pool
        raise RuntimeError(f"{url}: a decode worker process died ({exc}); the shard can be retried") from exc
    finally:
        for _, future in window:
            future.cancel()


Encoder = Callable[[np.ndarray], bytes]


@dataclass
class _InFlight:
    batch: DecodedBatch
    # Waits for the batch: B×H×W×3 uint8 on the host, and each frame encoded where the stream encoded.
    result: Callable[[], tuple[torch.Tensor, list[bytes] | None]]


def _pixels_and_encoded(
    engine: TranslatorEngine, images: torch.Tensor, encode: Encoder | None
) -> tuple[torch.Tensor, list[bytes] | None]:
    """What a CPU forward stream runs per batch: the forward pass, then (``encode`` given) each frame's
    encoding, while its pixels are still in this core's cache."""
    pixels = engine.pixels(images)
    if encode is None:
        return pixels, None
    array = pixels.numpy()
    return pixels, [encode(array[i]) for i in range(len(array))]


def _launch(engine: TranslatorEngine, batch: DecodedBatch, encode: Encoder | None) -> _InFlight:
    """Start translating ``batch``: on a CPU forward stream of the engine, or queued on the GPU."""
    assert batch.images is not None
    images = torch.from_numpy(batch.images)
    if engine.device.type != "cuda":
        return _InFlight(batch, engine.submit(_pixels_and_encoded, engine, images, encode).result)
    with torch.inference_mode():
        images = images.pin_memory().to(engine.device, non_blocking=True)  # pinned: an async copy
        pixels = engine.pixels(images)
        host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(pixels, non_blocking=True)
        event = torch.cuda.Event()
        event.record()

    def wait() -> tuple[torch.Tensor, list[bytes] | None]:
        event.synchronize()
        return host, None

    return _InFlight(batch, wait)


def _collect(flight: _InFlight) -> Iterator[TranslatedFrame]:
    tensor, encoded = flight.result()
    pixels, batch = tensor.numpy(), flight.batch
    for i, key in enumerate(batch.keys):
        yield TranslatedFrame(
            batch.positions[i],
            key,
            batch.members[i],
            batch.rgb_sha256[i],
            pixels[i],
            encoded=None if encoded is None else encoded[i],
        )


def _failures(batch: DecodedBatch) -> Iterator[TranslatedFrame]:
    for i, key in enumerate(batch.keys):
        error = batch.errors[i] if batch.errors else "not translated"
        yield TranslatedFrame(batch.positions[i], key, batch.members[i], None, None, error)


def translate_shard_frames(
    engine: TranslatorEngine, url: str, config: InferenceConfig, encode: Encoder | None = None
) -> Iterator[TranslatedFrame]:
    """Translate every frame of the shard at ``url`` on the engine's device; frames come out in batch
    order, not shard order.

    A frame whose image cannot be decoded comes out with ``rgb=None`` and the reason in ``error``.
    ``encode`` (H×W×3 uint8 → bytes), where given and the engine runs several CPU forward streams, runs
    on the stream that translated the batch right after its forward pass, and frames come out with
    ``encoded`` set: two busy threads on two cores instead of forward streams preempted by encoder
    threads (forward plus PNG encoding of 768 frames, demo translator, 2 cores: 186-191 → 204-208
    frames/s). On CUDA, or with one stream, frames come out unencoded for the caller's encoders.
    """
    inline = encode if engine.device.type == "cpu" and engine.streams > 1 else None
    # Batches launched and not yet collected: one more than the engine runs at once, so while this
    # thread waits for the oldest, every stream has a batch (on CUDA, the device's queue is the stream).
    # With one per stream, a stream idled while this thread decoded the next batch whenever the other
    # shard task was between shards (with the writer's old end-of-shard tail: gaps after 190 of 192 CPU
    # batches, 0.6-1.0 s per 9.7-s run; bench/RESULTS.md).
    depth = engine.streams + 1
    in_flight: deque[_InFlight] = deque()
    for batch in shard_batches(url, config):
        if batch.images is None:
            yield from _failures(batch)
            continue
        in_flight.append(_launch(engine, batch, inline))
        if len(in_flight) == depth:
            yield from _collect(in_flight.popleft())
    while in_flight:
        yield from _collect(in_flight.popleft())


def resolve_device(device: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
