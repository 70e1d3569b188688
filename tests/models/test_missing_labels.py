"""Issue 16 item 3b/4b: a frame without boxes.json / seg.png has no labels (not empty ones): it is left
out of that task's training and evaluation and counted; streams with nothing to yield fail fast."""

from __future__ import annotations

import io
import json
import os

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sim2real.models import perception_data, perception_train
from sim2real.storage import schema
from sim2real.storage.reader import EmptyStream, decoded_samples
from sim2real.storage.shards import write_shard
from sim2real.storage.taxonomy import DETECTION_CLASS_ID

H, W = 16, 24
BOX = [4, 3, 12, 11]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def members(boxes: list | None, seg: bool = True) -> dict[str, bytes]:
    out = {schema.RGB_PNG: png(np.full((H, W, 3), 90, np.uint8)), schema.META: b"{}"}
    if seg:
        out[schema.SEG] = png(np.zeros((H, W), np.uint8))
    if boxes is not None:
        out[schema.BOXES] = json.dumps(boxes).encode()
    return out


def shard(tmp_path, name: str, samples: list[tuple[str, dict[str, bytes]]]) -> str:
    path = str(tmp_path / f"{name}.tar")
    write_shard(fsspec.filesystem("file"), path, samples)
    return path


class Oracle(nn.Module):
    """Predicts exactly one car at ``BOX`` in every image: right wherever the ground truth is that car."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": torch.tensor([BOX], dtype=torch.float32),
                 "labels": torch.tensor([DETECTION_CLASS_ID["car"]]),
                 "scores": torch.tensor([0.99])} for _ in images]


def test_reader_keeps_missing_and_empty_apart(tmp_path):
    samples = [("a", members([])), ("b", members(None)), ("c", members(None, seg=False))]
    url = shard(tmp_path, "mixed", samples)
    got = {s["__key__"]: s for s in decoded_samples(url)}
    assert got["a"]["boxes"] == [] and got["b"]["boxes"] is None  # labelled-empty vs no labels
    assert got["b"]["seg"] is not None and got["c"]["seg"] is None
    assert [s["__key__"] for s in decoded_samples(url, require=(schema.BOXES,))] == ["a"]


def test_unlabelled_copies_do_not_change_map50(tmp_path):
    car = [{"label": "car", "bbox_xyxy": BOX, "instance": 1}]
    alone = shard(tmp_path, "alone", [("k0", members(car))])
    copies = shard(tmp_path, "copies", [("k0", members(car))] + [(f"k{i}", members(None)) for i in (1, 2, 3)])
    data = perception_train.DataOptions()
    one = perception_train.evaluate("detection", Oracle(), decoded_samples(alone), data, "cpu")
    four = perception_train.evaluate("detection", Oracle(), decoded_samples(copies), data, "cpu")
    assert one["summary"]["mAP50"] == pytest.approx(100.0)
    assert four["summary"]["mAP50"] == pytest.approx(100.0)  # the report: 25.0
    assert four["frames"] == {"frames_with_labels": 1, "frames_without_labels": 3}
    # segmentation keeps all four frames: they all have seg.png
    seg_counts: dict[str, int] = {}
    list(perception_data.frames(decoded_samples(copies), None, task="segmentation", left_out=seg_counts))
    assert seg_counts == {"frames_with_labels": 4, "frames_without_labels": 0}


def test_training_stream_leaves_unlabelled_frames_out(tmp_path):
    car = [{"label": "car", "bbox_xyxy": BOX, "instance": 1}]
    url = shard(tmp_path, "train", [("k0", members(car))] + [(f"k{i}", members(None)) for i in range(1, 8)])
    stream = decoded_samples(url, resampled=True, require=perception_data.label_members("detection"))
    items = list(perception_data.frames(stream, None, limit=20, task="detection"))
    assert len(items) == 20 and all(int(f.labels[0]) == DETECTION_CLASS_ID["car"] for f in items)


def test_evaluation_without_any_labelled_frame_is_an_error(tmp_path):
    url = shard(tmp_path, "none", [(f"k{i}", members(None)) for i in range(3)])
    with pytest.raises(perception_data.NoLabelledFrames, match=r"3 frame\(s\) without boxes.json"):
        perception_train.evaluate("detection", Oracle(), decoded_samples(url), perception_train.DataOptions(),
                                  "cpu")


@pytest.mark.parametrize("require", [(), (schema.BOXES,)])
def test_endless_streams_over_nothing_fail_fast(tmp_path, require):
    """4b: an empty (or all-filtered) version used to make the resampled stream spin forever."""
    empty = shard(tmp_path, "empty", [])
    unlabelled = shard(tmp_path, "unlabelled", [("k0", members(None))])
    urls = [empty] if not require else [empty, unlabelled]
    with pytest.raises(EmptyStream, match="no samples") as caught:
        decoded_samples(urls, resampled=True, shuffle_buffer=8, require=require)
    assert os.path.basename(empty) in str(caught.value)


def test_reader_decodes_a_legacy_16_bit_camera_image():
    """Item 2 for versions ingested before the camera rule: 16-bit grey is not read as white."""
    from sim2real.storage.reader import decode_rgb

    grey = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 170).astype(np.uint16)
    rgb = decode_rgb(png(grey))
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], (grey >> 8).astype(np.uint8)) and (rgb == 255).mean() < 0.05
