"""The toy street-scene simulator: procedural frames with pixel-exact labels, in two styles.

``sim`` renders flat saturated colours with sharp edges (a video-game look, PNG); ``real`` renders the
same kind of scenes with texture, a lighting gradient, blur, vignetting and sensor noise (JPEG). One
scene sampler feeds both, so geometry statistics are shared except for the rare-case rates (the
``sim`` domain has more crossing pedestrians and trucks).

``write_export`` writes the generic ``folder`` export layout (see ``storage/sources/folder.py``)::

    OUT/classes.json  OUT/rgb/{key}.png|jpg  OUT/seg/{key}.png  OUT/inst/{key}.png
    OUT/boxes/{key}.json  OUT/depth/{key}.png  OUT/meta/{key}.json

The same ``(style, seed, frame index, size)`` always gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from sim2real.storage.sources.toysim_materials import is_lit_lamp, palette, shade_part
from sim2real.storage.sources.toysim_raster import (
    CROSSWALK_ID,
    Canvas,
    Fragment,
    fragments,
    ground_geometry,
    lane_mark_ids,
)
from sim2real.storage.sources.toysim_scene import DETECTION_KINDS, Scene, sample_scene
from sim2real.storage.sources.toysim_style import background, finish_real, finish_sim
from sim2real.storage.taxonomy import DETECTION_CLASSES, IGNORE_ID, TRAIN_CLASSES, TRAIN_ID_BY_NAME

SOURCE_NAME = "toysim"
SEQUENCE_FRAMES = 100  # frames grouped under one ``sequence`` name in meta.json
JPEG_QUALITY = 90
MAX_DEPTH_CM = 65535
MIN_MARK_PIXELS = 3  # lane-mark pieces smaller than this are not listed in meta.json

__all__ = ["ToySimConfig", "RenderedFrame", "Scene", "sample_scene", "render_frame", "write_export",
           "frame_key", "classes_spec"]


@dataclass(frozen=True)
class ToySimConfig:
    """What to render: the style, the frame size in pixels and the seed of the frame sequence."""

    style: Literal["sim", "real"]
    height: int = 128
    width: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.style not in ("sim", "real"):
            raise ValueError(f"toysim style {self.style!r}: must be 'sim' or 'real'")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"toysim size {self.height}x{self.width}: both sides must be at least 8 pixels")
        if self.seed < 0:
            raise ValueError(f"toysim seed {self.seed}: must be >= 0")


@dataclass(frozen=True)
class RenderedFrame:
    """One rendered frame: image, labels (trainIds, instances, depth in cm), boxes and metadata."""

    rgb: np.ndarray  # H×W×3 uint8
    seg: np.ndarray  # H×W uint8 trainIds
    inst: np.ndarray  # H×W uint16, 0 = no instance
    depth: np.ndarray  # H×W uint16 centimetres
    boxes: list[dict[str, Any]]
    meta: dict[str, Any]


def frame_key(config: ToySimConfig, index: int) -> str:
    """The sample key of frame ``index``: ``{style}-s{seed}-{index:06d}``."""
    return f"{config.style}-s{config.seed}-{index:06d}"


def classes_spec() -> dict[str, Any]:
    """The content of ``classes.json``: ids are the canonical trainIds, so seg passes through as is."""
    return {"format": "sim2real-folder", "format_version": 1, "ignore_id": IGNORE_ID,
            "classes": [{"id": i, "name": name} for i, name in enumerate(TRAIN_CLASSES)],
            "detection_classes": list(DETECTION_CLASSES)}


@dataclass
class _Drawn:
    """Bookkeeping of one drawn part: its object, part number and the pixel rectangle it can cover."""

    obj_index: int
    part_index: int  # index in the object's ``parts``
    part_id: int  # number in the canvas's part map
    rows: slice
    cols: slice


def _union(frags: list[Fragment]) -> tuple[slice, slice]:
    r0, r1 = min(f.rows.start for f in frags), max(f.rows.stop for f in frags)
    c0, c1 = min(f.cols.start for f in frags), max(f.cols.stop for f in frags)
    return slice(r0, r1), slice(c0, c1)


def _draw_objects(scene: Scene, canvas: Canvas, style: str) -> tuple[list[_Drawn], dict[int, int]]:
    """Draw every part; return what was drawn and the instance id given to each detection object."""
    pal = palette(style)
    drawn: list[_Drawn] = []
    instance_of: dict[int, int] = {}
    for obj_index, obj in enumerate(scene.objects):
        if obj.kind in DETECTION_KINDS:
            instance_of[obj_index] = len(instance_of) + 1
        instance = instance_of.get(obj_index, 0)
        for part_index, part in enumerate(obj.parts):
            frags = fragments(scene.camera, part)
            if not frags:
                continue
            part_id = len(drawn) + 1
            for frag in frags:
                canvas.draw(frag, shade_part(pal, obj, part, frag), part.train_id, instance, part_id,
                            emissive=is_lit_lamp(obj, part))
            drawn.append(_Drawn(obj_index, part_index, part_id, *_union(frags)))
    return drawn, instance_of


def _bbox(mask: np.ndarray, rows: slice, cols: slice) -> list[int] | None:
    """``[x1, y1, x2, y2]`` (exclusive max) of the True pixels of ``mask`` (a crop at rows/cols)."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if len(ys) == 0:
        return None
    return [int(cols.start + xs[0]), int(rows.start + ys[0]), int(cols.start + xs[-1] + 1),
            int(rows.start + ys[-1] + 1)]


