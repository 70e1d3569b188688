"""The toy simulator's scene sampler: street geometry in metres, no colours, no pixels.

A scene is a pinhole camera at eye height looking down a straight street, plus a list of objects made
of axis-aligned parts (boxes, and rectangles or ellipses facing the camera). World axes: ``x`` metres
to the right of the camera, ``h`` metres above the ground, ``z`` metres ahead. Both renderer styles
draw the same scenes; only the rare-case rates (crossing pedestrians, trucks) depend on the style.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sim2real.storage.taxonomy import TRAIN_ID_BY_NAME

Shape = Literal["box", "rect", "ellipse"]
SPEED_LIMITS: tuple[int, ...] = (20, 30, 40, 50, 60, 70, 80)
LIGHT_COLORS: tuple[str, ...] = ("red", "yellow", "green")
EYE_HEIGHT_M = 1.5
MAX_Z_M = 90.0  # vehicles, people and furniture are placed nearer than this


@dataclass(frozen=True)
class StyleRates:
    """Per-domain frequencies of the rare cases (the only geometry the two styles do not share)."""

    crossing: float  # probability that a frame has pedestrians crossing the road
    truck: float  # share of trucks among vehicles
    bus: float  # share of buses among vehicles
    overcast: float  # probability of an overcast sky
    dusk: float  # probability of dusk light


STYLE_RATES: dict[str, StyleRates] = {
    "sim": StyleRates(crossing=0.5, truck=0.25, bus=0.12, overcast=0.3, dusk=0.2),
    "real": StyleRates(crossing=0.15, truck=0.08, bus=0.12, overcast=0.5, dusk=0.2),
}


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: image size, horizon row, principal column and focal length, all in pixels."""

    height: int
    width: int
    horizon: float
    center_x: float
    focal: float
    eye_height_m: float = EYE_HEIGHT_M


@dataclass(frozen=True)
class LaneLine:
    """A painted line along the road at lateral position ``x_m``; dashes repeat every ``period_m``."""

    x_m: float
    dashed: bool
    period_m: float = 9.0
    duty: float = 0.4
    phase: float = 0.0
    width_m: float = 0.15


@dataclass(frozen=True)
class Street:
    """Road between ``road_left_m`` and ``road_right_m``, sidewalks out to the building lines."""

    lanes: int
    road_left_m: float
    road_right_m: float
    building_left_m: float
    building_right_m: float
    lines: tuple[LaneLine, ...]
    crosswalk_z_m: float | None = None
    crosswalk_len_m: float = 3.0


@dataclass(frozen=True)
class Part:
    """One primitive: a box (``z0 < z1``) or a camera-facing rect/ellipse at depth ``z0``."""

    shape: Shape
    material: str
    train_id: int
    x0: float
    x1: float
    h0: float
    h1: float
    z0: float
    z1: float


@dataclass(frozen=True)
class SceneObject:
    """A thing in the scene: its kind, its parts and appearance choices (palette slots, attributes)."""

    kind: str
    parts: tuple[Part, ...]
    paint: int = 0
    shade: float = 1.0
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scene:
    """Everything a renderer needs: camera, street, objects and conditions."""

    camera: Camera
    street: Street
    objects: tuple[SceneObject, ...]
    weather: str
    time_of_day: str
    sun_side: float


ID = TRAIN_ID_BY_NAME
DETECTION_KINDS = ("person", "car", "truck", "bus")


def flat(material: str, train_id: int, x0: float, x1: float, h0: float, h1: float, z: float,
         shape: Shape = "rect") -> Part:
    """A camera-facing rectangle or ellipse at depth ``z``."""
    return Part(shape, material, train_id, x0, x1, h0, h1, z, z)


def box(material: str, train_id: int, x0: float, x1: float, h0: float, h1: float, z0: float,
        z1: float) -> Part:
    """An axis-aligned box; its near face and (when off-centre) one side face are visible."""
    return Part("box", material, train_id, x0, x1, h0, h1, z0, z1)


def sample_scene(rng: np.random.Generator, height: int, width: int, style: str) -> Scene:
    """Sample one street scene for an ``height``×``width`` camera; geometry only, no colours."""
    if style not in STYLE_RATES:
        raise ValueError(f"unknown toysim style {style!r}; known: {sorted(STYLE_RATES)}")
    if height < 8 or width < 8:
        raise ValueError(f"toysim frame size {height}x{width}: both sides must be at least 8 pixels")
    rates = STYLE_RATES[style]
    camera = Camera(height, width, horizon=height * rng.uniform(0.36, 0.48),
                    center_x=width * (0.5 + rng.uniform(-0.06, 0.06)), focal=width * rng.uniform(0.5, 0.6),
                    eye_height_m=EYE_HEIGHT_M + rng.uniform(-0.1, 0.2))
    street = _sample_street(rng, rates)
    objects: list[SceneObject] = []
    objects += _sample_buildings(rng, street)
    objects += _sample_vegetation(rng, street)
    objects += _sample_furniture(rng, street)
    objects += _sample_vehicles(rng, street, rates)
    objects += _sample_persons(rng, street, rates)
    weather = "overcast" if rng.random() < rates.overcast else "clear"
    time_of_day = "dusk" if rng.random() < rates.dusk else "day"
    sun_side = float(rng.choice([-1.0, 1.0]))
    return Scene(camera, street, tuple(objects), weather, time_of_day, sun_side)


