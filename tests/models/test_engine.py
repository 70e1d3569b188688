"""The production inference engine: exact upsample folding, precision choice, compiled graph."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sim2real.models.translator.engine import EngineCache, TranslatorEngine
from sim2real.models.translator.engine_config import EngineConfig, native_bf16, resolve_precision
from sim2real.models.translator.inference import translate_batch
from sim2real.models.translator.inference_graph import (
    InferenceGraph,
    SamplewiseInstanceNorm,
    TwoPassInstanceNorm,
    UpsampledConv,
    can_fold,
    samplewise_instance_norm,
    two_pass_instance_norm,
    use_samplewise_instance_norms,
    use_two_pass_instance_norms,
)
from sim2real.models.translator.model import build_translator
from sim2real.models.translator.networks import AdaINResBlock

from .test_translator import tiny_config


def cpu(**fields) -> EngineConfig:
    """A CPU engine config; one forward thread unless told (the caller's thread count decides)."""
    return EngineConfig(**{"device": "cpu", "forward_threads": 1, **fields})


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_translator(tiny_config()).eval()
    model.real_style.normal_()  # a non-trivial inference style, as after training
    return model


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "zeros", "circular"])
@pytest.mark.parametrize("size", [(5, 7), (4, 4), (9, 16), (3, 2)])
def test_upsampled_conv_equals_upsample_then_conv(kernel: int, mode: str, size: tuple[int, int]):
    torch.manual_seed(kernel)
    conv = nn.Conv2d(4, 6, kernel, 1, (kernel - 1) // 2, padding_mode=mode, bias=kernel != 3)
    x = torch.randn(2, 4, *size)
    upsampled = F.interpolate(x, scale_factor=2, mode="nearest")
    if mode in ("reflect", "circular") and min(upsampled.shape[-2:]) <= (kernel - 1) // 2:
        pytest.skip("the direct convolution itself rejects this padding")
    expected = conv(upsampled)
    folded = UpsampledConv(conv)(x)
    assert folded.shape == expected.shape
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)


def test_only_same_padded_stride_1_odd_square_convs_fold():
    assert can_fold(nn.Conv2d(3, 3, 5, padding=2))
    assert not can_fold(nn.Conv2d(3, 3, 4, padding=1))  # even kernel
    assert not can_fold(nn.Conv2d(3, 3, 3, stride=2, padding=1))
    assert not can_fold(nn.Conv2d(3, 3, 3, padding=0))
    assert not can_fold(nn.Conv2d(4, 4, 3, padding=1, groups=2))
    with pytest.raises(ValueError, match="cannot fold"):
        UpsampledConv(nn.Conv2d(3, 3, 3, padding=0))


def test_inference_graph_folds_every_decoder_upsample(model):
    graph = InferenceGraph(model)
    assert graph.folded == 2  # one upsample → conv pair per downsampling step
    assert not any(isinstance(m, nn.Upsample) for m in graph.modules())
    assert sum(isinstance(m, UpsampledConv) for m in graph.modules()) == 2
    assert any(isinstance(m, nn.Upsample) for m in model.modules()), "the trained model is left as it was"


@pytest.mark.parametrize("size", [(37, 53), (32, 32), (5, 7)])
def test_fp32_engine_matches_the_reference_translation(model, size: tuple[int, int]):
    images = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(1))
    engine = TranslatorEngine(model, cpu(precision="fp32"))
    out = engine(images)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, translate_batch(model, images), rtol=0, atol=1e-5)
    assert torch.equal(out, engine(images)), "the engine must be deterministic"


def test_precision_resolution():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cuda) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp16: not supported on CPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision 'int8'"):
        resolve_precision("int8", cpu)


def test_bf16_engine_stays_close_to_fp32(model):
    images = torch.rand(4, 3, 40, 64, generator=torch.Generator().manual_seed(2))
    reference = TranslatorEngine(model, cpu(precision="fp32"))(images)
    engine = TranslatorEngine(model, cpu(precision="bf16"))
    out = engine(images)
    levels = (out - reference).abs().mul(255)
    assert levels.mean() < 1.0 and levels.max() < 16, (levels.mean(), levels.max())
    assert torch.equal(out, engine(images)), "the engine must be deterministic"


