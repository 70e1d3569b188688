"""CPU time per frame of ``TranslatorEngine.pixels`` against the straightforward computation of the same
pixels, for a teacher and a student, on one thread.

The baseline is what the engine did before ``models/translator/pixel_blocks.py``: scale the uint8 batch
in float32, cast it to a bf16 channels-last tensor, run the whole graph (a student's ``pixel_unshuffle``
and ``pixel_shuffle`` included), round its output in float32. Both give the same pixels (checked here);
rounds are interleaved and the least CPU time of each counts. Prints one JSON object.

    .venv/bin/python bench/engine_pixels.py                          # fresh demo-profile pair
    .venv/bin/python bench/engine_pixels.py --root R --teacher ID --student ID
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the sibling bench module

from bench.distill import fresh_pair  # noqa: E402
from sim2real.models.translator.checkpoint import load_translator  # noqa: E402
from sim2real.models.translator.engine import TranslatorEngine  # noqa: E402
from sim2real.models.translator.engine_config import EngineConfig  # noqa: E402
from sim2real.models.translator.pixel_blocks import to_levels  # noqa: E402
from sim2real.storage.registry import TranslatorRegistry  # noqa: E402


def straightforward(engine: TranslatorEngine, images: torch.Tensor) -> torch.Tensor:
    """The baseline: float32 scaling, the whole graph, float32 rounding."""
    with torch.inference_mode():
        x = images.to(torch.float32).div_(255).mul_(2).sub_(1).to(engine.dtype or torch.float32)
        out = engine.graph(x.contiguous(memory_format=torch.channels_last))
        return to_levels(out).permute(0, 2, 3, 1).contiguous()


def cpu_ms_per_frame(fn, images: torch.Tensor, repeats: int) -> float:
    fn(images)
    started = time.process_time()
    for _ in range(repeats):
        fn(images)
    return 1e3 * (time.process_time() - started) / repeats / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None)
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--student", default=None)
    parser.add_argument("--size", default="128x256", help="HxW (a multiple of both strides)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    height, width = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or tmp
        names = (
            {"teacher": args.teacher, "student": args.student}
            if args.teacher and args.student
            else dict(zip(("teacher", "student"), fresh_pair(root, "demo"), strict=True))
        )
        registry = TranslatorRegistry(root)
        images = torch.randint(0, 256, (args.batch_size, height, width, 3), dtype=torch.uint8)
        images = images.permute(0, 3, 1, 2)  # decoded batches: B×3×H×W views of B×H×W×3 memory
        result: dict[str, dict[str, float | bool]] = {}
        for name, ref in names.items():
            model, _ = load_translator(registry, ref, "cpu")
            engine = TranslatorEngine(model, EngineConfig(device="cpu", forward_threads=1), args.batch_size)
            same = torch.equal(engine.pixels(images), straightforward(engine, images))
            times: dict[str, list[float]] = {"engine": [], "baseline": []}
            for _ in range(args.rounds):
                times["engine"].append(cpu_ms_per_frame(engine.pixels, images, args.repeats))
                times["baseline"].append(
                    cpu_ms_per_frame(lambda x, e=engine: straightforward(e, x), images, args.repeats)
                )
            engine.close()
            best = {k: min(v) for k, v in times.items()}
            result[name] = {
                "translator": ref,
                "same_pixels": same,
                "engine_cpu_ms_per_frame": round(best["engine"], 3),
                "baseline_cpu_ms_per_frame": round(best["baseline"], 3),
                "baseline_over_engine": round(best["baseline"] / best["engine"], 2),
            }
            print(name, result[name], file=sys.stderr, flush=True)
    print(json.dumps({"size": args.size, "batch_size": args.batch_size, **result}))


if __name__ == "__main__":
    main()
