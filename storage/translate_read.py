"""Read a source shard for translation: its samples, grouped into batches of equal image size, decoded.

The first step of the translate path (``read`` → translate → ``write``): the shard's samples are read
as stock ``webdataset`` reads them (:mod:`sim2real.storage.tar_samples`, faster for plain tars); frames
of equal size are grouped into batches from their image headers (no pixel decoding, so which frames
share a batch — and hence the output bytes — does not depend on how many processes decode); each batch
is decoded in this thread or, with ``decode_workers``, in a pool of processes started once per process
and kept, a few batches ahead. Only image bytes travel to a decode worker; label members stay here as
raw bytes and are never decoded.

Everything travels as one type, :class:`FrameBatch`: read here with the source pixels, filled with the
translated pixels by the engine's caller, written by :mod:`sim2real.storage.translate`.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from sim2real.storage import schema
from sim2real.storage.png import decode_png_rgb, png_size
from sim2real.storage.process_lifetime import exit_with_owner, usable_cores
from sim2real.storage.tar_samples import RawSample, shard_samples

# Source frames per core from which a CPU run starts worker processes by default (shard_processes None):
# ~2.7x the measured break-even of their start-up on 2 cores (~3,000 frames per core at 128x256,
# bench/RESULTS.md, "worker processes by the run's size").
AUTO_FRAMES_PER_PROCESS = 8192


# A field marked so does not change the output bytes; every other field feeds the version id.
THROUGHPUT_ONLY: dict[str, Any] = {"changes_bytes": False}


def _throughput(default: Any, description: str, **constraints: Any) -> Any:
    """A config field that does not change the output bytes (kept out of the version id)."""
    return Field(default=default, description=description, json_schema_extra=THROUGHPUT_ONLY, **constraints)


class PipelineConfig(BaseModel):
    """How shards flow through a translate run (``pipeline:`` of the translate config): batching and the
    workers around the forward pass. Only ``batch_size`` changes the output bytes (kernels choose their
    algorithm by batch shape)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # frames per forward pass; frames of one size share a batch, others wait for their own
    batch_size: int = Field(default=8, ge=1, description="frames per forward pass")
    # processes decoding source images; None = none on CPU (decoding is a small share of a CPU forward
    # pass), min(4, cores / 2) on CUDA
    decode_workers: int | None = _throughput(
        None, "decode processes (default: 0 on CPU, min(4, cores/2) on CUDA)", ge=0
    )
    # batches each decode worker prepares ahead
    prefetch_batches: int = _throughput(2, "batches each decode worker prepares ahead", ge=1)
    # how decode workers start; fork copies a process that runs Prefect's threads (see decode_pool)
    start_method: Literal["forkserver", "spawn", "fork"] = _throughput(
        "forkserver", "how decode workers start"
    )
    # threads encoding translated images per shard task; None = 2 on CPU (the forward passes need the
    # cores), max(2, cores / 4) on CUDA (a 256x512 PNG takes ~2.4 ms of one core, bench/encode.py)
    encode_threads: int | None = _throughput(
        None, "encoding threads per shard task (default: 2 on CPU, max(2, cores/4) on CUDA)", ge=1
    )
    # CPU: worker processes that run the shard tasks' work (read, translate, encode, write), one shard
    # each, instead of threads of the flow's process that share one GIL; 0 or 1 = in the flow's process.
    # None (auto) = one per core when the run has AUTO_FRAMES_PER_PROCESS source frames per core, else 0:
    # each worker takes ~1.5-2 s to start (importing torch) and holds ~0.5-0.8 GB until the flow's end,
    # which a long run wins back (24,576 frames: 18 % faster, start-up included) and a short one does
    # not (bench/shard_processes.py). Never on CUDA (one process shares the GPU); never more than one per
    # shard.
    shard_processes: int | None = _throughput(
        None, "CPU: processes running shard work (0: the flow's process; None: by the run's size)", ge=0
    )
    # Dask/Ray runners: slots of the 'gpu' tag limit, created if absent (one per GPU)
    gpu_slots: int = _throughput(1, "Dask/Ray: shard tasks on GPUs at once (one per GPU)", ge=1)

    def resolve(self, device_type: str) -> PipelineConfig:
        """The same config with the worker counts decided for ``device_type`` (``cpu`` or ``cuda``)."""
        cores = usable_cores()
        cuda = device_type == "cuda"
        decode = self.decode_workers
        encode = self.encode_threads
        return self.model_copy(
            update={
                "decode_workers": (min(4, cores // 2) if cuda else 0) if decode is None else decode,
                "encode_threads": (max(2, cores // 4) if cuda else 2) if encode is None else encode,
                "shard_processes": 0 if cuda else self.shard_processes,
            }
        )

    def processes_for(self, frames: int, shards: int) -> int:
        """Worker processes for a CPU run of ``frames`` source frames in ``shards`` shards: the set
        count, or by the run's size when ``shard_processes`` is None; at most one per shard. 0 or 1
        means the flow's own process."""
        if self.shard_processes is not None:
            wanted = self.shard_processes
        else:
            cores = usable_cores()
            wanted = cores if cores > 1 and frames >= AUTO_FRAMES_PER_PROCESS * cores else 0
        return min(wanted, shards)


@dataclass
class FrameBatch:
    """Frames of one source shard that travel together, from the read to the written shard.

    Read with ``images`` (B×3×H×W uint8 source pixels, a view of B×H×W×3 memory: channels-last, the
    layout images decode to and the CPU engine computes in, so neither side transposes) or, for frames
    that failed to decode, with
    ``errors`` instead; the translate step sets ``pixels`` (B×H×W×3 uint8) and, where the engine
    encoded on its own threads, ``encoded`` (one image file's bytes per frame).
    """

    positions: list[int]  # index of each sample in the source shard
    keys: list[str]
    labels: list[dict[str, bytes]]  # each sample's members except the image: raw bytes
    source_rgb_sha256: list[str | None]
    images: np.ndarray | None = None
    errors: list[str] | None = None
    pixels: np.ndarray | None = None
    encoded: list[bytes] | None = None

    def error(self, i: int) -> str | None:
        """Why frame ``i`` has no translated pixels, or None when it has them."""
        if self.pixels is not None:
            return None
        return self.errors[i] if self.errors else "not translated"


def decode_image(where: str, data: bytes) -> tuple[np.ndarray, str]:
    """Encoded image bytes → (H×W×3 uint8 image, sha256 of the bytes).

    Raises :class:`~sim2real.storage.schema.SchemaError` naming ``where`` (shard and key) and the reason.
    """
    array = decode_png_rgb(data, Image.MAX_IMAGE_PIXELS or sys.maxsize)  # the common case, fast
    if array is not None:
        return array, schema.sha256_hex(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.array(image.convert("RGB"))
    except UnidentifiedImageError as exc:  # its message names a BytesIO object's address
        reason = f"no known image format ({len(data)} bytes)"
        raise schema.SchemaError(f"{where}: cannot decode image: {reason}") from exc
    except Exception as exc:  # PIL raises many types for corrupt images
        reason = str(exc) or type(exc).__name__  # PIL's MemoryError for a huge image says nothing
        raise schema.SchemaError(f"{where}: cannot decode image: {reason}") from exc
    return array, schema.sha256_hex(data)


def _image_member(raw: RawSample) -> tuple[str, bytes] | str:
    """(where, bytes) of a raw sample's image, or why it has none."""
    where = f"{raw.get('__url__')}: key {raw.get('__key__')!r}"
    try:
        name = schema.rgb_member([k for k in raw if not k.startswith("__")])
    except schema.SchemaError as exc:
        return f"{where}: cannot decode image: {exc}"
    return where, raw[name]


def decode_images(images: list[tuple[str, bytes] | str]) -> list[tuple[np.ndarray, str] | str]:
    """Decode each ``(where, bytes)`` to ``(image, sha256)``, or to the reason it failed (an entry that
    is already a reason passes through). What a decode worker runs."""
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


def image_size(raw: RawSample) -> tuple[int, int] | None:
    """(height, width) from the image header, or None when there is no readable image.

    A PNG's size is read from its IHDR chunk (the first, by the spec) directly: what PIL reads too, in
    a tenth of the time of opening the file with PIL (0.06 ms per frame), which every other format
    takes. A damaged file fails later, in :func:`decode_images`, with the reason.
    """
    try:
        data = raw[schema.rgb_member([k for k in raw if not k.startswith("__")])]
        size = png_size(data)
        if size is not None:
            return size
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except Exception:  # decode_images reports the reason
        return None


Group = list[tuple[int, RawSample]]  # ``(position in the shard, raw sample)`` of frames batched together


def planned_batches(url: str, batch_size: int) -> Iterator[tuple[tuple[int, int] | None, Group]]:
    """``(header size, group)``: groups of the shard at ``url`` whose image headers give one (height,
    width), in the order they fill up; a sample without a readable header is a group of its own (size
    None)."""
    buckets: dict[tuple[int, int], Group] = {}
    for position, raw in enumerate(shard_samples(url)):
        size = image_size(raw)
        if size is None:  # no readable header: a batch of its own, which will fail to decode
            yield None, [(position, raw)]
            continue
        bucket = buckets.setdefault(size, [])
        bucket.append((position, raw))
        if len(bucket) == batch_size:
            yield size, buckets.pop(size)
    yield from sorted(buckets.items(), key=lambda item: item[1][0][0])


def assemble(
    planned: tuple[int, int] | None, group: Group, decoded: list[tuple[np.ndarray, str] | str]
) -> list[FrameBatch]:
    """A planned group (its headers' size ``planned``) and its :func:`decode_images` results → the
    decoded batch and one batch per failure; label members are taken from the raw samples as they are
    (bytes, never decoded)."""
    batches, frames = [], []
    for (position, raw), result in zip(group, decoded, strict=True):
        # A sample has exactly one image member (or failed above): every other member is a label.
        labels = {k: v for k, v in raw.items() if not k.startswith("__") and k not in schema.RGB_MEMBERS}
        if planned is not None and not isinstance(result, str) and result[0].shape[:2] != planned:
            # The group was planned by header size; a file whose pixels have another (a PNG with a second
            # IHDR, which Pillow reads last) is damaged, and would not stack with the others.
            height, width = result[0].shape[:2]
            result = (
                f"{raw.get('__url__')}: key {raw.get('__key__')!r}: cannot decode image: its pixels are "
                f"{height}x{width}, its header says {planned[0]}x{planned[1]}"
            )
        if isinstance(result, str):
            batches.append(FrameBatch([position], [raw["__key__"]], [labels], [None], errors=[result]))
        else:
            frames.append((position, raw["__key__"], result[0], labels, result[1]))
    if frames:
        positions, keys, images, label_sets, shas = zip(*frames, strict=True)
        pixels = np.stack(images).transpose(0, 3, 1, 2)  # B×3×H×W, channels-last in memory
        batch = FrameBatch(list(positions), list(keys), list(label_sets), list(shas), pixels)
        batches.append(batch)
    return batches


_POOLS: dict[tuple[int, str], ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


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
                # The fork server imports the main module and this one once; each worker forks from it.
                context.set_forkserver_preload(["__main__", __name__])
            # Workers end with this process, even when it is killed with kill -9.
            pool = ProcessPoolExecutor(
                workers, mp_context=context, initializer=exit_with_owner, initargs=(os.getpid(),)
            )
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


def read_batches(url: str, config: PipelineConfig) -> Iterator[FrameBatch]:
    """The decoded batches of the shard at ``url``, in planned order.

    Groups are planned here and decoded in the pool, at most ``decode_workers × prefetch_batches``
    ahead of the consumer; with no workers (or inside a daemonic process such as a Dask worker, which may
    not start children) they are decoded in this thread. Raises ``RuntimeError`` (retryable) when a
    decode worker dies.
    """
    workers = config.decode_workers or 0
    if workers and multiprocessing.current_process().daemon:
        workers = 0
    if not workers:
        for size, group in planned_batches(url, config.batch_size):
            yield from assemble(size, group, decode_images([_image_member(raw) for _, raw in group]))
        return
    pool = decode_pool(workers, config.start_method)
    window: deque[tuple[tuple[int, int] | None, Group, Future[list[tuple[np.ndarray, str] | str]]]] = deque()
    try:
        for size, group in planned_batches(url, config.batch_size):
            images = [_image_member(raw) for _, raw in group]
            window.append((size, group, pool.submit(decode_images, images)))
            if len(window) >= workers * config.prefetch_batches:
                done_size, done, future = window.popleft()
                yield from assemble(done_size, done, future.result())
        while window:
            done_size, done, future = window.popleft()
            yield from assemble(done_size, done, future.result())
    except BrokenProcessPool as exc:
        _forget_pool(pool)  # a retry starts a fresh pool
        raise RuntimeError(f"{url}: a decode worker process died ({exc}); the shard can be retried") from exc
    finally:
        for _, _, future in window:
            future.cancel()
