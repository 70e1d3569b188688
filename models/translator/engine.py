"""The production forward pass of a trained translator: an inference graph, a precision, optionally compiled.

:class:`TranslatorEngine` turns a :class:`~sim2real.models.translator.model.Translator` into the
function the translate flow runs over millions of frames. Three things make it faster than calling
``translate`` on the trained module; the graph rewrite and compilation change results by float
rounding only, bf16 by bf16 rounding (bench/RESULTS.md measures both):

* **Inference graph** — only the sim content encoder and the real decoder, with the fixed real style
  baked in, and every *nearest ×2 upsample → k×k convolution* pair folded into one convolution at the
  low resolution followed by a pixel shuffle (:class:`UpsampledConv`). Nearest upsampling repeats each
  pixel, so each of the four output phases sees a narrower window of the low-resolution input (3 wide
  for k = 5, 5 for k = 7): per low-res pixel 4·3² multiply-adds instead of 4·5² for k = 5. Output
  pixels whose window reaches into the reflect padding are recomputed the direct way on thin strips,
  so the result equals upsample-then-conv everywhere, borders included.
* **Precision** — ``auto`` runs bf16 where the device computes bf16 natively (CUDA with bf16, CPUs
  with AVX512-BF16 or AMX), fp16 on older GPUs, fp32 elsewhere. CUDA runs it as autocast. On CPU the
  graph itself is cast to bf16 and runs channels-last with no autocast, its instance norms as one batch
  norm per sample (:func:`samplewise_instance_norm`): autocast re-cast every weight on every call
  (inference-mode tensors are not cached), oneDNN's bf16 convolutions reordered NCHW activations, and
  the native instance norm copied channels-last activations to NCHW and back. Eager bf16 forward of the
  ``demo`` translator, two streams on 2 cores: 106 → 175 frames/s at the same distance from fp32.
* **Compilation** (opt-in) — ``torch.compile``, which generates fused kernels for the normalisation,
  activation and padding ops around the convs (instance norms rewritten as
  :func:`two_pass_instance_norm`, which it vectorises on CPU). Not with inductor's freezing: its oneDNN
  weight prepacking made the bf16 forward 23 % slower here (and ``torch.compile(options={"freezing":
  True})`` silently leaves it off; only the global config turns it on). Compiling costs seconds to a
  minute per input shape, so it pays off on large runs, not on demos. A compiled engine pads every
  batch to a fixed number of frames (repeating the last frame), so a shard's short last batch reuses
  the graph instead of compiling another.
* **Forward streams** (CPU) — ``streams=N`` runs forward passes on N engine threads at once, each with
  cores ÷ N intra-op threads (:meth:`TranslatorEngine.submit`). Two single-threaded forwards side by
  side beat one forward spread over both cores of a 2-core machine by ~20 % (eager and compiled alike:
  an OpenMP team waits at every barrier for its slowest thread, and on a busy machine that thread was
  descheduled), and callers decoding or encoding on the same cores slow a stream down instead of
  stalling a whole team.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal, ParamSpec, TypeVar, get_args

import torch
import torch.nn.functional as F
from torch import nn

from sim2real.models.translator.inference import pad_to_stride
from sim2real.models.translator.model import Translator
from sim2real.models.translator.networks import AdaINResBlock

P = ParamSpec("P")
T = TypeVar("T")
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class UpsampledConv(nn.Module):
    """``conv(upsample_nearest_x2(x))`` computed at the low resolution: the same output, fewer MACs.

    For output row ``2j + p`` (phase ``p`` ∈ {0, 1}) kernel tap ``t`` reads low-res row
    ``j + (p - r + t) // 2`` (``r`` the padding), so the k taps of each phase collapse onto
    ``2·pad + 1`` low-res taps. The four phases' kernels are stacked as output channels
    ``(o, py, px)`` and :func:`torch.nn.functional.pixel_shuffle` interleaves them back.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not can_fold(conv):
            raise ValueError(f"cannot fold {conv}: needs a square odd kernel, stride 1, 'same' padding")
        k = conv.kernel_size[0]
        r = (k - 1) // 2
        self.pad = (r + 1) // 2  # low-res taps reach from -pad to +pad for both phases
        self.border = r  # output rows/cols near each edge whose window reaches into the padding
        self.padding_mode = conv.padding_mode
        taps = 2 * self.pad + 1
        weight = conv.weight.detach()
        phase_maps = []
        for phase in (0, 1):
            m = torch.zeros(taps, k, dtype=weight.dtype, device=weight.device)
            for t in range(k):
                m[(phase - r + t) // 2 + self.pad, t] = 1
            phase_maps.append(m)
        kernels = [torch.einsum("ay,oiyx,bx->oiab", my, weight, mx) for my in phase_maps for mx in phase_maps]
        folded = torch.stack(kernels, dim=1).reshape(-1, weight.shape[1], taps, taps)
        self.weight = nn.Parameter(folded, requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0])
        self.bias = nn.Parameter(bias.repeat_interleave(4), requires_grad=False)
        self.direct = conv  # for the border strips, with its own padding mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Zero, replicate and circular padding commute with nearest upsampling, so padding the low-res
        # input the same way is exact; reflect does not (it mirrors around a repeated pixel), so its
        # border strips are redone the direct way below.
        mode = {"zeros": "constant", "circular": "circular"}.get(self.padding_mode, "replicate")
        padded = F.pad(x, (self.pad,) * 4, mode=mode)
        y = F.pixel_shuffle(F.conv2d(padded, self.weight, self.bias), 2)
        if self.padding_mode != "reflect" or self.border == 0:
            return y
        b = self.border
        if min(x.shape[-2:]) < b:  # too small for strips: the direct way throughout
            return self._direct(x)
        y[:, :, :b] = self._direct(x[:, :, :b])[:, :, :b]
        y[:, :, -b:] = self._direct(x[:, :, -b:])[:, :, -b:]
        y[:, :, :, :b] = self._direct(x[:, :, :, :b])[:, :, :, :b]
        y[:, :, :, -b:] = self._direct(x[:, :, :, -b:])[:, :, :, -b:]
        return y

    def _direct(self, x: torch.Tensor) -> torch.Tensor:
        return self.direct(F.interpolate(x, scale_factor=2, mode="nearest"))


