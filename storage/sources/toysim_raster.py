"""Rasterisation for the toy simulator: parts → pixel fragments, and a z-buffered canvas.

Image and labels come from the same fragments, so labels are pixel-exact by construction: a pixel
belongs to a part when its centre lies inside the part's projection, and the nearest part wins.
Each fragment also carries surface coordinates ``u`` (across, metres) and ``v`` (up, metres) so
materials can draw windows, wheels, lamps and digits on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim2real.storage.sources.toysim_scene import Camera, Part, Street
from sim2real.storage.taxonomy import IGNORE_ID, TRAIN_ID_BY_NAME

FAR_Z_M = 1000.0  # depth given to the ground near the horizon
SKY_Z_M = 1.0e9
CROSSWALK_ID = 900000


@dataclass(frozen=True)
class Fragment:
    """The pixels of one face of one part inside ``rows``×``cols`` (``mask`` says which)."""

    rows: slice
    cols: slice
    mask: np.ndarray  # bool, h×w
    depth: np.ndarray  # metres, broadcastable to h×w
    u: np.ndarray  # metres across the face from its left (front) or near (side) edge
    v: np.ndarray  # metres above the part's bottom
    face: str  # "front" (faces the camera) or "side" (runs along the street)


def _span(lo: float, hi: float, limit: int) -> tuple[int, int]:
    """Indices of pixels whose centre lies in [lo, hi), clipped to [0, limit)."""
    start = max(0, math.ceil(lo - 0.5))
    stop = min(limit, math.ceil(hi - 0.5))
    return start, max(start, stop)


def front_fragment(cam: Camera, part: Part) -> Fragment | None:
    """The camera-facing face of ``part`` at depth ``part.z0`` (a rect or an ellipse)."""
    z = part.z0
    if z <= 0.05:
        return None
    scale = cam.focal / z
    c0, c1 = _span(cam.center_x + part.x0 * scale, cam.center_x + part.x1 * scale, cam.width)
    r0, r1 = _span(cam.horizon + (cam.eye_height_m - part.h1) * scale,
                   cam.horizon + (cam.eye_height_m - part.h0) * scale, cam.height)
    if c0 >= c1 or r0 >= r1:
        return None
    u = ((np.arange(c0, c1) + 0.5 - cam.center_x) / scale - part.x0)[None, :]
    v = (cam.eye_height_m - (np.arange(r0, r1) + 0.5 - cam.horizon) / scale - part.h0)[:, None]
    if part.shape == "ellipse":
        a, b = (part.x1 - part.x0) / 2, (part.h1 - part.h0) / 2
        mask = ((u - a) / a) ** 2 + ((v - b) / b) ** 2 < 1.0
    else:
        mask = np.ones((r1 - r0, c1 - c0), dtype=bool)
    if not mask.any():
        return None
    return Fragment(slice(r0, r1), slice(c0, c1), mask, np.full((1, 1), z, np.float32), u, v, "front")


def side_fragment(cam: Camera, part: Part) -> Fragment | None:
    """The side face of a box that runs along the street on the camera's side, if it is visible."""
    if part.x0 > 0:
        xs = part.x0
    elif part.x1 < 0:
        xs = part.x1
    else:
        return None
    near, far = cam.center_x + cam.focal * xs / part.z0, cam.center_x + cam.focal * xs / part.z1
    c0, c1 = _span(min(near, far), max(near, far), cam.width)
    rows = [cam.horizon + (cam.eye_height_m - h) * cam.focal / z for h in (part.h0, part.h1)
            for z in (part.z0, part.z1)]
    r0, r1 = _span(min(rows), max(rows), cam.height)
    if c0 >= c1 or r0 >= r1:
        return None
    dx = np.arange(c0, c1) + 0.5 - cam.center_x
    with np.errstate(divide="ignore", invalid="ignore"):
        zz = np.where(dx * xs > 0, cam.focal * xs / dx, np.inf)[None, :]
    yc = (np.arange(r0, r1) + 0.5 - cam.horizon)[:, None]
    v = cam.eye_height_m - yc * zz / cam.focal - part.h0
    mask = (zz >= part.z0) & (zz <= part.z1) & (v >= 0) & (v < part.h1 - part.h0)
    if not mask.any():
        return None
    return Fragment(slice(r0, r1), slice(c0, c1), mask, zz.astype(np.float32), zz - part.z0, v, "side")


def fragments(cam: Camera, part: Part) -> list[Fragment]:
    """All visible-in-frame faces of ``part``, nearest face first."""
    faces = [front_fragment(cam, part)]
    if part.shape == "box":
        faces.append(side_fragment(cam, part))
    return [f for f in faces if f is not None]