def _sample_street(rng: np.random.Generator, rates: StyleRates) -> Street:
    lanes = int(rng.choice([2, 3, 4], p=[0.4, 0.3, 0.3]))
    lane_w = rng.uniform(3.0, 3.5)
    oncoming = lanes // 2
    ego = int(rng.integers(oncoming, lanes))
    left = -(ego + 0.5) * lane_w + rng.uniform(-0.4, 0.4)
    right = left + lanes * lane_w
    lines = []
    for k in range(1, lanes):
        solid = k == oncoming and rng.random() < 0.5
        lines.append(LaneLine(left + k * lane_w, dashed=not solid, period_m=rng.uniform(6.0, 12.0),
                              duty=rng.uniform(0.3, 0.5), phase=rng.uniform(0, 1)))
    if rng.random() < 0.5:
        lines += [LaneLine(left + 0.25, dashed=False), LaneLine(right - 0.25, dashed=False)]
    crosswalk = rng.uniform(8.0, 22.0) if rng.random() < rates.crossing else None
    return Street(lanes, left, right, building_left_m=left - rng.uniform(2.5, 5.0),
                  building_right_m=right + rng.uniform(2.5, 5.0), lines=tuple(lines), crosswalk_z_m=crosswalk)


def lane_centers(street: Street) -> list[float]:
    """Centres of the lanes, left to right."""
    step = (street.road_right_m - street.road_left_m) / street.lanes
    return [street.road_left_m + (k + 0.5) * step for k in range(street.lanes)]


def _sides(street: Street) -> tuple[tuple[int, float, float], ...]:
    """(side sign, road edge, building line) of the left and right sidewalks."""
    return ((-1, street.road_left_m, street.building_left_m),
            (1, street.road_right_m, street.building_right_m))


def _facade_attrs(rng: np.random.Generator) -> dict[str, Any]:
    return {"window_spacing_m": rng.uniform(2.2, 4.0), "floor_m": rng.uniform(2.8, 3.6),
            "window_frac": rng.uniform(0.35, 0.65), "shop": bool(rng.random() < 0.4)}


def _sample_buildings(rng: np.random.Generator, street: Street) -> list[SceneObject]:
    objects = []
    for side, line in ((-1, street.building_left_m), (1, street.building_right_m)):
        z = rng.uniform(-4.0, 6.0)
        while z < 140.0:
            length = rng.uniform(8.0, 30.0)
            x0, x1 = (line - 14.0, line) if side < 0 else (line, line + 14.0)
            part = box("facade", ID["building"], x0, x1, 0.0, rng.uniform(6.0, 26.0), max(z, 0.5), z + length)
            objects.append(SceneObject("building", (part,), paint=int(rng.integers(0, 6)),
                                       shade=rng.uniform(0.85, 1.1), attrs=_facade_attrs(rng)))
            z += length + (rng.uniform(3.0, 12.0) if rng.random() < 0.25 else 0.0)
    if rng.random() < 0.6:
        z_end = rng.uniform(100.0, 180.0)
        part = flat("facade", ID["building"], -80.0, 80.0, 0.0, rng.uniform(8.0, 30.0), z_end)
        paint = int(rng.integers(0, 6))
        objects.append(SceneObject("building", (part,), paint=paint, attrs=_facade_attrs(rng)))
    return objects


def _tree(rng: np.random.Generator, x: float, z: float) -> SceneObject:
    trunk_h = rng.uniform(1.6, 2.8)
    parts = [flat("trunk", ID["vegetation"], x - 0.15, x + 0.15, 0.0, trunk_h + 0.5, z)]
    for _ in range(int(rng.integers(3, 6))):
        cx, ch = x + rng.uniform(-0.9, 0.9), trunk_h + rng.uniform(0.8, 2.2)
        rx, rh = rng.uniform(0.9, 1.9), rng.uniform(0.8, 1.5)
        parts.append(flat("foliage", ID["vegetation"], cx - rx, cx + rx, ch - rh, ch + rh,
                          z - rng.uniform(0.0, 0.4), shape="ellipse"))
    return SceneObject("tree", tuple(parts), paint=int(rng.integers(0, 3)), shade=rng.uniform(0.8, 1.15))