@pytest.mark.parametrize("channels_last", [False, True])
def test_two_pass_instance_norm_equals_the_native_one(channels_last: bool):
    x = torch.randn(3, 16, 9, 14, generator=torch.Generator().manual_seed(4)).mul(3).add(1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(two_pass_instance_norm(x), F.instance_norm(x), rtol=0, atol=1e-5)
    loose = two_pass_instance_norm(x, eps=1e-3)
    torch.testing.assert_close(loose, F.instance_norm(x, eps=1e-3), rtol=0, atol=1e-5)


def test_two_pass_norms_switch_every_instance_norm_and_keep_the_output(model):
    native, switched = InferenceGraph(model), InferenceGraph(model, norms="two_pass")
    instance_norms = sum(isinstance(m, nn.InstanceNorm2d) for m in native.modules())
    adain_blocks = sum(isinstance(m, AdaINResBlock) for m in native.modules())
    assert instance_norms > 0 and adain_blocks > 0
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in switched.modules())
    assert sum(isinstance(m, TwoPassInstanceNorm) for m in switched.modules()) == instance_norms
    assert use_two_pass_instance_norms(InferenceGraph(model)) == instance_norms + adain_blocks
    assert all(b.instance_norm is F.instance_norm for b in model.modules() if isinstance(b, AdaINResBlock))
    x = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(switched(x), native(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_samplewise_instance_norm_equals_the_native_one_and_adain(channels_last: bool, batch: int):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(batch, 16, 9, 14, generator=gen).mul(3).add(1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    normed = samplewise_instance_norm(x)
    torch.testing.assert_close(normed, F.instance_norm(x), rtol=0, atol=1e-5)
    assert normed.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(
        samplewise_instance_norm(x, eps=1e-3), F.instance_norm(x, eps=1e-3), rtol=0, atol=1e-5
    )
    # AdaIN: a different scale and shift per sample and channel.
    weight, bias = torch.randn(batch, 16, generator=gen), torch.randn(batch, 16, generator=gen)
    adain = F.instance_norm(x) * weight[:, :, None, None] + bias[:, :, None, None]
    torch.testing.assert_close(samplewise_instance_norm(x, weight, bias), adain, rtol=0, atol=1e-5)
    # bf16 in, bf16 out, statistics in fp32: one rounding of the exact result.
    low = x.to(torch.bfloat16)
    out = samplewise_instance_norm(low, weight, bias)
    exact = F.instance_norm(low.float()) * weight[:, :, None, None] + bias[:, :, None, None]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), exact, rtol=2**-8, atol=1e-5)


def test_samplewise_norms_switch_every_instance_norm_and_keep_the_output(model):
    native, switched = InferenceGraph(model), InferenceGraph(model, norms="samplewise")
    instance_norms = sum(isinstance(m, nn.InstanceNorm2d) for m in native.modules())
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in switched.modules())
    assert sum(isinstance(m, SamplewiseInstanceNorm) for m in switched.modules()) == instance_norms
    blocks = [m for m in switched.modules() if isinstance(m, AdaINResBlock)]
    assert blocks and all(b.modulated_norm is samplewise_instance_norm for b in blocks)
    assert use_samplewise_instance_norms(InferenceGraph(model)) == instance_norms + len(blocks)
    assert all(b.modulated_norm is None for b in model.modules() if isinstance(b, AdaINResBlock))
    x = torch.rand(3, 3, 24, 40, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(switched(x), native(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="norms 'batch'"):
        InferenceGraph(model, norms="batch")


def test_cpu_bf16_engine_holds_a_bf16_channels_last_graph(model):
    engine = TranslatorEngine(model, cpu(precision="bf16"))
    params = list(engine.graph.parameters())
    assert params and all(p.dtype == torch.bfloat16 for p in params)
    convs = [m for m in engine.graph.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert all(p.dtype == torch.float32 for p in model.parameters()), "the trained module is left alone"
    out = engine(torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(7)))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 24, 40) and out.is_contiguous()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_engine_pixels_are_the_rounded_translation_as_height_width_channels(model, precision: str):
    engine = TranslatorEngine(model, cpu(precision=precision))
    # Decoded batches are H×W×3 arrays seen as B×3×H×W: channels-last strides.
    images = torch.randint(
        0, 256, (3, 24, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(8)
    )
    batch = images.permute(0, 3, 1, 2)
    pixels = engine.pixels(batch)
    expected = engine(batch.float() / 255).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 24, 40, 3) and pixels.is_contiguous()
    assert torch.equal(pixels, expected)
    assert torch.equal(batch, images.permute(0, 3, 1, 2)), "the caller's images are left alone"
    with pytest.raises(ValueError, match="expected uint8 images, got torch.float32"):
        engine.pixels(batch.float())


def test_compiled_engine_matches_eager_and_is_thread_safe(model):
    images = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    eager = TranslatorEngine(model, cpu(precision="fp32"))(images)
    engine = TranslatorEngine(model, cpu(precision="fp32", compile=True), batch_size=2)
    torch.testing.assert_close(engine(images), eager, rtol=0, atol=1e-4)
    short = engine(images[1:])  # a short last batch is padded to the compiled batch size
    assert short.shape == (1, 3, 24, 40)
    torch.testing.assert_close(short, eager[1:], rtol=0, atol=1e-4)
    # Decoded batches arrive channels-last; the engine's input layout is fixed, so no second compile.
    with torch._dynamo.config.patch(error_on_recompile=True):
        torch.testing.assert_close(
            engine(images.contiguous(memory_format=torch.channels_last)), eager, rtol=0, atol=1e-4
        )
    # Compiled once, calls run side by side without the compile lock: same bytes, still no recompile.
    expected = engine(images)
    results: list[torch.Tensor] = []
    with torch._dynamo.config.patch(error_on_recompile=True):
        threads = [
            threading.Thread(target=lambda: results.extend(engine(images) for _ in range(4)))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 12 and all(torch.equal(r, expected) for r in results)


def test_compiled_engine_compiles_each_new_shape_once_under_concurrent_first_calls(model):
    engine = TranslatorEngine(model, cpu(precision="fp32", compile=True), batch_size=2)
    sizes = [(16, 32), (24, 40), (16, 32), (24, 40)]
    batches = [
        torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(i)) for i, size in enumerate(sizes)
    ]
    results: dict[int, torch.Tensor] = {}
    threads = [threading.Thread(target=lambda i=i: results.update({i: engine(batches[i])})) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 1, 2, 3]
    assert engine._compiled_shapes == {(2, 3, 16, 32), (2, 3, 24, 40)}  # stride-padded shapes, one each
    eager = TranslatorEngine(model, cpu(precision="fp32"))
    for i, batch in enumerate(batches):
        torch.testing.assert_close(results[i], eager(batch), rtol=0, atol=1e-4)


@pytest.fixture
def two_threads():
    """Torch at two intra-op threads in this thread (the same test on any machine), restored after."""
    outer = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(outer)


def test_forward_threads_run_with_their_own_intra_op_thread_count(model, two_threads):
    before = torch.get_num_threads()
    engine = TranslatorEngine(model, cpu(precision="fp32", forward_threads=2))
    try:
        assert engine.forward_threads == 2
        assert engine.intra_op_threads == max(1, before // 2)
        assert torch.get_num_threads() == before, "the caller's thread count is put back"
        seen = {engine.submit(torch.get_num_threads).result() for _ in range(8)}
        assert seen == {engine.intra_op_threads}
        names = {engine.submit(lambda: threading.current_thread().name).result() for _ in range(8)}
        assert all(name.startswith("forward") for name in names) and 1 <= len(names) <= 2
        fresh: list[int] = []
        thread = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert fresh == [before], "threads started later keep the process's count"
        images = torch.rand(3, 3, 24, 40, generator=torch.Generator().manual_seed(6))
        futures = [engine.submit(engine, images) for _ in range(4)]
        direct = engine(images)
        assert all(torch.equal(future.result(), direct) for future in futures)
        failing = engine.submit(engine, torch.rand(3, 8, 8))
        with pytest.raises(ValueError, match="B×3×H×W"):
            failing.result()
    finally:
        engine.close()
    with TranslatorEngine(model, cpu(forward_threads=1)) as single:  # one thread with every core
        assert single.forward_threads == 1 and single.submit(torch.get_num_threads).result() == before
    torch.set_num_threads(1)  # e.g. a Dask worker: one thread, so one forward thread
    with TranslatorEngine(model, cpu(forward_threads=2)) as one:
        assert (one.forward_threads, one.intra_op_threads) == (1, 1)
    with pytest.raises(ValueError, match="forward_threads"):
        cpu(forward_threads=0)


def test_engine_cache_builds_once_and_closes_what_it_evicts(model):
    cache = EngineCache(size=1)
    built: list[str] = []

    def build(name: str):
        def make() -> TranslatorEngine:
            built.append(name)
            return TranslatorEngine(model, cpu(forward_threads=2))

        return make

    first = cache.get("a", build("a"))
    assert cache.get("a", build("a")) is first and built == ["a"]
    threads = set(first._threads._threads)  # the executor's worker threads
    assert len(threads) == first.forward_threads and all(t.is_alive() for t in threads)
    second = cache.get("b", build("b"))
    assert built == ["a", "b"]
    with pytest.raises(RuntimeError, match="shutdown"):
        first.submit(lambda: None)  # evicted: closed
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "the evicted engine's forward threads ended"
    cache.clear()
    with pytest.raises(RuntimeError, match="shutdown"):
        second.submit(lambda: None)


def test_engine_rejects_non_image_batches(model):
    with pytest.raises(ValueError, match="B×3×H×W"):
        TranslatorEngine(model, cpu(precision="fp32"))(torch.rand(3, 8, 8))
