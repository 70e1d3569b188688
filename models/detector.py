"""Faster R-CNN detector on a torchvision FPN backbone, built without any downloaded weights.

Classes are the canonical detection taxonomy (``DETECTION_CLASSES``, category id = index + 1, 0 is
background). Images enter as lists of 3×H×W floats in [0, 1]; targets are torchvision dicts
(``boxes`` N×4 xyxy float32 in pixels, ``labels`` N int64). Backbones come from an explicit registry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from sim2real.models import backbone_weights
from sim2real.models.metrics.detection import DetectionMetrics, detection_metrics
from sim2real.models.named_registry import NamedRegistry
from sim2real.models.perception_model import (
    config_from_dict,
    config_to_dict,
    load_checkpoint,
)
from sim2real.storage.taxonomy import DETECTION_CLASSES

Targets = list[dict[str, torch.Tensor]]


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture and box-sampling sizes of the detector; enough to rebuild it from a checkpoint."""

    backbone: str = "resnet18_fpn"  # registry key: resnet18_fpn, resnet50_fpn, mobilenet_v3_large_fpn
    min_size: int = 128  # shorter image side after the model's internal resize (pixels)
    max_size: int = 256  # cap on the longer side after resize (pixels)
    fpn_channels: int = 128  # channels of every pyramid level (torchvision's default is 256)
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)  # one per FPN level: 5 (resnet), 4 (mobilenet)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # anchor height/width ratios, the same on each level
    rpn_pre_nms_top_n: int = 500  # proposals kept before RPN NMS, per level (train and test)
    rpn_post_nms_top_n: int = 200  # proposals kept after RPN NMS (train and test)
    box_head_dim: int = 256  # width of the two-layer box head (torchvision's default is 1024)
    box_batch_size_per_image: int = 128  # RoIs sampled per image for the box head loss
    box_score_thresh: float = 0.01  # keep low-score detections: AP needs the whole ranking
    box_detections_per_img: int = 100  # COCO's maxDets
    num_classes: int = len(DETECTION_CLASSES) + 1  # 8 detection classes + background
    backbone_weights: str | None = None  # state-dict file or torchvision weights name; None: random init

    @classmethod
    def from_dict(cls, data: dict) -> DetectorConfig:
        """Rebuild from :meth:`to_dict` output (rejects unknown keys)."""
        return config_from_dict(cls, data, ("anchor_sizes", "aspect_ratios"))

    def to_dict(self) -> dict:
        """Plain-types dict (JSON and ``weights_only`` safe)."""
        return config_to_dict(self)


BackboneBuilder = Callable[[int], BackboneWithFPN]
BACKBONES: NamedRegistry[BackboneBuilder] = NamedRegistry("detector backbone")
register_backbone = BACKBONES.register


def get_backbone(name: str, fpn_channels: int = 256) -> BackboneWithFPN:
    """Build the registered backbone ``name``; ``ValueError`` names an unknown one."""
    return BACKBONES.get(name)(fpn_channels)


