"""Issue 16 item 7 at the importer level: a malformed annotation file is a ``ValueError`` naming the
file (the CLI's one-line user error), and a malformed box inside a good file is a counted drop."""

from __future__ import annotations

import json

import pytest

from sim2real.storage.sources import convert
from sim2real.storage.sources.bdd100k import read_detections
from sim2real.storage.sources.folder import FolderFormat
from sim2real.storage.sources.shift import read_det_2d


@pytest.mark.parametrize("content", [{"frames": [{"videoName": "s"}]}, {"frames": [3]}, [["x"]]])
def test_malformed_det_2d_names_the_file(tmp_path, content):
    path = tmp_path / "det_2d.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=f"{path}: not a Scalabel det_2d file"):
        read_det_2d(str(path))


@pytest.mark.parametrize("content", [[{"labels": []}], ["x"], [{"name": "a.jpg", "labels": [7]}]])
def test_malformed_bdd_labels_name_the_file(tmp_path, content):
    path = tmp_path / "det_train.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=f"{path}: not a BDD100K label file"):
        read_detections(str(path))


CLASSES = ["{", '{"classes": [{"id": 0}]}', '{"classes": [{"id": "x", "name": "road"}]}',
           '{"classes": [{"id": 300, "name": "road"}]}', "[1]"]


@pytest.mark.parametrize("text", CLASSES)
def test_malformed_classes_json_names_the_file(tmp_path, text):
    (tmp_path / "classes.json").write_text(text)
    (tmp_path / "rgb").mkdir()
    with pytest.raises(ValueError, match="classes.json"):
        FolderFormat().discover(str(tmp_path), {})


def test_malformed_box2d_is_a_counted_drop():
    labels = [{"id": "1", "category": "car", "box2d": {"x1": "a", "y1": 0, "x2": 3, "y2": 3}},
              {"id": "2", "category": "car", "box2d": {"x1": 0, "y1": 0}},
              {"id": "3", "category": "car", "box2d": {"x1": 0, "y1": 0, "x2": 3, "y2": 3}}]
    boxes, dropped = convert.boxes_from_box2d(labels, {"car": "car"}, (8, 8))
    assert [b["source_id"] for b in boxes] == ["3"] and dropped == {"malformed box2d": 2}


def test_box2d_that_is_infinite_inverted_or_without_category_is_a_counted_drop():
    """JSON reads 1e400 as infinity (int() of it raised OverflowError, aborting the shard); corners
    swapped by less than a pixel were kept as a 1-pixel box; a label without category counted as 'None'."""
    box = {"x1": 0, "y1": 0, "x2": 3, "y2": 3}
    labels = [{"id": "1", "category": "car", "box2d": {**box, "x2": float("inf")}},
              {"id": "2", "category": "car", "box2d": {**box, "x1": -float("inf")}},
              {"id": "3", "category": "car", "box2d": {**box, "y1": float("nan")}},
              {"id": "4", "category": "car", "box2d": {"x1": 5.6, "y1": 0, "x2": 5.2, "y2": 3}},
              {"id": "5", "category": "car", "box2d": {"x1": 6, "y1": 0, "x2": 1, "y2": 3}},
              {"id": "6", "category": "car", "box2d": {"x1": 20, "y1": 20, "x2": 30, "y2": 30}},
              {"id": "7", "box2d": box},
              {"id": "8", "category": "car", "box2d": box}]
    boxes, dropped = convert.boxes_from_box2d(labels, {"car": "car"}, (8, 8))
    assert [b["source_id"] for b in boxes] == ["8"]
    assert dropped == {"malformed box2d": 3, "inverted box2d (x2 < x1 or y2 < y1)": 2,
                       "box outside the image": 1, "no category": 1}
    text = '[{"name": "a.jpg", "labels": [{"id": "1", "category": "car", "box2d": ' \
           '{"x1": 0, "y1": 0, "x2": 1e400, "y2": 3}}]}]'
    records = json.loads(text)
    assert convert.boxes_from_box2d(records[0]["labels"], {"car": "car"}, (8, 8)) == \
        ([], {"malformed box2d": 1})
