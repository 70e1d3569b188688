"""Shared conversion helpers: id/colour mapping with unknown counts, boxes, keys, PNG encoding, zips."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from sim2real.storage.sources import convert
from sim2real.storage.sources.base import BadFrame, SourceFrame
from sim2real.storage.sources.source_files import (
    file_name,
    present_files,
    read_bytes,
    require_file,
    zip_location,
)


def test_map_ids_counts_only_ids_outside_the_table():
    ids = np.array([[0, 1, 2], [300, 2, 300]])
    train, unknown = convert.map_ids(ids, {0: 255, 1: 7, 2: 3})
    assert train.dtype == np.uint8 and train.tolist() == [[255, 7, 3], [255, 3, 255]]
    assert unknown == {300: 2}  # 0 maps to ignore but is known
    with pytest.raises(ValueError, match=">= 0"):
        convert.map_ids(np.array([-1]), {0: 0})


def test_map_colours_reports_unknown_as_packed_rgb():
    colours = np.array([[[1, 2, 3], [9, 9, 9]], [[1, 2, 3], [255, 0, 16]]], np.uint8)
    train, unknown = convert.map_colours(colours, {(1, 2, 3): 5, (9, 9, 9): 255})
    assert train.tolist() == [[5, 255], [5, 255]] and unknown == {"#ff0010 (255,0,16)": 1}


def test_boxes_are_exclusive_and_clipped():
    inst = np.zeros((6, 8), np.uint16)
    inst[1:3, 2:5] = 7
    assert convert.boxes_from_instances(inst, {7: "car", 8: "bus"}) == [
        {"label": "car", "bbox_xyxy": [2, 1, 5, 3], "instance": 7}]
    assert convert.box_from_inclusive(-3.5, 1.2, 7.9, 10.0, (8, 6)) == [0, 1, 8, 6]
    assert convert.box_from_inclusive(9.0, 1.0, 12.0, 2.0, (8, 6)) is None


def test_png_encoding_is_deterministic_and_keeps_depth():
    inst = (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4)
    data = convert.encode_png(inst)
    assert data == convert.encode_png(inst.copy())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), inst)
    assert np.asarray(Image.open(io.BytesIO(convert.encode_png(np.full((2, 2), 13, np.uint8))))).max() == 13


def test_zip_members_and_missing_files(tmp_path):
    archive = str(tmp_path / "img.zip")
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("seq/0001.bin", b"payload")
    location = zip_location(archive, "seq/0001.bin")
    assert read_bytes("k", location, "rgb") == b"payload"
    assert file_name(location) == "0001.bin"
    with pytest.raises(BadFrame, match="cannot read rgb"):
        read_bytes("k", zip_location(archive, "seq/none.bin"), "rgb")
    files, extra = present_files({"rgb": archive, "seg": str(tmp_path / "none.png")})
    frame = SourceFrame("k", files, extra)
    assert list(files) == ["rgb"]
    with pytest.raises(BadFrame, match="none.png: frame 'k': missing seg file"):
        require_file(frame, "seg")
