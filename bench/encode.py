"""PNG/JPEG encoding of translated images: time and size per setting against zlib's defaults, one run.

Encoding runs once per translated frame on the CPU, beside the forward pass (on two CPU cores it takes
turns with it; on a GPU host it must keep up with the device). This prints, for each output setting,
milliseconds per frame on one core and KiB per frame, and both as ratios against the baseline measured
in the same run: PNG at zlib's default level 6 and default strategy (what ``PIL.Image.save`` and
torchvision's ``save_image`` write). Settings are timed interleaved over ``--rounds``; the best counts.

Images: a translator's outputs on toy sim frames (``--root`` and ``--translator`` name a registry
entry, e.g. the one ``make demo`` trained under ``data/``; default a fresh ``demo``-profile translator,
whose outputs are smoother than a trained one's) and the sim frames themselves.

    .venv/bin/python bench/encode.py
    .venv/bin/python bench/encode.py --root data --translator ID --size 256x512
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sim2real.flows.train_translator import load_profile
from sim2real.models.translator.checkpoint import load_translator
from sim2real.models.translator.engine import TranslatorEngine
from sim2real.models.translator.engine_config import EngineConfig
from sim2real.models.translator.model import Translator, build_translator
from sim2real.storage.image_encoding import EncodeConfig, encode_rgb
from sim2real.storage.registry import TranslatorRegistry
from sim2real.storage.sources.toysim import ToySimConfig, write_export


def PNG(**fields) -> EncodeConfig:  # noqa: N802 - reads as a constructor
    return EncodeConfig(image_format="png", **fields)


BASELINE = PNG(png_compress_level=6, png_strategy="default", png_filter="adaptive")
ZLIB_NG = {"png_deflate": "zlib-ng"}  # our writer with zlib-ng (levels 0-9, zlib's strategies)
SETTINGS = [
    BASELINE,
    PNG(png_compress_level=1, png_strategy="default", png_filter="adaptive"),
    PNG(png_compress_level=4, png_strategy="default", png_filter="adaptive"),
    PNG(png_compress_level=6, png_strategy="rle", png_filter="adaptive"),
    PNG(png_compress_level=6, png_strategy="huffman", png_filter="adaptive"),
    PNG(png_compress_level=0, png_strategy="default", png_filter="adaptive"),  # filters only
    PNG(png_filter="paeth"),  # the default: ISA-L level 1
    PNG(png_compress_level=0, png_filter="paeth"),
    PNG(png_compress_level=2, png_filter="paeth"),
    PNG(png_compress_level=3, png_filter="paeth"),
    PNG(png_filter="up"),
    PNG(png_compress_level=6, png_strategy="rle", png_filter="paeth", **ZLIB_NG),  # the default until 12-06
    PNG(png_compress_level=1, png_strategy="huffman", png_filter="paeth", **ZLIB_NG),
    PNG(png_compress_level=6, png_strategy="rle", png_filter="average", **ZLIB_NG),
    PNG(png_compress_level=6, png_strategy="rle", png_filter="up", **ZLIB_NG),
    PNG(png_compress_level=1, png_strategy="default", png_filter="paeth", **ZLIB_NG),
    EncodeConfig(image_format="jpg", jpeg_quality=95),
]


def sim_frames(frames: int, size: tuple[int, int]) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as export:
        write_export(Path(export), ToySimConfig(style="sim", height=size[0], width=size[1], seed=1), frames)
        return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(export, "rgb").glob("*.png"))]


def translated(model: Translator, images: list[np.ndarray]) -> list[np.ndarray]:
    engine = TranslatorEngine(model, EngineConfig(device="cpu", precision="fp32", forward_threads=1))
    batch = torch.stack([torch.from_numpy(a.copy()).permute(2, 0, 1) for a in images]).float().div(255)
    out = torch.cat([engine(batch[i : i + 8]) for i in range(0, len(batch), 8)])
    return list(out.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def label(config: EncodeConfig) -> str:
    if config.image_format == "jpg":
        return f"jpg q{config.jpeg_quality}"
    library = config.png_deflate or "pil zlib"
    strategy = f", {config.png_strategy}" if config.png_strategy else ""
    return f"png {config.png_filter}, {library} {config.png_compress_level}{strategy}"


def measure(images: list[np.ndarray], rounds: int) -> dict[EncodeConfig, tuple[float, float]]:
    """{setting: (best ms per frame, mean KiB per frame)}, settings interleaved in each round."""
    times: dict[EncodeConfig, list[float]] = {c: [] for c in SETTINGS}
    sizes: dict[EncodeConfig, float] = {}
    for _ in range(rounds):
        for config in SETTINGS:
            started = time.perf_counter()
            total = sum(len(encode_rgb(image, config)) for image in images)
            times[config].append((time.perf_counter() - started) * 1000 / len(images))
            sizes[config] = total / 1024 / len(images)
    return {c: (min(times[c]), sizes[c]) for c in SETTINGS}


def report(title: str, results: dict[EncodeConfig, tuple[float, float]]) -> None:
    base_ms, base_kib = results[BASELINE]
    print(f"{title}\n  {'setting':42s} {'ms/frame':>9s} {'KiB/frame':>10s} {'speed-up':>9s} {'size':>7s}")
    for config, (ms, kib) in results.items():
        print(f"  {label(config):42s} {ms:9.2f} {kib:10.1f} {base_ms / ms:8.2f}x {kib / base_kib:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", default="128x256", help="HxW of the toy frames")
    parser.add_argument("--root", default=None, help="storage root holding --translator")
    parser.add_argument("--translator", default=None, help="registry id (default: a fresh demo translator)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one encode thread's view, and the forward does not disturb the timing
    height, width = (int(v) for v in args.size.lower().split("x"))
    sims = sim_frames(args.frames, (height, width))
    if args.translator:
        model, _ = load_translator(TranslatorRegistry(args.root or "data"), args.translator)
        source = f"translator {args.translator}"
    else:
        torch.manual_seed(0)
        model, source = build_translator(load_profile("demo").translator).eval(), "fresh demo translator"
    outputs = translated(model, sims)
    print(
        f"{args.frames} frames {height}x{width}, one thread; 'adaptive' = Pillow (per-row filter choice), "
        f"others our writer (storage/png.py); baseline: {label(BASELINE)}"
    )
    report(f"translated ({source})", measure(outputs, args.rounds))
    report("sim frames (flat toy rendering)", measure(sims, args.rounds))


if __name__ == "__main__":
    main()