def _sample_vegetation(rng: np.random.Generator, street: Street) -> list[SceneObject]:
    objects = []
    for side, edge, line in _sides(street):
        for _ in range(int(rng.poisson(1.6))):
            x = edge + side * rng.uniform(0.8, max(1.0, abs(line - edge) - 0.4))
            objects.append(_tree(rng, x, rng.uniform(5.0, 70.0)))
        if rng.random() < 0.3:
            z0 = rng.uniform(2.0, 30.0)
            x0, x1 = (line, line + 0.9) if side < 0 else (line - 0.9, line)
            hedge = box("foliage", ID["vegetation"], x0, x1, 0.0, rng.uniform(0.7, 1.3), z0,
                        z0 + rng.uniform(5, 25))
            paint, shade = int(rng.integers(0, 3)), rng.uniform(0.8, 1.1)
            objects.append(SceneObject("hedge", (hedge,), paint=paint, shade=shade))
    return objects


def _traffic_light(rng: np.random.Generator, street: Street) -> SceneObject:
    side = 1 if rng.random() < 0.7 else -1
    xp = (street.road_right_m + 0.5) if side > 0 else (street.road_left_m - 0.5)
    z = rng.uniform(7.0, 30.0)
    parts = []
    if rng.random() < 0.4:  # overhead: an arm over the road, the light hanging from its end
        top = rng.uniform(5.2, 6.0)
        xl = xp - side * rng.uniform(2.5, 4.5)
        parts += [flat("pole", ID["pole"], xp - 0.1, xp + 0.1, 0.0, top + 0.15, z),
                  flat("pole", ID["pole"], min(xp, xl), max(xp, xl), top, top + 0.15, z)]
    else:
        top = rng.uniform(3.2, 4.2)
        xl = xp
        parts.append(flat("pole", ID["pole"], xp - 0.1, xp + 0.1, 0.0, top - 0.6, z))
    parts.append(flat("light_housing", ID["traffic light"], xl - 0.24, xl + 0.24, top - 1.25, top, z - 0.05))
    for i, color in enumerate(LIGHT_COLORS):
        hc = top - 0.22 - 0.4 * i
        parts.append(flat(f"lamp_{color}", ID["traffic light"], xl - 0.16, xl + 0.16, hc - 0.16, hc + 0.16,
                          z - 0.1, shape="ellipse"))
    color = str(rng.choice(LIGHT_COLORS, p=[0.4, 0.2, 0.4]))
    return SceneObject("traffic_light", tuple(parts), attrs={"color": color})


def _sign(rng: np.random.Generator, street: Street) -> SceneObject:
    side = 1 if rng.random() < 0.75 else -1
    xp = (street.road_right_m + 0.6) if side > 0 else (street.road_left_m - 0.6)
    z = rng.uniform(5.0, 25.0)
    top = rng.uniform(2.0, 2.6)
    parts = (flat("pole", ID["pole"], xp - 0.06, xp + 0.06, 0.0, top, z),
             flat("sign_speed", ID["traffic sign"], xp - 0.42, xp + 0.42, top - 0.1, top + 0.74, z - 0.05,
                  shape="ellipse"))
    return SceneObject("sign", parts, attrs={"speed_limit": int(rng.choice(SPEED_LIMITS))})


def _sample_furniture(rng: np.random.Generator, street: Street) -> list[SceneObject]:
    objects = []
    for side, edge in ((-1, street.road_left_m), (1, street.road_right_m)):
        for _ in range(int(rng.integers(0, 3))):
            xp, z, top = edge + side * rng.uniform(0.4, 0.8), rng.uniform(6.0, 70.0), rng.uniform(5.0, 8.0)
            arm = (xp - side * 1.4, xp) if side > 0 else (xp, xp - side * 1.4)
            parts = (flat("pole", ID["pole"], xp - 0.09, xp + 0.09, 0.0, top, z),
                     flat("pole", ID["pole"], arm[0], arm[1], top - 0.12, top, z))
            objects.append(SceneObject("pole", parts))
    objects += [_traffic_light(rng, street) for _ in range(int(rng.choice([0, 1, 2], p=[0.3, 0.45, 0.25])))]
    objects += [_sign(rng, street) for _ in range(int(rng.choice([0, 1, 2], p=[0.3, 0.45, 0.25])))]
    return objects


