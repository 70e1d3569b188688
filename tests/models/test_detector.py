"""Faster R-CNN detector: every backbone builds and predicts, a short fit lowers the loss, checkpoints."""

from __future__ import annotations

import pytest
import torch

from sim2real.models.detector import (
    DetectorConfig,
    build_detector,
    detection_loss,
    get_backbone,
    load_detector,
    predict,
)
from sim2real.models.perception_model import checkpoint_bytes, train_one_epoch
from sim2real.storage.taxonomy import DETECTION_CLASS_ID


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two 64×96 images with bright cars on a dark road, plus one image without boxes."""
    images, targets = [], []
    for shift in (0, 20):
        image = torch.full((3, 64, 96), 0.2)
        image[:, 20:40, 10 + shift:40 + shift] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
        images.append(image)
        targets.append({"boxes": torch.tensor([[10.0 + shift, 20.0, 40.0 + shift, 40.0]]),
                        "labels": torch.tensor([DETECTION_CLASS_ID["car"]])})
    images.append(torch.full((3, 64, 96), 0.2))
    targets.append({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
    return images, targets


@pytest.mark.parametrize(
    ("backbone", "anchors"),
    [("mobilenet_v3_large_fpn", (8, 16, 32, 64)), ("resnet50_fpn", (8, 16, 32, 64, 128))],
)
def test_backbones_build_and_predict(backbone: str, anchors: tuple[int, ...]) -> None:
    model = build_detector(DetectorConfig(backbone=backbone, anchor_sizes=anchors, min_size=64, max_size=96))
    outputs = predict(model, _batch()[0], "cpu")
    assert len(outputs) == 3
    assert set(outputs[0]) == {"boxes", "labels", "scores"}
    assert outputs[0]["boxes"].shape[1] == 4


def test_anchor_levels_and_unknown_backbone_are_checked() -> None:
    with pytest.raises(ValueError, match="4 feature levels"):
        build_detector(DetectorConfig(backbone="mobilenet_v3_large_fpn"))
    with pytest.raises(ValueError, match="unknown detector backbone 'vgg'"):
        get_backbone("vgg")


def test_short_fit_lowers_loss_and_checkpoint_round_trips() -> None:
    torch.manual_seed(0)
    config = DetectorConfig(min_size=64, max_size=96, rpn_post_nms_top_n=50, box_batch_size_per_image=32)
    model = build_detector(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [_batch()] * 3
    first = train_one_epoch(model, optimizer, batches, detection_loss, "cpu", epoch=0)
    for epoch in range(1, 4):
        last = train_one_epoch(model, optimizer, batches, detection_loss, "cpu", epoch=epoch)
    assert last["steps"] == 3.0
    assert last["loss"] < first["loss"]

    images = _batch()[0]
    before = predict(model, images, "cpu")
    restored = load_detector(checkpoint_bytes(model, {"epoch": 3}))
    assert restored.config == config
    after = predict(restored, images, "cpu")
    for a, b in zip(before, after, strict=True):
        assert torch.allclose(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_training_and_prediction_on_cuda() -> None:
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(min_size=64, max_size=96)).to("cuda")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    result = train_one_epoch(model, optimizer, [_batch()] * 2, detection_loss, "cuda", epoch=0,
                             scaler=torch.amp.GradScaler("cuda"))
    assert result["steps"] == 2.0
    outputs = predict(model, _batch()[0], "cuda")
    assert all(o["boxes"].device.type == "cpu" for o in outputs)
