"""DeepLabV3+ semantic segmenter on a torchvision backbone (no downloaded weights).

Images enter as B×3×H×W floats in [0, 1]; the model normalises them itself, so every caller (the
retrain flow, the translator's FCN-score metric) feeds the same tensors. Output: B×19×H×W logits at the
input size, for any H×W. Backbones come from an explicit registry (``register_backbone``/``get_backbone``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tv_models
from torchvision.models._utils import IntermediateLayerGetter

from sim2real.models import backbone_weights
from sim2real.models.metrics.segmentation import confusion_matrix
from sim2real.models.named_registry import NamedRegistry
from sim2real.models.perception_model import (
    config_from_dict,
    config_to_dict,
    load_checkpoint,
)
from sim2real.storage.taxonomy import IGNORE_ID, NUM_TRAIN_CLASSES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SegmenterConfig:
    """Architecture of the segmenter; everything needed to rebuild it from a checkpoint."""

    backbone: str = "resnet18"  # registry key: resnet18, resnet34, resnet50, mobilenet_v3_large
    output_stride: int = 16  # backbone stride of the deep features: 8, 16 or 32 (mobilenet: 16 or 32)
    aspp_channels: int = 128  # channels of every ASPP branch and of its projection
    aspp_rates: tuple[int, int, int] = (6, 12, 18)  # atrous rates at output stride 16 (scaled for others)
    low_level_channels: int = 48  # channels the stride-4 skip features are projected to
    decoder_channels: int = 128  # channels of the two 3×3 decoder convs
    num_classes: int = NUM_TRAIN_CLASSES  # 19 Cityscapes trainIds
    backbone_weights: str | None = None  # state-dict file or torchvision weights name; None: random init

    @classmethod
    def from_dict(cls, data: dict) -> SegmenterConfig:
        """Rebuild from :meth:`to_dict` output (rejects unknown keys)."""
        return config_from_dict(cls, data, ("aspp_rates",))

    def to_dict(self) -> dict:
        """Plain-types dict (JSON and ``weights_only`` safe)."""
        return config_to_dict(self)


class Backbone(nn.Module):
    """Returns ``(low, high)``: stride-4 features and deep features at the configured output stride."""

    def __init__(self, body: nn.Module, low_name: str, high_name: str, low_channels: int, high_channels: int):
        super().__init__()
        self.body = body
        self.low_name, self.high_name = low_name, high_name
        self.low_channels, self.high_channels = low_channels, high_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features[self.low_name], features[self.high_name]


BackboneBuilder = Callable[[int], Backbone]
BACKBONES: NamedRegistry[BackboneBuilder] = NamedRegistry("segmenter backbone")
register_backbone = BACKBONES.register


def get_backbone(name: str, output_stride: int) -> Backbone:
    """Build the registered backbone ``name``; ``ValueError`` names an unknown one."""
    return BACKBONES.get(name)(output_stride)


def _dilate_stage(stage: nn.Module, dilation: int) -> None:
    """Turn a ResNet stage's stride 2 into dilation (works for Basic and Bottleneck blocks)."""
    for module in stage.modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if module.kernel_size == (3, 3):
            module.stride = (1, 1)
            module.dilation = module.padding = (dilation, dilation)
        elif module.stride == (2, 2):  # the 1×1 downsample shortcut
            module.stride = (1, 1)


def _resnet_backbone(factory: Callable[..., tv_models.ResNet], output_stride: int) -> Backbone:
    if output_stride not in (8, 16, 32):
        raise ValueError(f"resnet backbone: output_stride must be 8, 16 or 32, got {output_stride}")
    net = factory(weights=None)
    if output_stride <= 16:
        _dilate_stage(net.layer4, 2 if output_stride == 16 else 4)
    if output_stride == 8:
        _dilate_stage(net.layer3, 2)
    high_channels = net.fc.in_features
    low_channels = high_channels // 8  # layer1: 64 (basic blocks) or 256 (bottlenecks)
    body = IntermediateLayerGetter(net, return_layers={"layer1": "low", "layer4": "high"})
    return Backbone(body, "low", "high", low_channels, high_channels)


for _name, _factory in (
    ("resnet18", tv_models.resnet18),
    ("resnet34", tv_models.resnet34),
    ("resnet50", tv_models.resnet50),
):
    BACKBONES.add(_name, functools.partial(_resnet_backbone, _factory))


