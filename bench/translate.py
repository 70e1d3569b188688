"""Translate throughput, three ways on the same model and frames, in one run.

(a) the translate flow end to end with its defaults (Prefect thread runner, two shard tasks at once,
    one task per shard: decoding, batched forward, threaded encoding, checked shard writes, commit,
    artifacts), frames/s;
(b) a batch-1 fp32 per-image loop as the official MUNIT/CUT test scripts run: decode one image,
    forward it, encode it, write it, next;
(c) the forward pass alone on pre-decoded tensors: the same engine as (a) (inference graph, precision,
    compiled or not, forward threads) at (a)'s batch size, every forward thread kept busy (the ceiling).

Prints a/b (goal ≥ 3 on CPU, ≥ 20 on a GPU) and a/c (goal ≥ 0.8), and how far (a)'s pixels are from
(b)'s fp32 reference (bf16 and kernel choice move some pixels by a level or two). Each mode runs
``--rounds`` times, interleaved, and the best round counts, so load from other processes skews the ratios
less. A warm-up flow run on two frames first starts the embedded Prefect server and, with ``--compile``,
compiles the engine; its time is printed, not counted in (a).

(b) and (c) run in a worker thread, as (a)'s forward passes do under Prefect's thread runner: on a
busy machine torch's OpenMP team in the main thread can be ~2× slower than in a fresh thread, which
would flatter (a) against a main-thread baseline.

    .venv/bin/python bench/translate.py            # CPU, demo translator, 1536 frames 128x256, 256/shard
    .venv/bin/python bench/translate.py --compile
    .venv/bin/python bench/translate.py --device cuda --profile full --size 256x512 --frames 1024 \
        --shard-samples 256 --decode-workers 4 --encode-threads 8 --batch-size 32 --rounds 2 --compile

On a lent GPU machine, ``bench/gpu/run.sh`` runs the GPU tests and this benchmark three ways in one
call (``bench/gpu/make_kit.sh`` prepares the wheels it needs, here).

On a GPU, shards of 64 frames at batch 32 are two batches each (the pipeline fills and drains per
shard): use larger shards, as ingest writes (up to 1000 frames).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sim2real.flows.runtime import quiet_prefect

quiet_prefect()

from sim2real.flows.runners import RunnerConfig  # noqa: E402 - after quiet_prefect, as the CLI does
from sim2real.flows.train_translator import load_profile  # noqa: E402
from sim2real.flows.translate import TranslateConfig, run_translate  # noqa: E402
from sim2real.models.device import resolve_device  # noqa: E402
from sim2real.models.translator.checkpoint import load_translator, translator_weights  # noqa: E402
from sim2real.models.translator.engine import TranslatorEngine  # noqa: E402
from sim2real.models.translator.engine_config import PRECISIONS  # noqa: E402
from sim2real.models.translator.model import Translator, build_translator  # noqa: E402
from sim2real.storage import ingest  # noqa: E402
from sim2real.storage.image_encoding import EncodeConfig, encode_rgb  # noqa: E402
from sim2real.storage.reader import decode_rgb, raw_samples  # noqa: E402
from sim2real.storage.registry import TranslatorRegistry  # noqa: E402
from sim2real.storage.schema import rgb_member  # noqa: E402
from sim2real.storage.sources.toysim import ToySimConfig, write_export  # noqa: E402
from sim2real.storage.versions import DatasetStore, Version  # noqa: E402
from sim2real.tasks.translate_work import cached_engine  # noqa: E402


def make_source(root: str, name: str, frames: int, size: tuple[int, int], shard_samples: int) -> Version:
    """Render ``frames`` toy sim frames and ingest them (no Prefect) as ``name``."""
    export = Path(root) / f"export-{name}"
    write_export(export, ToySimConfig(style="sim", height=size[0], width=size[1], seed=1), frames)
    config = ingest.IngestConfig(max_shard_samples=shard_samples)
    return ingest.ingest_serially(DatasetStore(root), str(export), name, config)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def flow_run(
    source: Version, translator: str, out_name: str, config: TranslateConfig, runner: RunnerConfig, root: str
) -> tuple[float, str]:
    """(a) seconds for the translate flow end to end, and the translated version's ref."""
    started = time.perf_counter()
    result = run_translate(
        runner, source=source.ref, translator=translator, out_name=out_name, root=root, config=config
    )
    elapsed = time.perf_counter() - started
    assert result["samples"] == source.num_samples and result["skipped_shards"] == 0, result
    return elapsed, f"{result['name']}@{result['version']}"


