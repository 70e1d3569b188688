"""Benchmark: training-step time of the demo perception models against torchvision-sized baselines.

Each model trains a few steps on random 128×256 batches; the baseline is measured in the same run, so
the printed ratios hold on a noisy shared machine. Run: ``.venv/bin/python bench/evaluate.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from sim2real.models import detector, segmenter
from sim2real.storage.taxonomy import DETECTION_CLASS_ID

HEIGHT, WIDTH, BATCH, STEPS = 128, 256, 4, 3


def _detection_batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, HEIGHT, WIDTH, generator=generator) for _ in range(BATCH)]
    box = torch.tensor([[20.0, 30.0, 60.0, 70.0], [100.0, 40.0, 130.0, 90.0]])
    targets = [{"boxes": box, "labels": torch.tensor([DETECTION_CLASS_ID["car"]] * 2)} for _ in images]
    return images, targets


def _segmentation_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(BATCH, 3, HEIGHT, WIDTH, generator=generator)
    return images, torch.randint(0, 19, (BATCH, HEIGHT, WIDTH), generator=generator)


def seconds_per_step(model: torch.nn.Module, train_one_epoch: Callable, batch: tuple) -> float:
    """Median-free simple timing: one warm-up step, then the mean of ``STEPS`` steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train_one_epoch(model, optimizer, [batch], "cpu", 0)
    started = time.perf_counter()
    train_one_epoch(model, optimizer, [batch] * STEPS, "cpu", 1)
    return (time.perf_counter() - started) / STEPS


def main() -> None:
    torch.manual_seed(0)
    det_batch, seg_batch = _detection_batch(), _segmentation_batch()
    det_base = detector.DetectorConfig(fpn_channels=256, box_head_dim=1024, box_batch_size_per_image=512,
                                       rpn_pre_nms_top_n=2000, rpn_post_nms_top_n=2000)
    det_demo = detector.DetectorConfig(fpn_channels=64, box_head_dim=128)
    seg_base = segmenter.SegmenterConfig(aspp_channels=256, low_level_channels=48, decoder_channels=256)
    seg_demo = segmenter.SegmenterConfig(aspp_channels=64, low_level_channels=32, decoder_channels=64)
    rows = []
    for name, build, train, batch, base, demo in (
        ("detection resnet18-FPN", detector.build_detector, detector.train_one_epoch, det_batch,
         det_base, det_demo),
        ("segmentation resnet18 DeepLabV3+", segmenter.build_segmenter, segmenter.train_one_epoch,
         seg_batch, seg_base, seg_demo),
    ):
        base_s = seconds_per_step(build(base), train, batch)
        demo_s = seconds_per_step(build(demo), train, batch)
        rows.append((name, base_s, demo_s))
    print(f"threads={torch.get_num_threads()} batch={BATCH} size={HEIGHT}x{WIDTH}")
    for name, base_s, demo_s in rows:
        print(f"{name:<34} baseline {base_s:6.2f} s/step  demo {demo_s:6.2f} s/step  "
              f"speed-up x{base_s / demo_s:4.1f}")


if __name__ == "__main__":
    main()