def can_fold(conv: nn.Module) -> bool:
    """Whether ``conv`` after a nearest ×2 upsample can become an :class:`UpsampledConv`."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size[0] == conv.kernel_size[1]
        and conv.kernel_size[0] % 2 == 1
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding == ((conv.kernel_size[0] - 1) // 2,) * 2
    )


def _is_nearest_x2(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Upsample)
        and module.mode == "nearest"
        and module.size is None
        and module.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
    )


def fold_upsampling(module: nn.Module) -> int:
    """Replace, in place, each nearest ×2 ``Upsample`` followed by a foldable conv (alone or first in a
    ``Sequential``) inside any ``Sequential`` of ``module``. Returns how many were folded."""
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            nxt = seq[i + 1]
            host, key = (nxt, "0") if isinstance(nxt, nn.Sequential) and len(nxt) else (seq, str(i + 1))
            conv = host._modules[key]
            if _is_nearest_x2(seq[i]) and isinstance(conv, nn.Conv2d) and can_fold(conv):
                seq._modules[str(i)] = nn.Identity()
                host._modules[key] = UpsampledConv(conv)
                folded += 1
    return folded


def two_pass_instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``F.instance_norm(x, eps=eps)`` (no affine, biased variance) as two mean reductions, computed in
    fp32 and returned in ``x``'s dtype.

    Same numbers up to float rounding. Inductor's CPU backend vectorises these reductions across the
    channels of a channels-last tensor; its fused instance norm there reduces one channel at a time
    with scalar loads (8× slower for the 16-channel full-resolution layer, a sixth of the forward).
    """
    dtype, x = x.dtype, x.float()
    centred = x - x.mean((2, 3), keepdim=True)
    return (centred * torch.rsqrt(centred.square().mean((2, 3), keepdim=True) + eps)).to(dtype)


