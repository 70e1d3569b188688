"""The two looks of the toy simulator: the background (sky, road, sidewalk) and the finishing pass.

``sim`` stays flat and clean. ``real`` adds what a camera and the world add: noise-modulated surface
texture (strongest on vegetation and asphalt), a lighting gradient, a slight blur, vignetting and
sensor noise (the JPEG encoding happens at export). Both only recolour pixels; geometry and labels
are untouched.
"""

from __future__ import annotations

import numpy as np

from sim2real.storage.sources.toysim_materials import Palette, color
from sim2real.storage.sources.toysim_raster import Ground
from sim2real.storage.sources.toysim_scene import Scene
from sim2real.storage.taxonomy import TRAIN_ID_BY_NAME

CURB_M = 0.25  # width of the curb band on the sidewalk next to the road
DETAIL_WIDTH = 256  # frame width at which grain and blur have full strength
DUSK_LIGHT = np.array([0.62, 0.55, 0.6], dtype=np.float32)  # daylight left at dusk, per channel


def _class_lut(values: dict[str, float], default: float) -> np.ndarray:
    lut = np.full(256, default, dtype=np.float32)
    for name, value in values.items():
        lut[TRAIN_ID_BY_NAME[name]] = value
    return lut


# How strongly each class's surface is modulated by coarse (blotches) and fine (grain) noise.
COARSE_TEXTURE = _class_lut({"road": 0.10, "sidewalk": 0.08, "building": 0.09, "vegetation": 0.22,
                             "sky": 0.03}, 0.04)
FINE_TEXTURE = _class_lut({"road": 0.07, "sidewalk": 0.06, "building": 0.04, "vegetation": 0.28,
                           "sky": 0.0}, 0.03)


def background(scene: Scene, ground: Ground, marks: np.ndarray, pal: Palette) -> np.ndarray:
    """H×W×3 colours of the sky (a vertical gradient), road, curb, sidewalk and road paint."""
    cam, street = scene.camera, scene.street
    sky_key = "dusk" if scene.time_of_day == "dusk" else scene.weather
    top, horizon = color(pal, f"sky_{sky_key}"), color(pal, f"sky_horizon_{sky_key}")
    rows = np.arange(cam.height, dtype=np.float32) + 0.5
    t = np.clip(rows / max(cam.horizon, 1.0), 0.0, 1.0)[:, None, None]
    rgb = np.broadcast_to(top * (1 - t) + horizon * t, (cam.height, cam.width, 3)).copy()
    x = ground.x_m
    curb = ground.is_ground & ~ground.is_road & (
        ((x < street.road_left_m) & (x > street.road_left_m - CURB_M))
        | ((x >= street.road_right_m) & (x < street.road_right_m + CURB_M)))
    rgb[ground.is_ground] = color(pal, "sidewalk")
    rgb[curb] = color(pal, "curb")
    rgb[ground.is_road] = color(pal, "road")
    rgb[marks > 0] = color(pal, "paint")
    return rgb


def _value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise (unit variance-ish): a random grid every ``cell`` pixels, bilinearly interpolated."""
    gh, gw = int(height / cell) + 2, int(width / cell) + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    ry = (np.arange(height, dtype=np.float32) + 0.5) / cell
    rx = (np.arange(width, dtype=np.float32) + 0.5) / cell
    y0, x0 = ry.astype(np.int64), rx.astype(np.int64)
    fy, fx = (ry - y0)[:, None], (rx - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _blur3(rgb: np.ndarray, side: float) -> np.ndarray:
    """A separable [side, 1 - 2 side, side] blur with edge replication (side 0.25 = binomial)."""
    p = np.pad(rgb, ((1, 1), (0, 0), (0, 0)), mode="edge")
    rgb = side * (p[:-2] + p[2:]) + (1 - 2 * side) * p[1:-1]
    p = np.pad(rgb, ((0, 0), (1, 1), (0, 0)), mode="edge")
    return side * (p[:, :-2] + p[:, 2:]) + (1 - 2 * side) * p[:, 1:-1]


def _apply_daylight(scene: Scene, lit: np.ndarray, emitted: np.ndarray, emissive: np.ndarray) -> np.ndarray:
    """Dim ``lit`` for the time of day; lit lamps (``emissive``) keep their own colour from ``emitted``."""
    if scene.time_of_day == "dusk":
        lit = lit * DUSK_LIGHT
    if emissive.any():
        lit[emissive] = emitted[emissive]
    return lit


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(rgb * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


def finish_sim(scene: Scene, rgb: np.ndarray, emissive: np.ndarray) -> np.ndarray:
    """The clean game look: flat colours, only the time of day applied; uint8 H×W×3."""
    return _to_uint8(_apply_daylight(scene, rgb.copy(), rgb, emissive))


def finish_real(scene: Scene, rgb: np.ndarray, seg: np.ndarray, emissive: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """The camera look: texture, lighting gradient, blur, vignetting, sensor noise; uint8 H×W×3."""
    height, width = seg.shape
    detail = min(1.0, width / DETAIL_WIDTH)  # pixel-scale effects fade out in small frames
    coarse = _value_noise(rng, height, width, max(2.0, width / 24))
    coarse += 0.5 * detail * _value_noise(rng, height, width, 2.0)
    fine = detail * rng.standard_normal((height, width), dtype=np.float32)
    xn = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    yn = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    strength = 0.35 if scene.weather == "clear" else 0.12
    light = (1.0 + strength * scene.sun_side * xn)[None, :] * (1.0 - 0.1 * yn)[:, None]
    vignette = 1.0 - 0.7 * (xn[None, :] ** 2 + yn[:, None] ** 2)
    gain = (1.0 + COARSE_TEXTURE[seg] * coarse + FINE_TEXTURE[seg] * fine) * light * vignette
    lit = rgb * gain[..., None]
    veg = seg == TRAIN_ID_BY_NAME["vegetation"]
    lit[veg, 1] += 0.08 * fine[veg] * rgb[veg, 1]  # leaves vary in hue as well as in brightness
    lit = _apply_daylight(scene, lit, rgb * vignette[..., None], emissive)
    if scene.weather == "overcast":  # flat light: less contrast
        lit = 0.85 * lit + 0.15 * lit.mean(axis=(0, 1), keepdims=True)
    lit = _blur3(lit, 0.25 * detail)
    lit += 0.012 * rng.standard_normal(lit.shape, dtype=np.float32) + 0.01 * fine[..., None]
    return _to_uint8(lit)