def _parts_bbox(canvas: Canvas, items: list[_Drawn]) -> list[int] | None:
    """Bounding box of the visible pixels of the given drawn parts."""
    if not items:
        return None
    rows = slice(min(d.rows.start for d in items), max(d.rows.stop for d in items))
    cols = slice(min(d.cols.start for d in items), max(d.cols.stop for d in items))
    mask = np.isin(canvas.part[rows, cols], [d.part_id for d in items])
    return _bbox(mask, rows, cols)


def _boxes(scene: Scene, canvas: Canvas, drawn: list[_Drawn],
           instance_of: dict[int, int]) -> list[dict[str, Any]]:
    """Detection boxes computed from the instance map; fully occluded instances are skipped."""
    boxes = []
    for obj_index, instance in instance_of.items():
        items = [d for d in drawn if d.obj_index == obj_index]
        if not items:
            continue
        rows = slice(min(d.rows.start for d in items), max(d.rows.stop for d in items))
        cols = slice(min(d.cols.start for d in items), max(d.cols.stop for d in items))
        bbox = _bbox(canvas.inst[rows, cols] == instance, rows, cols)
        if bbox is not None:
            boxes.append({"label": scene.objects[obj_index].kind, "bbox_xyxy": bbox, "instance": instance})
    return boxes


def _fine_details(scene: Scene, canvas: Canvas, drawn: list[_Drawn]) -> dict[str, list[dict[str, Any]]]:
    """Visible traffic lights (with the lit lamp) and speed-limit signs, for meta.json."""
    lights, signs = [], []
    light_id = TRAIN_ID_BY_NAME["traffic light"]
    for obj_index, obj in enumerate(scene.objects):
        if obj.kind not in ("traffic_light", "sign"):
            continue
        items = [(d, obj.parts[d.part_index]) for d in drawn if d.obj_index == obj_index]
        if obj.kind == "traffic_light":
            bbox = _parts_bbox(canvas, [d for d, part in items if part.train_id == light_id])
            if bbox is not None:
                lamp = _parts_bbox(canvas, [d for d, part in items if is_lit_lamp(obj, part)])
                lights.append({"bbox_xyxy": bbox, "color": obj.attrs["color"], "lamp_bbox_xyxy": lamp})
        else:
            bbox = _parts_bbox(canvas, [d for d, part in items if part.material == "sign_speed"])
            if bbox is not None:
                signs.append({"bbox_xyxy": bbox, "speed_limit": int(obj.attrs["speed_limit"])})
    return {"lights": lights, "signs": signs}


