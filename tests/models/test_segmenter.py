"""DeepLabV3+ segmenter: shapes for every backbone, a short fit on a toy pattern, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from sim2real.models.perception_model import checkpoint_bytes, train_one_epoch
from sim2real.models.segmenter import (
    SegmenterConfig,
    build_segmenter,
    get_backbone,
    load_segmenter,
    predict,
    segmentation_loss,
)

SMALL = dict(aspp_channels=16, low_level_channels=8, decoder_channels=16)


@pytest.mark.parametrize(
    ("backbone", "output_stride"),
    [("resnet18", 16), ("resnet18", 8), ("resnet18", 32), ("mobilenet_v3_large", 16), ("resnet50", 16)],
)
def test_logits_match_any_input_size(backbone: str, output_stride: int) -> None:
    model = build_segmenter(SegmenterConfig(backbone=backbone, output_stride=output_stride, **SMALL)).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 37, 70))
    assert logits.shape == (2, 19, 37, 70)
    assert torch.isfinite(logits).all()


def test_unknown_backbone_and_bad_stride_are_named() -> None:
    with pytest.raises(ValueError, match="unknown segmenter backbone 'vgg'"):
        get_backbone("vgg", 16)
    with pytest.raises(ValueError, match="output_stride"):
        get_backbone("mobilenet_v3_large", 8)


def _toy_batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Top half red = road (0), bottom half blue = sky (10), a stripe of ignore pixels."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        images = torch.rand(2, 3, 32, 64, generator=generator) * 0.2
        images[:, 0, :16] += 0.8
        images[:, 2, 16:] += 0.8
        targets = torch.zeros(2, 32, 64, dtype=torch.int64)
        targets[:, 16:] = 10
        targets[:, :, :4] = 255
        batches.append((images.clamp(0, 1), targets))
    return batches


def test_short_fit_learns_a_toy_pattern_and_checkpoint_round_trips() -> None:
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig(**SMALL))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = _toy_batches(6)
    first = train_one_epoch(model, optimizer, batches, segmentation_loss, "cpu", epoch=0)
    for epoch in range(1, 4):
        last = train_one_epoch(model, optimizer, batches, segmentation_loss, "cpu", epoch=epoch)
    assert last["loss"] < first["loss"]
    images, targets = batches[0]
    pred = predict(model, images, "cpu")
    assert pred.shape == (2, 32, 64) and pred.dtype == torch.int64
    valid = targets != 255
    assert (pred[valid] == targets[valid]).float().mean() > 0.9

    restored = load_segmenter(checkpoint_bytes(model, {"epoch": 3}))
    assert torch.equal(predict(restored, images, "cpu"), pred)


def test_load_rejects_garbage() -> None:
    with pytest.raises(Exception, match="segmenter|pickle|Weights|invalid|load"):
        load_segmenter(b"not a checkpoint", source="x.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_training_and_prediction_on_cuda() -> None:
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig(**SMALL)).to("cuda").to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler("cuda")
    batches = _toy_batches(4)
    first = train_one_epoch(model, optimizer, batches, segmentation_loss, "cuda", epoch=0, scaler=scaler)
    last = train_one_epoch(model, optimizer, batches, segmentation_loss, "cuda", epoch=1, scaler=scaler)
    assert last["loss"] < first["loss"]
    pred = predict(model, batches[0][0], "cuda")
    assert pred.device.type == "cpu" and pred.shape == (2, 32, 64)
