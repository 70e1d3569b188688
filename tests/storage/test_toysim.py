"""The toy simulator: determinism, pixel-exact labels, fine details, the export layout."""

from __future__ import annotations

import colorsys
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim2real.storage.schema import KEY_PATTERN
from sim2real.storage.sources.toysim import (
    RenderedFrame,
    ToySimConfig,
    frame_files,
    render_frame,
    sample_scene,
    write_export,
)
from sim2real.storage.sources.toysim_font import sample_bitmap, text_bitmap
from sim2real.storage.sources.toysim_materials import palette
from sim2real.storage.sources.toysim_scene import LIGHT_COLORS, SPEED_LIMITS
from sim2real.storage.taxonomy import DETECTION_CLASSES, TRAIN_CLASSES, TRAIN_ID_BY_NAME

SCENE_CLASSES = ("road", "sidewalk", "building", "pole", "traffic light", "traffic sign", "vegetation", "sky",
                 "person", "car", "truck", "bus")
SCENE_IDS = {TRAIN_ID_BY_NAME[n] for n in SCENE_CLASSES}


def _frames(style: str, count: int, height: int = 64, width: int = 128,
            seed: int = 3) -> list[RenderedFrame]:
    config = ToySimConfig(style, height=height, width=width, seed=seed)
    return [render_frame(config, i) for i in range(count)]


def test_same_seed_same_bytes_and_other_seeds_differ() -> None:
    config = ToySimConfig("real", height=32, width=64, seed=5)
    first = frame_files(config, render_frame(config, 2), "k")
    again = frame_files(config, render_frame(config, 2), "k")
    assert first == again
    other_seed = ToySimConfig("real", height=32, width=64, seed=6)
    assert frame_files(other_seed, render_frame(other_seed, 2), "k")["rgb/k.jpg"] != first["rgb/k.jpg"]
    assert not np.array_equal(render_frame(config, 3).seg, render_frame(config, 2).seg)


@pytest.mark.parametrize("style", ["sim", "real"])
def test_labels_are_pixel_exact(style: str) -> None:
    for frame in _frames(style, 6):
        assert set(np.unique(frame.seg).tolist()) <= SCENE_IDS
        instances = [box["instance"] for box in frame.boxes]
        assert len(instances) == len(set(instances))
        assert set(np.unique(frame.inst).tolist()) - {0} == set(instances)
        for box in frame.boxes:
            mask = frame.inst == box["instance"]
            rows, cols = np.nonzero(mask)
            assert box["bbox_xyxy"] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            assert box["label"] in DETECTION_CLASSES
            assert (frame.seg[mask] == TRAIN_ID_BY_NAME[box["label"]]).all()
        detection_ids = [TRAIN_ID_BY_NAME[n] for n in ("person", "car", "truck", "bus")]
        assert (frame.inst[np.isin(frame.seg, detection_ids)] > 0).all()
        assert (frame.depth[frame.seg == TRAIN_ID_BY_NAME["sky"]] == 65535).all()


def test_ground_depth_grows_towards_the_horizon() -> None:
    frame = render_frame(ToySimConfig("sim", height=64, width=128, seed=1), 0)
    road = frame.seg == TRAIN_ID_BY_NAME["road"]
    rows = [r for r in range(64) if road[r].any()]
    nearest = [int(frame.depth[r][road[r]].max()) for r in rows]
    assert len(rows) > 10 and nearest[0] > nearest[-1]