def _lane_marks(scene: Scene, canvas: Canvas, marks: np.ndarray) -> list[dict[str, Any]]:
    """Bounding boxes of the visible pieces of road paint (dashes, solid lines, crosswalk stripes)."""
    visible = np.where(canvas.part == 0, marks, 0)
    rows, cols = np.nonzero(visible)
    if len(rows) == 0:
        return []
    ids, inverse, counts = np.unique(visible[rows, cols], return_inverse=True, return_counts=True)
    x1 = np.full(len(ids), np.iinfo(np.int64).max)
    y1 = x1.copy()
    x2 = np.full(len(ids), -1)
    y2 = x2.copy()
    np.minimum.at(x1, inverse, cols)
    np.minimum.at(y1, inverse, rows)
    np.maximum.at(x2, inverse, cols)
    np.maximum.at(y2, inverse, rows)
    out = []
    for k, mark_id in enumerate(ids):
        if counts[k] < MIN_MARK_PIXELS:
            continue
        if mark_id >= CROSSWALK_ID:
            kind = "crosswalk"
        else:
            kind = "dashed" if scene.street.lines[mark_id // 1000 - 1].dashed else "solid"
        out.append({"bbox_xyxy": [int(x1[k]), int(y1[k]), int(x2[k]) + 1, int(y2[k]) + 1], "kind": kind})
    return out


def render_frame(config: ToySimConfig, index: int) -> RenderedFrame:
    """Render frame ``index`` of the sequence ``config`` describes (deterministic in both)."""
    if index < 0:
        raise ValueError(f"toysim frame index {index}: must be >= 0")
    rng = np.random.default_rng([config.seed, index])
    scene = sample_scene(rng, config.height, config.width, config.style)
    ground = ground_geometry(scene.camera, scene.street)
    marks = lane_mark_ids(ground, scene.street)
    canvas = Canvas(config.height, config.width)
    canvas.paint_background(ground, background(scene, ground, marks, palette(config.style)))
    drawn, instance_of = _draw_objects(scene, canvas, config.style)
    if config.style == "sim":
        rgb = finish_sim(scene, canvas.rgb, canvas.emissive)
    else:
        rgb = finish_real(scene, canvas.rgb, canvas.seg, canvas.emissive,
                          np.random.default_rng([config.seed, index, 1]))
    depth = np.minimum(np.round(canvas.depth * 100.0), MAX_DEPTH_CM).astype(np.uint16)
    boxes = _boxes(scene, canvas, drawn, instance_of)
    crossing = sum(1 for obj in scene.objects if obj.kind == "person" and obj.attrs["crossing"])
    meta: dict[str, Any] = {
        "source": SOURCE_NAME, "style": config.style, "frame": index, "camera": "front",
        "sequence": f"{config.style}-s{config.seed}-q{index // SEQUENCE_FRAMES:04d}",
        "weather": scene.weather, "time_of_day": scene.time_of_day, "seed": config.seed,
        "height": config.height, "width": config.width, "crossing_persons": crossing, "depth_unit": "cm",
        **_fine_details(scene, canvas, drawn), "lane_marks": _lane_marks(scene, canvas, marks),
    }
    return RenderedFrame(rgb, canvas.seg, canvas.inst, depth, boxes, meta)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (RGB or 'L') or uint16 ('I;16') array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_jpeg(rgb: np.ndarray) -> bytes:
    """JPEG bytes (quality ``JPEG_QUALITY``) of an RGB uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, indent=1).encode()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def frame_files(config: ToySimConfig, frame: RenderedFrame, key: str) -> dict[str, bytes]:
    """The export's files of one frame, relative path → bytes (the image last)."""
    image = (f"rgb/{key}.png", encode_png(frame.rgb)) if config.style == "sim" else \
        (f"rgb/{key}.jpg", encode_jpeg(frame.rgb))
    return {f"seg/{key}.png": encode_png(frame.seg), f"inst/{key}.png": encode_png(frame.inst),
            f"depth/{key}.png": encode_png(frame.depth), f"boxes/{key}.json": _json_bytes(frame.boxes),
            f"meta/{key}.json": _json_bytes(frame.meta), image[0]: image[1]}


def write_export(out_dir: str | Path, config: ToySimConfig, frames: int, start: int = 0,
                 progress: Callable[[int], None] | None = None) -> list[str]:
    """Render frames ``start .. start+frames-1`` into the folder export at ``out_dir``; return their keys.

    Every file is written atomically; ``classes.json`` is rewritten with identical bytes, so exports
    can be extended later (a nightly run adds frames with a new ``start``). ``progress`` is called
    with 1 after each frame (``tqdm.update`` fits).
    """
    if frames < 0 or start < 0:
        raise ValueError(f"toysim export {out_dir}: frames ({frames}) and start ({start}) must be >= 0")
    out = Path(out_dir)
    for folder in ("rgb", "seg", "inst", "boxes", "depth", "meta"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "classes.json", _json_bytes(classes_spec()))
    keys = []
    for index in range(start, start + frames):
        key = frame_key(config, index)
        for relative, data in frame_files(config, render_frame(config, index), key).items():
            _write_atomic(out / relative, data)
        keys.append(key)
        if progress is not None:
            progress(1)
    return keys


def sign_glyphs(name: str | None) -> dict[int, np.ndarray]:
    """The digit bitmaps of every speed limit of glyph set ``name`` (``toysim``: this simulator's font),
    for reading sign digits back from translated frames; ``None``: none (signs are not read)."""
    if name is None:
        return {}
    if name != "toysim":
        raise ValueError(f"sign glyph set {name!r}: only 'toysim' is known")
    from sim2real.storage.sources.toysim_font import text_bitmap
    from sim2real.storage.sources.toysim_scene import SPEED_LIMITS

    return {limit: text_bitmap(str(limit)) for limit in SPEED_LIMITS}