@dataclass(frozen=True)
class Ground:
    """Per-pixel ground geometry: depth (metres, sky = ``SKY_Z_M``) and lateral position (metres)."""

    depth: np.ndarray  # H×W float32
    x_m: np.ndarray  # H×W float32 (0 in the sky)
    is_ground: np.ndarray  # H×W bool
    is_road: np.ndarray  # H×W bool


def ground_geometry(cam: Camera, street: Street) -> Ground:
    """Where the ground plane is, how far and how far to the side each ground pixel lies."""
    yc = np.arange(cam.height, dtype=np.float32) + 0.5 - cam.horizon
    below = yc > 0
    z_row = cam.focal * cam.eye_height_m / np.maximum(yc, 1e-3)
    z_row = np.where(below, np.minimum(z_row, FAR_Z_M), SKY_Z_M).astype(np.float32)
    dx = (np.arange(cam.width, dtype=np.float32) + 0.5 - cam.center_x) / cam.focal
    x_m = np.where(below[:, None], dx[None, :] * z_row[:, None], 0.0).astype(np.float32)
    is_ground = np.broadcast_to(below[:, None], (cam.height, cam.width))
    is_road = is_ground & (x_m >= street.road_left_m) & (x_m < street.road_right_m)
    depth = np.broadcast_to(z_row[:, None], (cam.height, cam.width)).astype(np.float32)
    return Ground(depth, x_m, np.array(is_ground), is_road)


def lane_mark_ids(ground: Ground, street: Street) -> np.ndarray:
    """An int32 map of painted marks on the road: 0 none, else a unique id per dash/line/stripe.

    Line ``j`` (of ``street.lines``) owns ids ``(j+1)*1000`` (solid) or ``(j+1)*1000 + 1 + dash``;
    crosswalk stripes are ``CROSSWALK_ID + stripe``.
    """
    ids = np.zeros(ground.depth.shape, dtype=np.int32)
    z, x = ground.depth, ground.x_m
    for j, line in enumerate(street.lines):
        on = ground.is_road & (np.abs(x - line.x_m) < line.width_m / 2)
        if line.dashed:
            t = z / line.period_m + line.phase
            on &= (t - np.floor(t)) < line.duty
            ids[on] = (j + 1) * 1000 + 1 + np.floor(t[on]).astype(np.int32)
        else:
            ids[on] = (j + 1) * 1000
    if street.crosswalk_z_m is not None:
        zc = street.crosswalk_z_m
        stripe = (x - street.road_left_m) / 1.0
        on = ground.is_road & (z >= zc) & (z < zc + street.crosswalk_len_m) & ((stripe % 1.0) < 0.5)
        ids[on] = CROSSWALK_ID + np.floor(stripe[on]).astype(np.int32)
    return ids


class Canvas:
    """Colour, labels and depth being drawn, with a z-buffer; the nearest fragment wins each pixel."""

    def __init__(self, height: int, width: int) -> None:
        self.rgb = np.zeros((height, width, 3), dtype=np.float32)
        self.depth = np.full((height, width), SKY_Z_M, dtype=np.float32)
        self.seg = np.full((height, width), IGNORE_ID, dtype=np.uint8)
        self.inst = np.zeros((height, width), dtype=np.uint16)
        self.part = np.zeros((height, width), dtype=np.int32)  # 0 = sky/ground, else part number
        self.emissive = np.zeros((height, width), dtype=bool)

    def paint_background(self, ground: Ground, rgb: np.ndarray) -> None:
        """Sky, road and sidewalk: the whole frame, before any part."""
        self.rgb[:] = rgb
        self.depth[:] = ground.depth
        self.seg[:] = TRAIN_ID_BY_NAME["sky"]
        self.seg[ground.is_ground] = TRAIN_ID_BY_NAME["sidewalk"]
        self.seg[ground.is_road] = TRAIN_ID_BY_NAME["road"]

    def draw(self, frag: Fragment, rgb: np.ndarray, train_id: int, instance: int, part_id: int,
             emissive: bool = False) -> None:
        """Draw the fragment's pixels that are nearer than what is already there."""
        depth = np.broadcast_to(frag.depth, frag.mask.shape)
        win = frag.mask & (depth < self.depth[frag.rows, frag.cols])
        if not win.any():
            return
        self.depth[frag.rows, frag.cols][win] = depth[win]
        self.rgb[frag.rows, frag.cols][win] = np.broadcast_to(rgb, frag.mask.shape + (3,))[win]
        self.seg[frag.rows, frag.cols][win] = train_id
        self.inst[frag.rows, frag.cols][win] = instance
        self.part[frag.rows, frag.cols][win] = part_id
        self.emissive[frag.rows, frag.cols][win] = emissive