def per_image_loop(
    source: Version, model: Translator, device: torch.device, encode: EncodeConfig, out_dir: Path
) -> float:
    """(b) seconds for decode → batch-1 fp32 forward → encode → write, one image at a time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for raw in raw_samples(source.shard_urls):
        image = decode_rgb(raw[rgb_member([k for k in raw if not k.startswith("__")])])
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255).to(device)
        with torch.no_grad():
            content = model.sim.content(x * 2 - 1)
            style = model.real_style.expand(1, -1)
            out = model.real.decode(content, style).add(1).div(2).clamp(0, 1)
        pixels = out[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        (out_dir / f"{raw['__key__']}.{encode.image_format}").write_bytes(encode_rgb(pixels, encode))
    return time.perf_counter() - started


def forward_only(images: torch.Tensor, engine: TranslatorEngine, batch_size: int) -> float:
    """(c) seconds for the engine over pre-decoded images already on the device, all batches queued on
    its forward threads at once."""
    sync(engine.device)
    started = time.perf_counter()
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    for future in [engine.submit(engine, batch) for batch in batches]:
        future.result()
    sync(engine.device)
    return time.perf_counter() - started


def pixel_drift(translated: Version, reference_dir: Path) -> dict[str, float | None]:
    """How far the flow's translated pixels are from (b)'s fp32 reference, in 8-bit levels."""
    diffs = []
    for raw in raw_samples(translated.shard_urls):
        image = decode_rgb(raw[rgb_member([k for k in raw if not k.startswith("__")])]).astype(np.int16)
        reference = np.asarray(Image.open(reference_dir / f"{raw['__key__']}.png").convert("RGB"))
        diffs.append(np.abs(image - reference.astype(np.int16)))
    levels = np.stack(diffs)
    mse = float(np.mean(levels.astype(np.float64) ** 2))
    return {
        "mean_levels": round(float(levels.mean()), 3),
        "max_levels": int(levels.max()),
        "changed_pixels": round(float((levels > 0).mean()), 4),
        "psnr_db": round(10 * math.log10(255**2 / mse), 1) if mse else None,  # None: identical
    }


def decoded(source: Version, device: torch.device, limit: int | None = None) -> torch.Tensor:
    """The first ``limit`` (default: all) source images as one N×3×H×W float tensor in [0, 1] on
    ``device`` (12 bytes a pixel: 1.2 GB for 3,072 frames of 128×256)."""
    arrays = [
        decode_rgb(r[rgb_member([k for k in r if not k.startswith("__")])])
        for r in itertools.islice(raw_samples(source.shard_urls), limit)
    ]
    return (
        torch.stack([torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrays]).float().div(255).to(device)
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--frames", type=int, default=1536, help="enough that the ~1 s per flow run is small (~8 %%)"
    )
    parser.add_argument("--size", default="128x256", help="HxW of the toy frames")
    parser.add_argument("--profile", default="demo", help="translator profile: tiny, demo, full")
    parser.add_argument(
        "--shard-samples",
        type=int,
        default=256,
        help="frames per source shard: 256 makes six ~3-s shard tasks on 2 CPU cores (DESIGN: a task "
        "carries seconds of work; ingest writes up to 1000); 64 (the default before 2026-11-26's "
        "second session) makes 0.9-s tasks, each costing the embedded server ~25 ms of CPU",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--decode-workers", type=int, default=None, help="default: the flow's (0 on CPU)")
    parser.add_argument("--encode-threads", type=int, default=None, help="default: the flow's")
    parser.add_argument(
        "--max-workers", type=int, default=RunnerConfig().max_workers, help="shard tasks at once (the flow's)"
    )
    parser.add_argument("--format", default="png", choices=("png", "jpg"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--compile", action="store_true", help="torch.compile the engine in (a) and (c)")
    parser.add_argument(
        "--forward-threads",
        "--cpu-streams",
        type=int,
        default=TranslateConfig().engine.forward_threads,
        help="CPU forward threads (the flow's)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the best counts")
    parser.add_argument("--root", default=None, help="storage root (default: a temporary folder)")
    parser.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="CUDA: let cuDNN time its convolution algorithms (all three modes; not what the flow does)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line too")
    return parser.parse_args()


def setup(args: argparse.Namespace, root: str) -> tuple[Version, Version, str, TranslateConfig]:
    """The benchmark and warm-up source versions, a fresh translator of ``args.profile``, the config."""
    height, width = (int(v) for v in args.size.lower().split("x"))
    source = make_source(root, "bench", args.frames, (height, width), args.shard_samples)
    warm = make_source(root, "warm", 2, (height, width), args.shard_samples)
    torch.manual_seed(0)
    translator_config = load_profile(args.profile).translator
    translator = TranslatorRegistry(root).save(
        translator_weights(build_translator(translator_config)),
        {"config": translator_config.model_dump(mode="json")},
    )
    config = TranslateConfig.model_validate(
        {
            "encode": {"image_format": args.format},
            "pipeline": {
                "batch_size": args.batch_size,
                "decode_workers": args.decode_workers,
                "encode_threads": args.encode_threads,
            },
            "engine": {
                "device": str(resolve_device(args.device)),
                "precision": args.precision,
                "compile": args.compile,
                "forward_threads": args.forward_threads,
            },
        }
    )
    return source, warm, translator, config


STARTED = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr as each phase ends, so a run cut off by a time limit still tells how far it
    got and how long each phase took (a GPU lease is short)."""
    print(f"[bench/translate +{time.perf_counter() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, root: str) -> dict[str, Any]:
    """Set up data and model, time the three modes ``args.rounds`` times, return the best of each."""
    source, warm, translator, config = setup(args, root)
    progress(f"{args.frames} source frames rendered and ingested")
    device = torch.device(config.engine.device)
    model, _ = load_translator(TranslatorRegistry(root), translator, device)
    runner = RunnerConfig(kind="thread", max_workers=args.max_workers)
    # Starts the embedded server and, with --compile, compiles the engine (warm's 2 frames are padded to
    # the batch size): reported as "warm-up", not in (a).
    warmup_seconds, _ = flow_run(warm, translator, "warm-translated", config, runner, root)
    progress(f"warm-up flow {warmup_seconds:.1f} s")
    images = decoded(source, device)
    # The flow's own engine (built by the warm-up, compiled there with --compile): same graph and threads.
    engine = cached_engine(root, translator, config.engine.resolve(), args.batch_size)
    times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline") as thread:
        # Warm-up (compiles, with --compile): one batch per forward thread.
        thread.submit(
            forward_only, images[: args.batch_size * engine.forward_threads], engine, args.batch_size
        ).result()
        for round_index in range(args.rounds):
            times["c"].append(thread.submit(forward_only, images, engine, args.batch_size).result())
            progress(f"round {round_index + 1}: (c) {args.frames / times['c'][-1]:.1f} frames/s")
            out_dir = Path(root) / f"b{round_index}"
            times["b"].append(
                thread.submit(per_image_loop, source, model, device, config.encode, out_dir).result()
            )
            progress(f"round {round_index + 1}: (b) {args.frames / times['b'][-1]:.1f} frames/s")
            seconds, translated = flow_run(source, translator, f"bench-a{round_index}", config, runner, root)
            times["a"].append(seconds)
            progress(f"round {round_index + 1}: (a) {args.frames / seconds:.1f} frames/s")
    store = DatasetStore(root)
    drift = pixel_drift(store.open(translated), Path(root) / "b0") if args.format == "png" else {}
    fps = {mode: args.frames / min(seconds) for mode, seconds in times.items()}
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{os.cpu_count()}",
        "torch_threads": torch.get_num_threads(),
        "profile": args.profile,
        "frames": args.frames,
        "size": args.size,
        "batch_size": args.batch_size,
        "max_workers": args.max_workers,
        "format": args.format,
        "cudnn_benchmark": args.cudnn_benchmark,
        "fps": {mode: round(value, 2) for mode, value in fps.items()},
        "seconds": {mode: [round(s, 2) for s in values] for mode, values in times.items()},
        "a_over_b": round(fps["a"] / fps["b"], 2),
        "a_over_c": round(fps["a"] / fps["c"], 2),
        "engine": {**engine.describe(), "forward_threads": engine.forward_threads},
        "a_cold_seconds": round(times["a"][0], 2),
        "warmup_seconds": round(warmup_seconds, 2),
        "drift_vs_b": drift,
    }