@pytest.mark.parametrize("size", [(37, 70), (8, 8), (96, 40)])
def test_odd_sizes_render(size: tuple[int, int]) -> None:
    height, width = size
    for frame in _frames("real", 3, height, width):
        assert frame.rgb.shape == (height, width, 3) and frame.rgb.dtype == np.uint8
        assert frame.seg.shape == frame.inst.shape == frame.depth.shape == (height, width)
        for box in frame.boxes:
            x1, y1, x2, y2 = box["bbox_xyxy"]
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="style"):
        ToySimConfig("cartoon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        ToySimConfig("sim", height=4)
    with pytest.raises(ValueError, match="frame index"):
        render_frame(ToySimConfig("sim"), -1)


def _class_fractions(frames: list[RenderedFrame]) -> np.ndarray:
    counts = np.sum([np.bincount(f.seg.ravel(), minlength=256) for f in frames], axis=0)
    return counts[: len(TRAIN_CLASSES)] / counts.sum()


def test_styles_share_geometry_but_not_rare_case_rates() -> None:
    sim, real = _frames("sim", 40, 32, 64, seed=11), _frames("real", 40, 32, 64, seed=11)
    gap = np.abs(_class_fractions(sim) - _class_fractions(real))
    for name in ("road", "sidewalk", "building", "sky"):
        assert gap[TRAIN_ID_BY_NAME[name]] < 0.06, name
    rates = {}
    for style in ("sim", "real"):
        scenes = [sample_scene(np.random.default_rng([0, i]), 64, 128, style) for i in range(300)]
        crossing = np.mean([any(o.attrs.get("crossing") for o in s.objects) for s in scenes])
        vehicles = [o.kind for s in scenes for o in s.objects if o.kind in ("car", "truck", "bus")]
        rates[style] = (crossing, vehicles.count("truck") / len(vehicles))
    assert rates["sim"][0] > rates["real"][0] + 0.15
    assert rates["sim"][1] > rates["real"][1] + 0.08


def test_styles_differ_in_colour_and_texture() -> None:
    sim, real = _frames("sim", 8), _frames("real", 8)

    def saturation(frame: RenderedFrame) -> float:
        rgb = frame.rgb.astype(np.float32)
        return float((rgb.max(axis=2) - rgb.min(axis=2)).mean())

    def road_roughness(frame: RenderedFrame) -> float:
        grey = frame.rgb.astype(np.float32).mean(axis=2)
        road = frame.seg == TRAIN_ID_BY_NAME["road"]
        inner = road[1:-1, 1:-1] & road[:-2, 1:-1] & road[2:, 1:-1] & road[1:-1, :-2] & road[1:-1, 2:]
        lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
        return float(np.median(np.abs(lap[inner])))

    assert np.mean([saturation(f) for f in sim]) > 1.5 * np.mean([saturation(f) for f in real])
    assert np.mean([road_roughness(f) for f in real]) > np.mean([road_roughness(f) for f in sim]) + 2.0


def _lamp_pixels(frame: RenderedFrame, light: dict) -> np.ndarray:
    """The brighter half of the traffic-light pixels inside the lit lamp's box."""
    x1, y1, x2, y2 = light["lamp_bbox_xyxy"]
    crop = frame.rgb[y1:y2, x1:x2].reshape(-1, 3).astype(np.float32)
    crop = crop[(frame.seg[y1:y2, x1:x2] == TRAIN_ID_BY_NAME["traffic light"]).ravel()]
    return crop[crop.max(axis=1) >= np.median(crop.max(axis=1))]


def _nearest_lamp_color(rgb: np.ndarray, style: str) -> str:
    """Which lamp colour of the style's palette has the closest hue to ``rgb`` (hue ignores grey mixing)."""
    pal = palette(style)

    def hue(colour: np.ndarray) -> float:
        return colorsys.rgb_to_hsv(*(float(c) for c in colour))[0]

    def gap(a: float, b: float) -> float:
        return min(abs(a - b), 1 - abs(a - b))

    distances = {c: gap(hue(rgb / 255.0), hue(pal[f"lamp_{c}"][0])) for c in LIGHT_COLORS}
    return min(distances, key=distances.__getitem__)


@pytest.mark.parametrize("style", ["sim", "real"])
def test_lit_lamp_colour_matches_meta(style: str) -> None:
    checked = 0
    config = ToySimConfig(style, 128, 256, seed=2)
    for index in range(30):
        frame = render_frame(config, index)
        if style == "real":  # check what the export holds: the decoded JPEG
            jpeg = frame_files(config, frame, "k")["rgb/k.jpg"]
            frame = replace(frame, rgb=np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))
        for light in frame.meta["lights"]:
            lamp = light["lamp_bbox_xyxy"]
            if lamp is None or (lamp[2] - lamp[0]) * (lamp[3] - lamp[1]) < 4:
                continue
            x1, y1, x2, y2 = light["bbox_xyxy"]
            housing = frame.rgb[y1:y2, x1:x2].astype(np.float32).max(axis=2)
            lit = _lamp_pixels(frame, light).mean(axis=0)
            assert lit.max() > np.percentile(housing, 25) + 40, "the lit lamp is brighter than its housing"
            assert _nearest_lamp_color(lit, style) == light["color"], (lit, light)
            checked += 1
    assert checked >= 6