# Trained from scratch: plain BatchNorm (torchvision's default BatchNorm2d, not frozen), all trainable.
def _resnet_fpn(factory: Callable[..., tv_models.ResNet], fpn_channels: int) -> BackboneWithFPN:
    net = factory(weights=None)
    stage1 = net.fc.in_features // 8  # layer1 channels: 64 (basic blocks) or 256 (bottlenecks)
    return BackboneWithFPN(
        net,
        return_layers={f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
        in_channels_list=[stage1, stage1 * 2, stage1 * 4, stage1 * 8],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


for _name, _factory in (("resnet18_fpn", tv_models.resnet18), ("resnet50_fpn", tv_models.resnet50)):
    BACKBONES.add(_name, functools.partial(_resnet_fpn, _factory))


@register_backbone("mobilenet_v3_large_fpn")
def _mobilenet_v3_large_fpn(fpn_channels: int) -> BackboneWithFPN:
    features = tv_models.mobilenet_v3_large(weights=None).features
    # The last block of each stride (stride 8, 16 and 32 features) feeds the pyramid.
    stage_ends = [i - 1 for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    stage_ends = [*stage_ends[-2:], len(features) - 1]
    return BackboneWithFPN(
        features,
        return_layers={str(index): str(level) for level, index in enumerate(stage_ends)},
        in_channels_list=[features[i].out_channels for i in stage_ends],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def _feature_names(backbone: nn.Module) -> list[str]:
    with torch.no_grad():
        was_training = backbone.training
        backbone.eval()
        names = list(backbone(torch.zeros(1, 3, 64, 64)))
        backbone.train(was_training)
    return names


def build_detector(config: DetectorConfig) -> FasterRCNN:
    """A freshly initialised Faster R-CNN: random weights, or the backbone body from
    ``config.backbone_weights`` (a file on disk; nothing is downloaded; ``BackboneWeightsError`` names a
    missing or wrong file). The FPN and heads always start random."""
    backbone = get_backbone(config.backbone, config.fpn_channels)
    if config.backbone_weights:
        backbone_weights.load_into(backbone.body, config.backbone_weights)
    names = _feature_names(backbone)
    if len(config.anchor_sizes) != len(names):
        raise ValueError(
            f"DetectorConfig.anchor_sizes: backbone {config.backbone!r} has {len(names)} feature levels, "
            f"got {len(config.anchor_sizes)} sizes"
        )
    anchors = AnchorGenerator(
        sizes=tuple((size,) for size in config.anchor_sizes),
        aspect_ratios=(config.aspect_ratios,) * len(names),
    )
    roi_pool = MultiScaleRoIAlign([n for n in names if n != "pool"], output_size=7, sampling_ratio=2)
    model = FasterRCNN(
        backbone,
        min_size=config.min_size,
        max_size=config.max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n,
        box_roi_pool=roi_pool,
        box_head=TwoMLPHead(config.fpn_channels * 7 * 7, config.box_head_dim),
        box_predictor=FastRCNNPredictor(config.box_head_dim, config.num_classes),
        box_batch_size_per_image=config.box_batch_size_per_image,
        box_score_thresh=config.box_score_thresh,
        box_detections_per_img=config.box_detections_per_img,
    )
    model.config = config  # type: ignore[assignment]  # kept for checkpoints
    return model


def detection_loss(
    model: nn.Module, batch: tuple[list[torch.Tensor], Targets], device: torch.device
) -> tuple[torch.Tensor, bool]:
    """The loss of one ``(images, targets)`` batch on ``device``: torchvision's loss dict summed; every
    detection batch counts as labelled (an image without boxes is a labelled empty one).
    For :func:`~sim2real.models.perception_model.train_one_epoch`."""
    images = [image.to(device, non_blocking=True) for image in batch[0]]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in batch[1]]
    return sum(model(images, targets).values()), True  # type: ignore[return-value]  # a tensor


@torch.inference_mode()
def predict(model: nn.Module, images: list[torch.Tensor], device: torch.device | str) -> Targets:
    """Detections per image: dicts with ``boxes`` (N×4 xyxy), ``labels`` (1-based) and ``scores``, on CPU."""
    model.eval()
    device = torch.device(device)
    outputs = model([image.to(device) for image in images])
    return [{key: value.cpu() for key, value in output.items()} for output in outputs]


def evaluate(
    model: nn.Module,
    data_loader: Iterable[tuple[list[torch.Tensor], Targets]],
    device: torch.device | str,
    min_box_area: float = 0.0,
) -> DetectionMetrics:
    """COCO per-class AP/AP50 and means over the loader (see ``models.metrics.detection``)."""
    ground_truth: Targets = []
    predictions: Targets = []
    for images, targets in data_loader:
        predictions.extend(predict(model, images, device))
        ground_truth.extend(targets)
    return detection_metrics(ground_truth, predictions, min_box_area=min_box_area)


def load_detector(data: bytes, source: str = "<bytes>") -> FasterRCNN:
    """Rebuild a detector from :func:`checkpoint_bytes` output (``weights_only=True``)."""
    return load_checkpoint(data, source, "detector", DetectorConfig.from_dict, build_detector)