def main() -> None:
    args = parse_args()
    # The full translator is ~223 GFLOP per 256x512 frame: the H200's eager 405 frames/s is ~90 TFLOP/s,
    # a ninth of its bf16 matrix rate, so cuDNN's algorithm choice is worth trying there.
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    with tempfile.TemporaryDirectory(prefix="bench-translate-") as tmp:
        result = run(args, args.root or tmp)
    print(
        f"device {result['device']}, profile {result['profile']}, {result['frames']} frames "
        f"{result['size']}, batch {result['batch_size']}, {result['format']}"
    )
    names = {"a": "flow end to end", "b": "batch-1 fp32 per-image loop", "c": "forward alone"}
    for mode, name in names.items():
        print(
            f"  ({mode}) {name:<28} {result['fps'][mode]:8.2f} frames/s   rounds {result['seconds'][mode]} s"
        )
    print(f"  a/b = {result['a_over_b']:.2f}  (goal >= 3 on CPU, >= 20 on GPU)")
    print(f"  a/c = {result['a_over_c']:.2f}  (goal >= 0.8)")
    print(
        f"  engine {result['engine']}; warm-up flow on 2 frames (server start, compilation) "
        f"{result['warmup_seconds']} s; (a) first round {result['a_cold_seconds']} s"
    )
    if result["drift_vs_b"]:
        print(f"  (a) pixels vs (b)'s fp32 reference: {result['drift_vs_b']}")
    if args.json:
        print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