def _vehicle(rng: np.random.Generator, kind: str, x: float, z: float,
             facing: str) -> tuple[SceneObject, float]:
    """A vehicle centred at lateral ``x`` whose nearest face is at depth ``z``; returns it and its length."""
    parts: tuple[Part, ...]
    if kind == "car":
        w, length, h = rng.uniform(1.7, 1.9), rng.uniform(3.9, 4.7), rng.uniform(1.4, 1.6)
        parts = (box("car", ID["car"], x - w / 2, x + w / 2, 0.0, h, z, z + length),)
    elif kind == "bus":
        w, length, h = 2.5, rng.uniform(10.0, 12.5), rng.uniform(3.0, 3.3)
        parts = (box("bus", ID["bus"], x - w / 2, x + w / 2, 0.0, h, z, z + length),)
    else:
        w, cargo, cab, h = 2.45, rng.uniform(5.5, 8.0), 2.2, rng.uniform(3.3, 3.9)
        length = cargo + cab + 0.3
        zc, zk = (z, z + cargo + 0.3) if facing == "rear" else (z + cab + 0.3, z)
        parts = (box("truck_cargo", ID["truck"], x - w / 2, x + w / 2, 0.35, h, zc, zc + cargo),
                 box("truck_cab", ID["truck"], x - w / 2 + 0.05, x + w / 2 - 0.05, 0.0, 2.9, zk, zk + cab),
                 box("truck_chassis", ID["truck"], x - w / 2 + 0.2, x + w / 2 - 0.2, 0.0, 0.6, z, z + length))
    obj = SceneObject(kind, parts, paint=int(rng.integers(0, 8)), shade=rng.uniform(0.85, 1.15),
                      attrs={"facing": facing})
    return obj, length


def _sample_vehicles(rng: np.random.Generator, street: Street, rates: StyleRates) -> list[SceneObject]:
    objects = []
    centers = lane_centers(street)
    oncoming = len(centers) // 2
    blocked = None
    if street.crosswalk_z_m is not None:
        blocked = (street.crosswalk_z_m - 2.0, street.crosswalk_z_m + street.crosswalk_len_m + 1.5)
    for lane, cx in enumerate(centers):
        facing = "front" if lane < oncoming else "rear"
        z = rng.uniform(4.0, 14.0) if abs(cx) > 1.0 else rng.uniform(8.0, 18.0)
        while z < MAX_Z_M * 0.8:
            if rng.random() > 0.55:
                z += rng.uniform(8.0, 20.0)
                continue
            roll = rng.random()
            kind = "truck" if roll < rates.truck else "bus" if roll < rates.truck + rates.bus else "car"
            obj, length = _vehicle(rng, kind, cx + rng.uniform(-0.3, 0.3), z, facing)
            if blocked is not None and z < blocked[1] and z + length > blocked[0]:
                z = blocked[1] + 0.5
                continue
            objects.append(obj)
            z += length + rng.uniform(3.0, 18.0)
    return objects


def _person(rng: np.random.Generator, x: float, z: float, crossing: bool) -> SceneObject:
    height = rng.uniform(1.55, 1.9)
    s = height / 1.75
    stride = rng.uniform(0.05, 0.18) * s if crossing or rng.random() < 0.5 else 0.0
    P = ID["person"]
    parts = (
        flat("legs", P, x - 0.17 * s - stride, x - 0.02 * s - stride, 0.0, 0.5 * height, z),
        flat("legs", P, x + 0.02 * s + stride, x + 0.17 * s + stride, 0.0, 0.5 * height, z),
        flat("torso", P, x - 0.21 * s, x + 0.21 * s, 0.47 * height, 0.83 * height, z - 0.01),
        flat("torso", P, x - 0.29 * s, x - 0.21 * s, 0.5 * height, 0.8 * height, z - 0.02),
        flat("torso", P, x + 0.21 * s, x + 0.29 * s, 0.5 * height, 0.8 * height, z - 0.02),
        flat("head", P, x - 0.11 * s, x + 0.11 * s, 0.82 * height, height, z - 0.01, shape="ellipse"),
    )
    attrs = {"crossing": crossing, "skin": int(rng.integers(0, 4)), "trousers": int(rng.integers(0, 5))}
    paint, shade = int(rng.integers(0, 8)), rng.uniform(0.85, 1.15)
    return SceneObject("person", parts, paint=paint, shade=shade, attrs=attrs)


def _sample_persons(rng: np.random.Generator, street: Street, rates: StyleRates) -> list[SceneObject]:
    objects = []
    for side, edge, line in _sides(street):
        for _ in range(int(rng.poisson(1.8))):
            x = edge + side * rng.uniform(0.5, max(0.6, abs(line - edge) - 0.4))
            objects.append(_person(rng, x, rng.uniform(4.0, 45.0), crossing=False))
    if street.crosswalk_z_m is not None:
        for _ in range(int(rng.integers(1, 5))):
            x = rng.uniform(street.road_left_m + 0.5, street.road_right_m - 0.5)
            z = street.crosswalk_z_m + rng.uniform(0.3, street.crosswalk_len_m - 0.3)
            objects.append(_person(rng, x, z, crossing=True))
    return objects