@register_backbone("mobilenet_v3_large")
def _mobilenet_v3_large(output_stride: int) -> Backbone:
    if output_stride not in (16, 32):
        raise ValueError(f"mobilenet_v3_large: output_stride must be 16 or 32, got {output_stride}")
    net = tv_models.mobilenet_v3_large(weights=None, dilated=output_stride == 16)
    features = net.features
    # features[3] ends the last stride-4 stage (24 channels); the last block gives 960 channels.
    body = IntermediateLayerGetter(features, return_layers={"3": "low", str(len(features) - 1): "high"})
    low_channels, high_channels = (int(features[i].out_channels) for i in (3, -1))
    return Backbone(body, "low", "high", low_channels, high_channels)


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1×1 branch, three atrous 3×3 branches and image pooling."""

    def __init__(self, in_ch: int, out_ch: int, rates: Iterable[int]):
        super().__init__()
        branches = [_conv_bn_relu(in_ch, out_ch, kernel=1)]
        branches += [_conv_bn_relu(in_ch, out_ch, dilation=rate) for rate in rates]
        self.branches = nn.ModuleList(branches)
        # No BatchNorm after global pooling: it is 1×1 per image and breaks at batch size 1.
        self.pooling = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True)
        )
        fused = out_ch * (len(branches) + 1)
        self.project = nn.Sequential(_conv_bn_relu(fused, out_ch, kernel=1), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pooling(x), size=x.shape[-2:], mode="nearest")
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLabV3Plus(nn.Module):
    """Backbone → ASPP on deep features → fuse with projected stride-4 features → logits at input size."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        self.backbone = get_backbone(config.backbone, config.output_stride)
        scale = 16 / config.output_stride
        rates = [max(1, round(rate * scale)) for rate in config.aspp_rates]
        self.aspp = ASPP(self.backbone.high_channels, config.aspp_channels, rates)
        self.low_project = _conv_bn_relu(self.backbone.low_channels, config.low_level_channels, kernel=1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(config.aspp_channels + config.low_level_channels, config.decoder_channels),
            _conv_bn_relu(config.decoder_channels, config.decoder_channels),
        )
        self.classifier = nn.Conv2d(config.decoder_channels, config.num_classes, 1)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[-2:]
        # Pad to a multiple of 32 so every stride divides evenly; crop the logits back afterwards.
        pad_h, pad_w = (-size[0]) % 32, (-size[1]) % 32
        x = (images - self.mean) / self.std
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        low, high = self.backbone(x)
        deep = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.decoder(torch.cat([deep, self.low_project(low)], dim=1)))
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., : size[0], : size[1]]


def build_segmenter(config: SegmenterConfig) -> DeepLabV3Plus:
    """A freshly initialised DeepLabV3+: random weights, or the backbone from ``config.backbone_weights``
    (a file on disk; nothing is downloaded; ``BackboneWeightsError`` names a missing or wrong file)."""
    model = DeepLabV3Plus(config)
    if config.backbone_weights:
        backbone_weights.load_into(model.backbone.body, config.backbone_weights)
    return model


def segmentation_loss(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, bool]:
    """The cross-entropy of one batch (images B×3×H×W in [0,1], targets B×H×W int64, 255 = ignore) on
    ``device``, and whether any pixel is labelled. For
    :func:`~sim2real.models.perception_model.train_one_epoch`."""
    images = batch[0].to(device, non_blocking=True)
    targets = batch[1].to(device, non_blocking=True)
    loss = F.cross_entropy(model(images), targets, ignore_index=IGNORE_ID)
    return loss, bool((targets != IGNORE_ID).any())


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Per-pixel trainIds (B×H×W int64, on CPU) for images B×3×H×W in [0, 1]."""
    model.eval()
    device = torch.device(device)
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        logits = model(images.to(device))
    return logits.argmax(dim=1).cpu()


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str,
) -> np.ndarray:
    """Confusion matrix (classes × classes, int64; rows = target) over the loader, 255 ignored."""
    num_classes = model.config.num_classes if isinstance(model, DeepLabV3Plus) else NUM_TRAIN_CLASSES
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    for images, targets in data_loader:
        total += confusion_matrix(predict(model, images, device), targets, num_classes=num_classes)
    return total


def load_segmenter(data: bytes, source: str = "<bytes>") -> DeepLabV3Plus:
    """Rebuild a segmenter from :func:`checkpoint_bytes` output (``weights_only=True``)."""
    return load_checkpoint(data, source, "segmenter", SegmenterConfig.from_dict, build_segmenter)
