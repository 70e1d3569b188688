"""Translator size and speed per profile: parameters, MACs per frame, forward-pass frames/s.

* parameters: the whole translator (both auto-encoders + seg head) and the inference path alone
  (sim content encoder + real decoder + its style MLP), which is what the translate flow runs;
* MACs per frame of the inference path at 256×512 and 512×1024, counted by
  ``torch.utils.flop_counter`` on meta tensors (nothing is computed, so ``full`` is instant);
* frames/s of ``translate_batch`` on this machine: a batch-1 loop (the baseline, measured in the
  same run) and batches of ``--batch``, best of ``--rounds`` interleaved rounds; the ratio is what
  batching buys. The CPU thread count and the device are printed with the numbers.

    .venv/bin/python bench/translator.py                          # CPU: tiny and demo at 128x256
    .venv/bin/python bench/translator.py --device cuda --profiles demo full --size 512x1024
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sim2real.flows.train_translator import load_profile
from sim2real.models.translator.config import TranslatorConfig
from sim2real.models.translator.inference import translate_batch
from sim2real.models.translator.model import Translator, build_translator

MAC_SIZES: tuple[tuple[int, int], ...] = ((256, 512), (512, 1024))


def inference_parameters(model: Translator) -> int:
    """Parameters the sim→real path touches: sim content encoder and real decoder (incl. its MLP)."""
    return sum(
        p.numel() for p in list(model.sim.content.parameters()) + list(model.real.decoder.parameters())
    )


def macs_per_frame(config: TranslatorConfig, height: int, width: int) -> float:
    """Multiply-accumulates of one ``translate`` call on a height×width frame (meta tensors, no compute)."""
    with torch.device("meta"):
        model = build_translator(config)
    with FlopCounterMode(display=False) as counter:
        model.translate(torch.zeros(1, 3, height, width, device="meta"))
    return counter.get_total_flops() / 2


def frames_per_second(model: Translator, images: torch.Tensor, batch: int, device: torch.device) -> float:
    """Frames/s of ``translate_batch`` over ``images`` in batches of ``batch`` (synchronised on CUDA)."""
    translate_batch(model, images[:batch])  # warm-up (allocator, cuDNN autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        translate_batch(model, images[i : i + batch])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def bench_profile(
    name: str, size: tuple[int, int], frames: int, batch: int, rounds: int, device: torch.device
) -> dict:
    """All numbers of one profile."""
    config = load_profile(name).translator
    torch.manual_seed(0)
    model = build_translator(config)
    row: dict = {
        "profile": name,
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_inference": inference_parameters(model),
    }
    for height, width in MAC_SIZES:
        row[f"gmacs_{height}x{width}"] = round(macs_per_frame(config, height, width) / 1e9, 2)
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    images = torch.rand(frames, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    single, batched = [], []
    for _ in range(rounds):  # interleaved, best round counts: other load skews the ratio less
        single.append(frames_per_second(model, images, 1, device))
        batched.append(frames_per_second(model, images, batch, device))
    row.update(
        size=f"{size[0]}x{size[1]}",
        fps_batch1=round(max(single), 2),
        **{f"fps_batch{batch}": round(max(batched), 2)},
        batching_gain=round(max(batched) / max(single), 2),
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["tiny", "demo"])
    parser.add_argument("--size", default="128x256", help="HxW of the timed frames")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"# translator bench on {where}, torch {torch.__version__}")
    for name in args.profiles:
        row = bench_profile(name, size, args.frames, args.batch, args.rounds, device)  # type: ignore[arg-type]
        print(json.dumps(row))


if __name__ == "__main__":
    main()
