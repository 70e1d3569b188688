"""The translate path below Prefect: read a shard in batches (storage), translate the pixels (models),
write the checked shard (storage) — decode workers, batching by size, labels as raw bytes, checked writes."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sim2real.models.translator.engine import TranslatorEngine
from sim2real.models.translator.engine_config import EngineConfig
from sim2real.models.translator.inference import translate_batch
from sim2real.models.translator.model import build_translator
from sim2real.storage import schema, translate_read
from sim2real.storage.image_encoding import PNG_STRATEGIES, EncodeConfig, encode_rgb
from sim2real.storage.manifest import manifest_row, with_member_hashes
from sim2real.storage.png import _chunk as png_chunk
from sim2real.storage.shards import read_shard, write_shard
from sim2real.storage.translate import LabelMismatch, Lineage, write_translated_shard
from sim2real.storage.translate_read import (
    AUTO_FRAMES_PER_PROCESS,
    FrameBatch,
    PipelineConfig,
    decode_pool,
    read_batches,
)
from sim2real.storage.versions import DatasetStore
from sim2real.tasks.translate_work import translated

from ..models.test_translator import tiny_config

SIZES = [(24, 40), (32, 48), (24, 40), (24, 40), (32, 48), (24, 40), (24, 40), (32, 48)]
BAD = {3: "truncated", 5: "two IHDR", 6: "garbage"}
LINEAGE = Lineage("toy@v0", "t123", "w456")


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sample(index: int, size: tuple[int, int], rng: np.random.Generator) -> tuple[str, dict[str, bytes]]:
    rgb = png(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    if BAD.get(index) == "truncated":
        rgb = rgb[:60]  # header readable, pixels missing
    elif BAD.get(index) == "garbage":
        rgb = b"not an image at all"
    elif BAD.get(index) == "two IHDR":  # batched by its first IHDR; Pillow decodes the second's image
        small = png(rng.integers(0, 256, (size[0] // 2, size[1] // 2, 3), dtype=np.uint8))
        header = struct.pack(">IIBBBBB", size[1], size[0], 8, 2, 0, 0, 0)
        rgb = small[:8] + png_chunk(b"IHDR", header) + small[8:]
    members = {
        "rgb.png": rgb,
        "seg.png": png(rng.integers(0, 19, size, dtype=np.uint8)),
        "boxes.json": b"[]",
        "meta.json": json.dumps({"frame": index}).encode(),
    }
    key = f"frame-{index:03d}"
    return key, with_member_hashes(key, members)


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetStore, str, dict[str, dict]]:
    root = tmp_path_factory.mktemp("pipeline")
    store = DatasetStore(str(root))
    rng = np.random.default_rng(0)
    samples = [sample(i, size, rng) for i, size in enumerate(SIZES)]
    url = f"{root}/src-000000.tar"
    write_shard(store.fs, url, samples)
    rows = {key: manifest_row(key, "src-000000.tar", members) for key, members in samples}
    return store, url, rows


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_translator(tiny_config()).eval()


@pytest.fixture(scope="module")
def engine(model) -> TranslatorEngine:
    return TranslatorEngine(model, EngineConfig(device="cpu", precision="fp32", forward_threads=1))


@dataclass
class Frame:
    """One frame of a translated batch, for assertions."""

    position: int
    key: str
    members: dict[str, bytes]
    source_rgb_sha256: str | None
    rgb: np.ndarray | None
    error: str | None
    encoded: bytes | None


def translate_shard_frames(
    engine: TranslatorEngine, url: str, config: PipelineConfig, encode=None
) -> list[FrameBatch]:
    """The chain the shard task runs: read → translate (→ write, separately)."""
    return list(translated(engine, read_batches(url, config), encode))


def frames_of(batches: list[FrameBatch]) -> list[Frame]:
    return [
        Frame(
            b.positions[i],
            b.keys[i],
            b.labels[i],
            b.source_rgb_sha256[i],
            None if b.pixels is None else b.pixels[i],
            b.error(i),
            None if b.encoded is None else b.encoded[i],
        )
        for b in batches
        for i in range(len(b.keys))
    ]


def run(engine: TranslatorEngine, url: str, workers: int, batch_size: int = 3) -> dict[str, Frame]:
    config = PipelineConfig(batch_size=batch_size, decode_workers=workers)
    return {f.key: f for f in frames_of(translate_shard_frames(engine, url, config))}


def drop(batches: list[FrameBatch], key: str) -> list[FrameBatch]:
    """The batches without frame ``key``."""
    out = []
    for b in batches:
        keep = [i for i, k in enumerate(b.keys) if k != key]
        out.append(
            FrameBatch(
                [b.positions[i] for i in keep],
                [b.keys[i] for i in keep],
                [b.labels[i] for i in keep],
                [b.source_rgb_sha256[i] for i in keep],
                errors=None if b.errors is None else [b.errors[i] for i in keep],
                pixels=None if b.pixels is None else b.pixels[keep],
                encoded=None if b.encoded is None else [b.encoded[i] for i in keep],
            )
        )
    return out


def tamper(batches: list[FrameBatch], key: str, **members: bytes) -> FrameBatch:
    """Replace label members of frame ``key`` in place; returns its batch."""
    batch = next(b for b in batches if key in b.keys)
    i = batch.keys.index(key)
    batch.labels[i] = {**batch.labels[i], **members}
    return batch


def test_every_frame_once_sizes_kept_failures_reported(engine, shard):
    _, url, _ = shard
    frames = run(engine, url, workers=0)
    assert sorted(f.position for f in frames.values()) == list(range(len(SIZES)))
    for position, size in enumerate(SIZES):
        frame = frames[f"frame-{position:03d}"]
        assert "rgb.png" not in frame.members and "seg.png" in frame.members
        if position in BAD:
            assert frame.rgb is None and "cannot decode image" in (frame.error or "")
            if BAD[position] == "two IHDR":
                assert f"its pixels are {size[0] // 2}x{size[1] // 2}, its header says 24x40" in frame.error
        else:
            assert frame.rgb is not None and frame.rgb.shape == (*size, 3) and frame.rgb.dtype == np.uint8


def test_worker_count_does_not_change_pixels(engine, shard):
    _, url, _ = shard
    alone, pooled = run(engine, url, workers=0), run(engine, url, workers=2)
    assert alone.keys() == pooled.keys()
    for key, frame in alone.items():
        other = pooled[key]
        assert (frame.rgb is None and other.rgb is None) or np.array_equal(frame.rgb, other.rgb)
        assert frame.members == other.members  # labels stay in the task; only image bytes go to workers
        assert (frame.error, frame.source_rgb_sha256) == (other.error, other.source_rgb_sha256)


def test_batched_pixels_match_single_image_translation(model, engine, shard):
    store, url, _ = shard
    frames = run(engine, url, workers=0, batch_size=4)
    for key, members in read_shard(store.fs, url):
        if frames[key].rgb is None:
            continue
        image = torch.from_numpy(np.array(Image.open(io.BytesIO(members["rgb.png"])))).permute(2, 0, 1)
        single = translate_batch(model, image[None].float() / 255)[0].mul(255).round().to(torch.uint8)
        diff = np.abs(single.permute(1, 2, 0).numpy().astype(int) - frames[key].rgb.astype(int))
        assert diff.max() <= 1  # batching and the folded inference graph change float rounding only


def test_written_shard_copies_labels_and_quarantines_bad_frames(engine, shard, tmp_path: Path):
    _, url, rows = shard
    store = DatasetStore(str(tmp_path))
    frames = translate_shard_frames(engine, url, PipelineConfig(batch_size=3, decode_workers=1))
    part = write_translated_shard(
        store, ("out", "v1", 0), frames, (url, rows), EncodeConfig(image_format="jpg"), LINEAGE
    )
    assert sorted(q["key"] for q in part["quarantine"]) == [f"frame-{i:03d}" for i in sorted(BAD)]
    written = list(read_shard(store.fs, store.shard_path("out", "v1", 0)))
    assert [k for k, _ in written] == [
        f"frame-{i:03d}" for i in range(len(SIZES)) if i not in BAD
    ]  # source order
    for key, members in written:
        assert set(members) == {"rgb.jpg", "seg.png", "boxes.json", "meta.json"}
        assert schema.sha256_hex(members["seg.png"]) == rows[key]["sha256_seg_png"]
        assert json.loads(members["meta.json"])["translation"]["translator_id"] == "t123"
    assert store.read_json(store.part_path("out", "v1", 0))["shard"]["nsamples"] == len(written)


def test_label_differing_from_source_manifest_stops_the_shard(engine, shard, tmp_path: Path):
    _, url, rows = shard
    store = DatasetStore(str(tmp_path))
    frames = translate_shard_frames(engine, url, PipelineConfig(batch_size=3, decode_workers=0))
    victim = next(f for f in frames_of(frames) if f.rgb is not None)
    tamper(frames, victim.key, **{"seg.png": b"x"})
    with pytest.raises(LabelMismatch, match=rf"{victim.key}.*seg.png"):
        write_translated_shard(store, ("out", "v1", 0), frames, (url, rows), EncodeConfig(), LINEAGE)
    assert not store.fs.exists(store.shard_path("out", "v1", 0))
    assert not store.fs.exists(store.part_path("out", "v1", 0))


def test_forward_threads_encode_their_own_frames_and_the_shard_bytes_do_not_change(
    model, engine, shard, tmp_path
):
    _, url, rows = shard
    config = PipelineConfig(batch_size=3, decode_workers=0)
    png = EncodeConfig(image_format="png")

    def encode(rgb: np.ndarray) -> bytes:
        return encode_rgb(rgb, png)

    streamed = TranslatorEngine(model, EngineConfig(device="cpu", precision="fp32", forward_threads=2))
    if streamed.forward_threads < 2:
        pytest.skip("one intra-op thread: the engine runs one stream")
    inline = translate_shard_frames(streamed, url, config, encode=encode)
    done = [f for f in frames_of(inline) if f.rgb is not None]
    assert done and all(f.encoded == encode(f.rgb) for f in done)
    assert all(f.encoded is None for f in frames_of(inline) if f.rgb is None)
    # One forward thread: frames come out unencoded, for the writer's encoder pool.
    unencoded = frames_of(translate_shard_frames(engine, url, config, encode=encode))
    assert all(f.encoded is None for f in unencoded)

    store = DatasetStore(str(tmp_path))
    parts = {}
    for name, frames in (("inline", inline), ("pool", translate_shard_frames(engine, url, config))):
        parts[name] = write_translated_shard(store, (name, "v1", 0), frames, (url, rows), png, LINEAGE)
    assert parts["inline"]["shard"]["md5"] == parts["pool"]["shard"]["md5"]
    shard_rows = {
        n: store.read_table(f"{tmp_path}/datasets/{n}/v1/shards/{n}-000000.parquet").to_pylist()
        for n in parts
    }
    strip = [[{k: v for k, v in row.items() if k != "shard"} for row in shard_rows[n]] for n in parts]
    assert strip[0] == strip[1] and len(strip[0]) == parts["pool"]["shard"]["nsamples"]


def test_a_frame_missing_or_foreign_to_the_source_manifest_stops_the_shard(engine, shard, tmp_path: Path):
    _, url, rows = shard
    store = DatasetStore(str(tmp_path))
    frames = translate_shard_frames(engine, url, PipelineConfig(batch_size=3, decode_workers=0))
    dropped = drop(frames, "frame-002")
    with pytest.raises(LabelMismatch, match=r"differ from the source manifest: missing \['frame-002'\]"):
        write_translated_shard(store, ("out", "v1", 0), dropped, (url, rows), EncodeConfig(), LINEAGE)
    victim = next(f for f in frames_of(frames) if f.rgb is not None)
    swapped = translate_shard_frames(engine, url, PipelineConfig(batch_size=3, decode_workers=0))
    batch = next(b for b in swapped if victim.key in b.keys)
    batch.keys[batch.keys.index(victim.key)] = "frame-999"
    with pytest.raises(LabelMismatch, match="'frame-999' is not in the source manifest"):
        write_translated_shard(store, ("out", "v1", 0), swapped, (url, rows), EncodeConfig(), LINEAGE)
    assert not store.fs.exists(store.shard_path("out", "v1", 0))
    assert not store.fs.exists(store.part_path("out", "v1", 0))
    assert not any("tmp-" in p for p in store.fs.find(str(tmp_path))), "no temporary file left"


def test_encoding_is_deterministic_and_png_lossless():
    rgb = np.random.default_rng(1).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    rgb[:8] = rgb[0, 0]  # a flat band, where the zlib strategies differ
    for config in (EncodeConfig(image_format="png"), EncodeConfig(image_format="jpg", jpeg_quality=80)):
        assert encode_rgb(rgb, config) == encode_rgb(rgb.copy(), config)
    for writer in ({"png_deflate": "zlib-ng"}, {"png_filter": "adaptive"}):  # our writer's zlib-ng, PIL's
        encoded = {s: encode_rgb(rgb, EncodeConfig(png_strategy=s, **writer)) for s in PNG_STRATEGIES}
        assert encoded["rle"] != encoded["default"]  # the strategy reaches zlib
        for data in encoded.values():
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)
    by_filter = {
        f: encode_rgb(rgb, EncodeConfig(image_format="png", png_filter=f))
        for f in ("adaptive", "paeth", "sub")
    }
    assert len(set(by_filter.values())) == 3  # the filter reaches the writer
    assert encode_rgb(rgb, EncodeConfig(image_format="png")) == by_filter["paeth"]  # the default: paeth
    by_level = {level: encode_rgb(rgb, EncodeConfig(png_compress_level=level)) for level in range(4)}
    assert by_level[1] == by_filter["paeth"] and by_level[0] != by_level[1]  # the default: ISA-L level 1
    for data in by_level.values():
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)


def test_png_settings_resolve_to_one_form_and_conflicts_are_refused():
    default = EncodeConfig()
    assert (default.png_deflate, default.png_compress_level, default.png_strategy) == ("isal", 1, None)
    assert default == EncodeConfig(png_deflate="isal", png_compress_level=1)  # written out: the same config
    zlib = EncodeConfig(png_deflate="zlib-ng")
    assert (zlib.png_compress_level, zlib.png_strategy) == (6, "rle")
    pil = EncodeConfig(png_filter="adaptive")
    assert (pil.png_deflate, pil.png_compress_level, pil.png_strategy) == (None, 6, "rle")
    old_defaults = EncodeConfig(png_compress_level=6, png_strategy="rle")  # written before ISA-L: zlib-ng
    assert old_defaults == zlib == EncodeConfig(png_strategy="rle") == EncodeConfig(png_compress_level="6")
    assert EncodeConfig(image_format="jpg", png_compress_level=9).png_deflate == "zlib-ng"  # not refused
    with pytest.raises(ValueError, match="png_compress_level 6: isal has levels 0-3; set png_deflate"):
        EncodeConfig(png_deflate="isal", png_compress_level=6)
    with pytest.raises(ValueError, match="png_strategy 'rle': ISA-L has no zlib strategies"):
        EncodeConfig(png_deflate="isal", png_strategy="rle")
    with pytest.raises(ValueError, match="png_deflate 'isal': png_filter 'adaptive' is Pillow's writer"):
        EncodeConfig(png_filter="adaptive", png_deflate="isal")
    with pytest.raises(ValueError, match="(?s)png_deflate.*input_value='lz4'"):
        EncodeConfig(png_deflate="lz4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="(?s)png_strategy.*input_value='lz4'"):
        EncodeConfig(image_format="png", png_deflate="zlib-ng", png_strategy="lz4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="(?s)png_filter.*input_value='median'"):
        EncodeConfig(image_format="png", png_filter="median")  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_pipeline_matches_cpu_closely(model, engine, shard):
    _, url, _ = shard
    cpu = run(engine, url, workers=1)
    cuda = run(
        TranslatorEngine(model, EngineConfig(device="cuda")), url, workers=1
    )  # bf16 where the GPU has it
    for key, frame in cpu.items():
        if frame.rgb is None:
            assert cuda[key].rgb is None
        else:
            diff = np.abs(cuda[key].rgb.astype(int) - frame.rgb.astype(int))
            assert diff.mean() < 4  # bf16 autocast on the GPU


def test_decode_pool_starts_every_worker_up_front():
    # The executor alone would start forkserver workers one per submitted job: a 2-frame warm-up shard
    # would start one, and the next shard would wait while the others start.
    pool = decode_pool(2, "forkserver")
    pids = {process.pid for process in pool._processes.values()}
    assert len(pids) == 2 and all(process.is_alive() for process in pool._processes.values())
    assert {pool.submit(os.getpid).result() for _ in range(8)} <= pids


def test_decode_pool_is_kept_and_a_dead_worker_gives_a_clear_retryable_error(shard):
    _, url, _ = shard
    config = PipelineConfig(batch_size=3, decode_workers=1)
    first = list(read_batches(url, config))
    pool = decode_pool(1, config.start_method)
    assert decode_pool(1, config.start_method) is pool, "one pool per process, reused across shards"
    for process in list(pool._processes.values()):  # a worker killed by the OOM killer, say
        os.kill(process.pid, signal.SIGKILL)
        process.join()
    with pytest.raises(RuntimeError, match="a decode worker process died.*can be retried"):
        list(read_batches(url, config))
    again = list(read_batches(url, config))  # a fresh pool
    assert decode_pool(1, config.start_method) is not pool
    assert [b.keys for b in again] == [b.keys for b in first]
    assert all(
        (a.images is None and b.images is None) or np.array_equal(a.images, b.images)
        for a, b in zip(again, first, strict=True)
    )


def test_worker_processes_follow_the_run_size_unless_set(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(translate_read, "usable_cores", lambda: 4)
    auto = PipelineConfig()
    enough = 4 * AUTO_FRAMES_PER_PROCESS
    assert auto.shard_processes is None
    assert auto.processes_for(enough - 1, 100) == 0  # a short run: the flow's own process
    assert auto.processes_for(enough, 100) == 4  # one per core
    assert auto.processes_for(enough, 3) == 3  # never more than one per shard
    assert auto.resolve("cuda").processes_for(10 * enough, 100) == 0  # one process shares the GPU
    assert PipelineConfig(shard_processes=0).processes_for(10 * enough, 100) == 0
    assert PipelineConfig(shard_processes=2).processes_for(1, 100) == 2
    monkeypatch.setattr(translate_read, "usable_cores", lambda: 1)
    assert auto.processes_for(10 * enough, 100) == 0  # one core: nothing to win
