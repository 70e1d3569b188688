"""The production forward pass of a trained translator: uint8 pixel batches in, uint8 pixel batches out.

:class:`TranslatorEngine` runs an :class:`~sim2real.models.translator.inference_graph.InferenceGraph`
(graph rewrites that change results by float rounding only) in a precision, optionally compiled, on
one or several CPU threads, and :meth:`TranslatorEngine.translate_batches` keeps batches in flight so
the device never waits for the caller. It sees image tensors only: no files, samples or labels.

* **Precision** — ``auto`` runs bf16 where the device computes bf16 natively (CUDA with bf16, CPUs
  with AVX512-BF16 or AMX), fp16 on older GPUs, fp32 elsewhere. CUDA runs it as autocast. On CPU the
  graph itself is cast to bf16 and runs channels-last with no autocast, its instance norms as one batch
  norm per sample (autocast re-cast every weight on every call; the native instance norm copied
  channels-last activations to NCHW and back).
* **Compilation** (opt-in) — ``torch.compile``, with the instance norms in their two-pass form (which
  inductor vectorises on CPU), one graph per input shape: a compiled engine pads every batch to a fixed
  number of frames (repeating the last frame), so a shard's short last batch reuses the graph. Compiling
  costs seconds to a minute per shape: it pays off on large runs, not on demos.
* **Forward threads** (CPU) — ``forward_threads=N`` runs forward passes on N engine threads at once,
  each with cores ÷ N intra-op threads (:meth:`TranslatorEngine.submit`): two single-threaded forwards
  side by side beat one forward spread over both cores of a 2-core machine by ~20 % (bench/RESULTS.md).

What decides the output bytes is :func:`~sim2real.models.translator.engine_config.engine_numerics` of
the resolved :class:`~sim2real.models.translator.engine_config.EngineConfig`.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import numpy as np
import torch

from sim2real.models.translator.engine_config import (
    DTYPES,
    EngineConfig,
    engine_numerics,
)
from sim2real.models.translator.inference import pad_to_stride
from sim2real.models.translator.inference_graph import InferenceGraph
from sim2real.models.translator.model import Translator
from sim2real.models.translator.pixel_blocks import bf16_codes, bf16_tensor, from_blocks, to_blocks, to_levels
from sim2real.models.translator.student import StudentTranslator
from sim2real.models.translator.student_pixels import StudentPixels

P = ParamSpec("P")
T = TypeVar("T")
Encoder = Callable[[np.ndarray], bytes]  # H×W×3 uint8 → one image file's bytes
Translated = tuple[np.ndarray | None, list[bytes] | None]  # B×H×W×3 uint8 pixels, each frame encoded


def start_threads(count: int, threads: int) -> ThreadPoolExecutor:
    """A pool of ``count`` forward threads that each run torch ops with ``threads`` intra-op threads.

    Torch's thread count lives per thread (each thread's OpenMP setting, taken from a process-wide value
    the first time the thread runs a parallel op or reads the count). Each thread sets its own while the
    caller waits for all of them; then the caller puts the process-wide value back, so threads started
    later (and the caller) keep the usual count. A thread that runs its first parallel op within that
    millisecond would take ``threads`` too (it would run slower, not wrong).
    """
    previous = torch.get_num_threads()
    started = threading.Barrier(count + 1)
    failures: list[str] = []

    def init_thread() -> None:
        torch.set_num_threads(threads)
        # Reading the count runs torch's once-per-thread initialisation now, from the process-wide value
        # just set; run later, it would take the value put back below.
        if torch.get_num_threads() != threads:
            failures.append(f"forward thread got {torch.get_num_threads()} intra-op threads, not {threads}")
            started.abort()
            return
        started.wait()

    pool = ThreadPoolExecutor(count, thread_name_prefix="forward", initializer=init_thread)
    try:
        # Each submit finds no idle thread (the first ones wait at the barrier) and starts one more.
        for _ in range(count):
            pool.submit(lambda: None)
        started.wait(timeout=60)
    except threading.BrokenBarrierError:
        pool.shutdown(wait=False, cancel_futures=True)
        raise RuntimeError(f"could not start {count} forward threads: {failures or 'timed out'}") from None
    finally:
        torch.set_num_threads(previous)
    return pool


class TranslatorEngine:
    """Callable: B×3×H×W sim images in [0, 1] (any device) → real style, same shape, [0, 1], same device.

    Deterministic for a given engine config, device and batch. Safe to call from several threads: a
    compiled graph's first call per input shape (the compilation) runs alone; once compiled, calls run
    side by side like eager ones (running compiled code needs no lock; compiling does). On CPU it starts
    ``forward_threads`` threads for :meth:`submit` and :meth:`translate_batches`, each with
    ``intra_op_threads`` torch threads; calling the engine directly runs in the caller's thread. Call
    :meth:`close` (or use it as a context manager) to stop them.
    """

    def __init__(
        self,
        translator: Translator | StudentTranslator,
        config: EngineConfig,
        batch_size: int = 8,
        fold: bool = True,
    ) -> None:
        self.config = config.resolve()
        numerics = engine_numerics(self.config)
        self.device = torch.device(self.config.device)
        self.precision = self.config.precision
        self.compiled = self.config.compile
        self.batch_size = batch_size  # compiled engines pad every batch to this many frames
        self.stride = translator.stride
        self.dtype = DTYPES.get(self.precision)
        self.cast_graph = bool(numerics["cast_graph"])
        if isinstance(translator, Translator):
            graph = InferenceGraph(translator, fold=fold, norms=numerics["norms"]).to(self.device)
            self.folded = graph.folded
        else:  # a distilled student is its own inference graph: no norms to swap, no upsampling to fold
            graph = copy.deepcopy(translator).requires_grad_(False).eval().to(self.device)
            self.folded = 0
        if self.cast_graph:
            graph = graph.to(self.dtype)
        self.channels_last = bool(numerics["channels_last"])
        if self.channels_last:
            graph = graph.to(memory_format=torch.channels_last)
        self.graph = graph
        # An eager CPU student folds its pixel (un)shuffle into the pixel conversions (the same pixels;
        # its pixels() 1.25 → 0.74 ms per 128×256 frame, bench/engine_pixels.py; student_pixels.py).
        self._student_pixels = (
            StudentPixels(
                graph,
                self.dtype if self.cast_graph and self.dtype is not None else torch.float32,
                torch.channels_last if self.channels_last else torch.contiguous_format,
            )
            if isinstance(graph, StudentTranslator)
            and not graph.input_skip
            and self.device.type == "cpu"
            and not self.compiled
            and (self.cast_graph or self.dtype is None)
            else None
        )
        if self.compiled:
            # Inductor's C++ toolchain probe warns about a missing CUDA runtime on CPU-only hosts: noise.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        # No ``dynamic=False``: torch.compile applies that as a process-wide config patch on every call,
        # which races when threads call at once. Inputs are marked static instead (one graph per shape).
        self._forward = torch.compile(graph) if self.compiled else graph
        self._compile_lock = threading.Lock()
        self._compiled_shapes: set[tuple[int, ...]] = set()
        # A GPU runs forwards from the caller's thread (its own queue overlaps the host).
        self.forward_threads = self.config.forward_threads
        self.intra_op_threads = self.config.intra_op_threads
        self._threads = (
            start_threads(self.forward_threads, self.intra_op_threads or 1)
            if self.device.type == "cpu"
            else None
        )

    def __enter__(self) -> TranslatorEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, object]:
        """How this engine computes (:func:`engine_numerics`) and how many upsamplings it folded."""
        return {**engine_numerics(self.config), "folded_upsampling": self.folded}

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` (which calls this engine) on a forward thread; on a GPU, run it now
        in this thread. Returns its future."""
        if self._threads is not None:
            return self._threads.submit(fn, *args, **kwargs)
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        """Stop the forward threads (after the work already submitted)."""
        if self._threads is not None:
            self._threads.shutdown(wait=True)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self._check(images)
        out = self._translate(images.to(self.device, torch.float32).mul(2).sub(1))
        return out.float().add(1).div(2).clamp(0, 1).to(images.device).contiguous()

    @torch.inference_mode()
    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W uint8 images (any device) → translated B×H×W×3 uint8 on the engine's device.

        The same pixels as ``round(255 · engine(images / 255))``, with the arithmetic done in place and
        no layout copies: a channels-last result is H×W×3 in memory already (the CPU bf16 and CUDA
        graphs), so the caller's H×W×3 view costs nothing.
        """
        self._check(images)
        if images.dtype != torch.uint8:  # (the in-place scaling below relies on the conversion's copy too)
            raise ValueError(f"TranslatorEngine.pixels: expected uint8 images, got {images.dtype}")
        if self.device.type == "cpu" and images.device.type == "cpu":
            if self._student_pixels is not None:
                return torch.from_numpy(self._student_pixels(images))
            if self.cast_graph and self.dtype == torch.bfloat16:  # pixels ↔ bf16 by table, one pass each
                out = self._translate(bf16_tensor(to_blocks(images.permute(0, 2, 3, 1).numpy(), 1)))
                return torch.from_numpy(from_blocks(bf16_codes(out), 1))
        out = self._translate(images.to(self.device, torch.float32).div_(255).mul_(2).sub_(1))
        return to_levels(out).permute(0, 2, 3, 1).contiguous()

    def translate_batches(
        self, batches: Iterable[np.ndarray | None], encode: Encoder | None = None
    ) -> Iterator[Translated]:
        """Translate each B×3×H×W uint8 batch into ``(B×H×W×3 uint8 pixels on the host, encoded)``, in
        input order; a ``None`` batch (frames that could not be read) comes out as ``(None, None)``.

        Batches are launched ahead of collection, one more than the engine runs at once: on CUDA the
        device does not wait on the host, and on CPU every forward thread has a batch while the caller
        produces the next one. ``encode``, where given and the engine runs several CPU forward threads,
        runs on the thread that translated the batch right after its forward pass, while the pixels are
        still in that core's cache (``encoded``: one result per frame); otherwise ``encoded`` is None and
        the caller encodes (two busy threads on two cores instead of forward threads preempted by encoder
        threads: 186-191 → 204-208 frames/s, bench/RESULTS.md).
        """
        inline = encode if self.device.type == "cpu" and self.forward_threads > 1 else None
        in_flight: deque[Callable[[], Translated]] = deque()
        for images in batches:
            in_flight.append(self._launch(images, inline))
            if len(in_flight) > self.forward_threads:
                yield in_flight.popleft()()
        while in_flight:
            yield in_flight.popleft()()

    def _launch(self, images: np.ndarray | None, encode: Encoder | None) -> Callable[[], Translated]:
        """Start translating one batch: on a CPU forward thread, or queued on the GPU. Returns the wait."""
        if images is None:
            return lambda: (None, None)
        batch = torch.from_numpy(images)
        if self.device.type != "cuda":
            future = self.submit(self._pixels_and_encoded, batch, encode)
            return future.result
        with torch.inference_mode():
            batch = batch.pin_memory().to(self.device, non_blocking=True)  # pinned: an async copy
            pixels = self.pixels(batch)
            host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(pixels, non_blocking=True)
            event = torch.cuda.Event()
            event.record()

        def wait() -> Translated:
            event.synchronize()
            return host.numpy(), None

        return wait

    def _pixels_and_encoded(self, images: torch.Tensor, encode: Encoder | None) -> Translated:
        """What a CPU forward thread runs per batch: the forward pass, then (``encode`` given) each frame's
        encoding."""
        pixels = self.pixels(images).numpy()
        return pixels, None if encode is None else [encode(pixels[i]) for i in range(len(pixels))]

    @staticmethod
    def _check(images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"TranslatorEngine: expected B×3×H×W images, got shape {tuple(images.shape)}")

    def _translate(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×H×W images in [-1, 1] on the device → the graph's output, same size, in its precision."""
        frames, _, height, width = x.shape
        x = pad_to_stride(x, self.stride)
        if self.compiled and frames < self.batch_size:  # one static shape per image size: pad the batch
            x = torch.cat([x, x[-1:].expand(self.batch_size - frames, -1, -1, -1)])
        # One memory layout whatever the caller's strides (decoded batches arrive channels-last from
        # numpy): a compiled graph guards on strides and would otherwise compile again.
        x = x.to(
            self.dtype if self.cast_graph else x.dtype,
            memory_format=torch.channels_last if self.channels_last else torch.contiguous_format,
        )
        autocast = self.dtype is not None and not self.cast_graph
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            out = self._compiled_forward(x) if self.compiled else self._forward(x)
        return out[:frames, :, :height, :width]

    def _compiled_forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._dynamo.mark_static(x)
        shape = tuple(x.shape)
        if shape not in self._compiled_shapes:
            with self._compile_lock:  # compiling is not thread-safe: one thread compiles, others wait
                out = self._forward(x)
                self._compiled_shapes.add(shape)
            return out
        return self._forward(x)


class EngineCache:
    """The engines a process keeps, at most ``size``: each built once per key, under a lock (the first
    shard tasks of a run start together, and each would otherwise load — and, compiled, compile — an
    engine of its own), and closed when evicted, least recently used first, so its threads end."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._engines: OrderedDict[Hashable, TranslatorEngine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], TranslatorEngine]) -> TranslatorEngine:
        """The engine under ``key``, built by ``build()`` when absent."""
        with self._lock:
            engine = self._engines.pop(key, None) or build()
            self._engines[key] = engine
            while len(self._engines) > self.size:
                self._engines.popitem(last=False)[1].close()
            return engine

    def clear(self) -> None:
        """Close and forget every engine."""
        with self._lock:
            while self._engines:
                self._engines.popitem()[1].close()