class TwoPassInstanceNorm(nn.Module):
    """Drop-in for ``nn.InstanceNorm2d(affine=False)`` computed by :func:`two_pass_instance_norm`."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return two_pass_instance_norm(x, self.eps)


def _switch_instance_norms(
    module: nn.Module, norm: Callable[[float], nn.Module], adain: Callable[[AdaINResBlock], None]
) -> int:
    """Replace, in place, every affine-free ``nn.InstanceNorm2d`` in ``module`` by ``norm(eps)`` and call
    ``adain`` on every AdaIN block (to switch its functional norm). Returns how many were switched."""
    switched = 0
    for parent in list(module.modules()):
        if isinstance(parent, AdaINResBlock):
            adain(parent)
            switched += 1
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm2d) and not child.affine and not child.track_running_stats:
                parent._modules[name] = norm(child.eps)
                switched += 1
    return switched


def use_two_pass_instance_norms(module: nn.Module) -> int:
    """Switch, in place, every affine-free instance norm in ``module`` (``nn.InstanceNorm2d`` modules and
    the AdaIN blocks' functional norm) to :func:`two_pass_instance_norm`. Returns how many were switched."""

    def adain(block: AdaINResBlock) -> None:
        block.instance_norm = two_pass_instance_norm

    return _switch_instance_norms(module, TwoPassInstanceNorm, adain)


def samplewise_instance_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """``F.instance_norm(x, eps=eps)``, then optionally a per-sample affine (``weight`` and ``bias`` N×C:
    AdaIN's ``1 + scale`` and ``shift``), as one batch norm per sample.

    Batch statistics over a batch of one sample are that sample's instance statistics, and one sample of
    a channels-last batch is a contiguous H×W×C block that torch's CPU batch norm normalises in that
    layout, accumulating bf16 in fp32 and applying the affine in the same pass (one rounding).
    ``F.instance_norm`` copies a channels-last input to NCHW and returns NCHW, which the next convolution
    reorders back: for a bf16 8×16×128×256 batch with AdaIN's affine and ReLU this is 5.1 ms against
    7.1 ms (10.7 ms with the layout restored) on one core.
    """
    weight = None if weight is None else weight.float()
    bias = None if bias is None else bias.float()
    out = [
        F.batch_norm(
            x[i : i + 1],
            None,
            None,
            None if weight is None else weight[i],
            None if bias is None else bias[i],
            training=True,
            momentum=0.0,
            eps=eps,
        )
        for i in range(x.shape[0])
    ]
    return out[0] if len(out) == 1 else torch.cat(out)


class SamplewiseInstanceNorm(nn.Module):
    """Drop-in for ``nn.InstanceNorm2d(affine=False)`` computed by :func:`samplewise_instance_norm`."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return samplewise_instance_norm(x, eps=self.eps)


def use_samplewise_instance_norms(module: nn.Module) -> int:
    """Switch, in place, every affine-free instance norm in ``module`` to :func:`samplewise_instance_norm`,
    the AdaIN blocks' norm and modulation to one call of it. Returns how many were switched."""

    def adain(block: AdaINResBlock) -> None:
        block.modulated_norm = samplewise_instance_norm

    return _switch_instance_norms(module, SamplewiseInstanceNorm, adain)


class InferenceGraph(nn.Module):
    """Sim content encoder → real decoder with the stored real style: the translation and nothing else.

    ``norms`` swaps the instance norms: ``two_pass`` for :func:`two_pass_instance_norm` (for compiling),
    ``samplewise`` for :func:`samplewise_instance_norm` (eager channels-last on CPU), ``native`` keeps them.
    """

    style: torch.Tensor

    def __init__(self, translator: Translator, fold: bool = True, norms: str = "native") -> None:
        super().__init__()
        self.content = copy.deepcopy(translator.sim.content)
        self.decoder = copy.deepcopy(translator.real.decoder)
        self.register_buffer("style", translator.real_style.detach().clone())
        self.folded = fold_upsampling(self.decoder) if fold else 0
        if norms == "two_pass":
            use_two_pass_instance_norms(self)
        elif norms == "samplewise":
            use_samplewise_instance_norms(self)
        elif norms != "native":
            raise ValueError(f"norms {norms!r}: expected native, two_pass or samplewise")
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (H, W divisible by the stride) → real style in [-1, 1]."""
        content = self.content(x)
        return self.decoder(content, self.style.to(content.dtype).expand(x.shape[0], -1))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (not by emulation, which would be slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except AttributeError:  # private helpers; absent on some builds
            return False
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` → ``bf16`` where native, ``fp16`` on CUDA without bf16, else ``fp32``; others as given."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("precision fp16: not supported on CPU (use bf16 or fp32)")
        return precision
    if native_bf16(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def start_streams(streams: int, threads: int) -> ThreadPoolExecutor:
    """A pool of ``streams`` threads that each run torch ops with ``threads`` intra-op threads.

    Torch's thread count lives per thread (each thread's OpenMP setting, taken from a process-wide value
    the first time the thread runs a parallel op or reads the count). Each stream sets its own while the
    caller waits for all of them; then the caller puts the process-wide value back, so threads started
    later (and the caller) keep the usual count. A thread that runs its first parallel op within that
    millisecond would take ``threads`` too (it would run slower, not wrong).
    """
    previous = torch.get_num_threads()
    started = threading.Barrier(streams + 1)
    failures: list[str] = []

    def init_stream() -> None:
        torch.set_num_threads(threads)
        # Reading the count runs torch's once-per-thread initialisation now, from the process-wide value
        # just set; run later, it would take the value put back below.
        if torch.get_num_threads() != threads:
            failures.append(f"forward stream got {torch.get_num_threads()} intra-op threads, not {threads}")
            started.abort()
            return
        started.wait()

    pool = ThreadPoolExecutor(streams, thread_name_prefix="forward-stream", initializer=init_stream)
    try:
        # Each submit finds no idle thread (the first ones wait at the barrier) and starts one more.
        for _ in range(streams):
            pool.submit(lambda: None)
        started.wait(timeout=60)
    except threading.BrokenBarrierError:
        pool.shutdown(wait=False, cancel_futures=True)
        raise RuntimeError(f"could not start {streams} forward streams: {failures or 'timed out'}") from None
    finally:
        torch.set_num_threads(previous)
    return pool


class TranslatorEngine:
    """Callable: B×3×H×W sim images in [0, 1] (any device) → real style, same shape, [0, 1], same device.

    Deterministic for a given engine, device and batch. Safe to call from several threads: a compiled
    graph's first call per input shape (the compilation) runs alone; once compiled, calls run side by
    side like eager ones (running compiled code needs no lock; compiling does). ``streams`` (CPU only,
    at most ``torch.get_num_threads()``) starts that many forward threads for :meth:`submit`, each with
    ``torch.get_num_threads() // streams`` intra-op threads; calling the engine directly runs in the
    caller's thread.
    """

    def __init__(
        self,
        translator: Translator,
        device: torch.device | str,
        precision: str = "auto",
        compile: bool = False,
        fold: bool = True,
        batch_size: int = 8,
        streams: int = 1,
    ) -> None:
        if streams < 1:
            raise ValueError(f"TranslatorEngine: streams must be >= 1, got {streams}")
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.compiled = compile
        self.batch_size = batch_size  # compiled engines pad every batch to this many frames
        self.stride = translator.stride
        self.dtype = _DTYPES.get(self.precision)
        # On CPU a bf16 graph holds its weights in bf16 and runs channels-last without autocast (module doc).
        self.cast_graph = self.dtype is not None and self.device.type == "cpu"
        # Compiled, the instance norms take the form inductor vectorises; eager channels-last on CPU, one
        # batch norm per sample (no layout round trip); otherwise the native kernel, which is faster
        # than the two-pass form's separate ops.
        norms = "two_pass" if compile else "samplewise" if self.cast_graph else "native"
        graph = InferenceGraph(translator, fold=fold, norms=norms).to(self.device)
        self.folded = graph.folded
        if self.cast_graph:
            graph = graph.to(self.dtype)
        self.channels_last = self.device.type == "cuda" or self.cast_graph
        if self.channels_last:
            graph = graph.to(memory_format=torch.channels_last)
        self.graph = graph
        if compile:
            # Inductor's C++ toolchain probe warns about a missing CUDA runtime on CPU-only hosts: noise.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        # No ``dynamic=False``: torch.compile applies that as a process-wide config patch on every call,
        # which races when threads call at once. Inputs are marked static instead (one graph per shape).
        self._forward = torch.compile(graph) if compile else graph
        self._compile_lock = threading.Lock()
        self._compiled_shapes: set[tuple[int, ...]] = set()
        # Several CPU streams pay off, at most one per intra-op thread this process may use (a Dask
        # worker started with one thread gets one stream); a GPU runs one (its own queue overlaps the host).
        self.streams = min(streams, torch.get_num_threads()) if self.device.type == "cpu" else 1
        self.threads_per_stream = max(1, torch.get_num_threads() // self.streams)
        self._streams = start_streams(self.streams, self.threads_per_stream) if self.streams > 1 else None

    def describe(self) -> dict[str, object]:
        """The settings that decide the output bytes (for version ids and reports)."""
        return {"precision": self.precision, "compiled": self.compiled, "folded_upsampling": self.folded}

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` (which calls this engine) on a forward stream; without streams,
        run it now in this thread. Returns its future."""
        if self._streams is not None:
            return self._streams.submit(fn, *args, **kwargs)
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        """Stop the forward streams (after the work already submitted)."""
        if self._streams is not None:
            self._streams.shutdown(wait=True)

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
        out = self._translate(images.to(self.device, torch.float32).div_(255).mul_(2).sub_(1))
        out = out.float().add_(1).div_(2).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return out.permute(0, 2, 3, 1).contiguous()

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
