"""Pretrained backbone weights from files the test makes: loaded into detector and segmenter
backbones (outputs change), torchvision names resolved from a private hub cache without any download,
and missing, garbage or foreign files refused with the file's name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models as tv_models

from sim2real.models import backbone_weights, detector, segmenter
from sim2real.models.backbone_weights import BackboneWeightsError
from sim2real.models.perception_model import checkpoint_bytes


def _resnet18_file(path: Path, seed: int = 7) -> Path:
    """A torchvision ResNet-18 state dict (classifier included), as users save ImageNet weights."""
    torch.manual_seed(seed)
    net = tv_models.resnet18(weights=None)
    for module in net.modules():  # make the weights recognisable and unlike a fresh init
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _resnet18_file(tmp_path_factory.mktemp("weights") / "resnet18-test.pth")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_segmenter_backbone_loads_the_file_and_outputs_change(weights_file: Path) -> None:
    config = segmenter.SegmenterConfig(aspp_channels=8, low_level_channels=8, decoder_channels=8)
    saved = torch.load(weights_file, weights_only=True)
    torch.manual_seed(0)
    plain = segmenter.build_segmenter(config).eval()
    torch.manual_seed(0)
    loaded = segmenter.build_segmenter(
        segmenter.SegmenterConfig(**{**config.to_dict(), "aspp_rates": (6, 12, 18),
                                     "backbone_weights": str(weights_file)})
    ).eval()
    body = loaded.backbone.body.state_dict()
    assert all(torch.equal(body[k], saved[k]) for k in body if not k.endswith("num_batches_tracked"))
    assert not torch.equal(plain.backbone.body.state_dict()["conv1.weight"], body["conv1.weight"])
    images = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.allclose(plain(images), loaded(images))
    restored = segmenter.load_segmenter(checkpoint_bytes(loaded))  # checkpoint: no file needed
    with torch.no_grad():
        assert torch.allclose(restored.eval()(images), loaded(images))


def test_detector_backbone_loads_the_file(weights_file: Path) -> None:
    config = detector.DetectorConfig(fpn_channels=8, box_head_dim=8, backbone_weights=str(weights_file))
    model = detector.build_detector(config)
    saved = torch.load(weights_file, weights_only=True)
    body = model.backbone.body.state_dict()
    assert torch.equal(body["layer4.1.conv2.weight"], saved["layer4.1.conv2.weight"])
    assert torch.equal(body["bn1.running_var"], saved["bn1.running_var"])


def test_torchvision_names_resolve_in_the_local_hub_cache_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # honour TORCH_HOME as set now
    name = "ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(BackboneWeightsError, match=r"hub/checkpoints/resnet18-f37072fd\.pth: no such file"):
        backbone_weights.resolve(name)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    path = _resnet18_file(cache / "resnet18-f37072fd.pth")
    assert backbone_weights.resolve(name) == path
    model = segmenter.build_segmenter(segmenter.SegmenterConfig(aspp_channels=8, backbone_weights=name))
    assert torch.equal(model.backbone.body.state_dict()["conv1.weight"],
                       torch.load(path, weights_only=True)["conv1.weight"])
    with pytest.raises(BackboneWeightsError, match="NoSuch_Weights.X: not a torchvision weights name"):
        backbone_weights.resolve("NoSuch_Weights.X")


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"],
    ids=["empty", "text", "broken-zip"],
)
def test_garbage_files_are_refused_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    with pytest.raises(BackboneWeightsError, match=rf"{path}: not a torch state-dict file"):
        segmenter.build_segmenter(segmenter.SegmenterConfig(backbone_weights=str(path)))


def test_missing_and_foreign_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BackboneWeightsError, match=rf"{tmp_path}/absent.pth: no such backbone weights file"):
        backbone_weights.resolve(str(tmp_path / "absent.pth"))
    torch.save({"weight": torch.zeros(3)}, tmp_path / "tiny.pth")
    with pytest.raises(BackboneWeightsError, match=r"tiny\.pth: \d+ of \d+ backbone tensors missing"):
        segmenter.build_segmenter(segmenter.SegmenterConfig(backbone_weights=str(tmp_path / "tiny.pth")))
    deeper = tv_models.resnet34(weights=None).state_dict()  # every resnet18 tensor, same shapes, and more
    torch.save(deeper, tmp_path / "resnet34.pth")
    with pytest.raises(BackboneWeightsError, match=r"resnet34\.pth: \d+ tensors the backbone does not have"):
        segmenter.build_segmenter(segmenter.SegmenterConfig(backbone_weights=str(tmp_path / "resnet34.pth")))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(BackboneWeightsError, match=r"list\.pth: not a state dict of named tensors"):
        backbone_weights.read_state_dict(str(tmp_path / "list.pth"))