def test_sign_digits_match_meta() -> None:
    checked = 0
    for frame in _frames("sim", 40, 192, 384, seed=4):
        for sign in frame.meta["signs"]:
            x1, y1, x2, y2 = sign["bbox_xyxy"]
            if x2 - x1 < 18 or abs((x2 - x1) - (y2 - y1)) > 1 or x1 == 0 or x2 == 384:
                continue  # too small or partly hidden
            crop = frame.rgb[y1:y2, x1:x2].astype(np.int32)
            dark = crop.max(axis=2) < 80
            s = ((np.arange(x2 - x1) + 0.5) / (x2 - x1))[None, :]
            t = ((np.arange(y2 - y1) + 0.5) / (y2 - y1))[:, None]
            scores = {}
            for limit in SPEED_LIMITS:
                bitmap = text_bitmap(str(limit))
                box_h = 0.55 * bitmap.shape[0] / bitmap.shape[1]
                expected = sample_bitmap(bitmap, (s - 0.5) / 0.55 + 0.5, (t - 0.5) / box_h + 0.5)
                scores[limit] = (dark & expected).sum() / max(1, (dark | expected).sum())
            assert max(scores, key=scores.__getitem__) == sign["speed_limit"], scores
            checked += 1
    assert checked >= 3


def test_export_layout(tmp_path: Path) -> None:
    calls: list[int] = []
    keys = write_export(tmp_path / "sim", ToySimConfig("sim", 32, 64, seed=1), 3, progress=calls.append)
    assert keys == [f"sim-s1-{i:06d}" for i in range(3)] and calls == [1, 1, 1]
    assert all(KEY_PATTERN.fullmatch(k) for k in keys)
    root = tmp_path / "sim"
    spec = json.loads((root / "classes.json").read_text())
    assert spec["format"] == "sim2real-folder" and spec["ignore_id"] == 255
    assert [c["name"] for c in spec["classes"]] == list(TRAIN_CLASSES)
    assert [c["id"] for c in spec["classes"]] == list(range(19))
    key = keys[0]
    modes = {"rgb": "RGB", "seg": "L", "inst": "I;16", "depth": "I;16"}
    for folder, mode in modes.items():
        image = Image.open(root / folder / f"{key}.png")
        assert image.mode == mode and image.size == (64, 32), folder
    boxes = json.loads((root / "boxes" / f"{key}.json").read_text())
    assert all(set(b) == {"label", "bbox_xyxy", "instance"} for b in boxes)
    meta = json.loads((root / "meta" / f"{key}.json").read_text())
    assert meta["source"] == "toysim" and meta["frame"] == 0 and meta["seed"] == 1
    assert {"lights", "signs", "lane_marks", "weather", "time_of_day", "camera", "sequence"} <= set(meta)
    assert not list(root.rglob("*.tmp"))
    write_export(tmp_path / "real", ToySimConfig("real", 32, 64), 1)
    jpeg = (tmp_path / "real" / "rgb" / "real-s0-000000.jpg").read_bytes()
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_start_continues_a_sequence(tmp_path: Path) -> None:
    config = ToySimConfig("real", 32, 64, seed=9)
    write_export(tmp_path / "once", config, 4)
    write_export(tmp_path / "twice", config, 2)
    assert write_export(tmp_path / "twice", config, 2, start=2) == ["real-s9-000002", "real-s9-000003"]
    assert _tree_bytes(tmp_path / "once") == _tree_bytes(tmp_path / "twice")


def test_folder_importer_reads_the_export(tmp_path: Path) -> None:
    folder = pytest.importorskip("sim2real.storage.sources.folder")
    write_export(tmp_path, ToySimConfig("sim", 32, 64), 2)
    importer = folder.FolderFormat()
    frames = importer.discover(str(tmp_path), {})
    assert [f.key for f in frames] == ["sim-s0-000000", "sim-s0-000001"]
    members = importer.load(frames[0]).members
    assert members["seg.png"] == (tmp_path / "seg" / "sim-s0-000000.png").read_bytes()
    assert "seg_src.png" not in members and "rgb.png" in members
