"""Materials and palettes of the toy simulator: how each part's surface is coloured, per style.

A material maps a fragment's surface coordinates (metres) to colours: windows on facades, wheels and
lights on vehicles, the lit lamp of a traffic light, the ring and digits of a speed-limit sign. The
two styles share every material and differ only in their palette (saturated vs dull colours); the
``real`` look's texture, light and sensor effects are added afterwards (see ``toysim_style``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim2real.storage.sources.toysim_font import sample_bitmap, text_bitmap
from sim2real.storage.sources.toysim_raster import Fragment
from sim2real.storage.sources.toysim_scene import Part, SceneObject

Palette = dict[str, np.ndarray]
Material = Callable[[Palette, SceneObject, Part, Fragment], np.ndarray]
SIDE_SHADE = 0.78  # side faces get less light than faces turned to the camera

_SIM: dict[str, list[tuple[int, int, int]]] = {
    "sky_clear": [(80, 170, 255)], "sky_overcast": [(175, 185, 205)], "sky_dusk": [(255, 140, 90)],
    "sky_horizon_clear": [(80, 170, 255)], "sky_horizon_overcast": [(175, 185, 205)],
    "sky_horizon_dusk": [(255, 140, 90)],
    "road": [(70, 70, 90)], "sidewalk": [(215, 190, 150)], "curb": [(235, 235, 235)],
    "paint": [(255, 255, 255)],
    "facade": [(230, 120, 70), (245, 205, 110), (140, 175, 235), (210, 80, 90), (235, 235, 215),
               (160, 110, 200)],
    "window": [(40, 90, 200)], "window_lit": [(255, 230, 120)], "shop": [(60, 200, 230)],
    "cornice": [(90, 60, 60)],
    "foliage": [(40, 200, 60), (90, 220, 40), (20, 170, 90)], "trunk": [(130, 75, 25)],
    "pole": [(170, 170, 190)], "housing": [(25, 25, 30)],
    "lamp_red": [(255, 30, 30)], "lamp_yellow": [(255, 215, 0)], "lamp_green": [(30, 255, 90)],
    "sign_ring": [(235, 0, 0)], "sign_face": [(255, 255, 255)], "sign_digit": [(0, 0, 0)],
    "car": [(230, 20, 30), (20, 70, 230), (250, 220, 20), (245, 245, 245), (25, 25, 25), (20, 190, 60),
            (250, 130, 0), (0, 200, 220)],
    "cargo": [(245, 245, 245), (230, 40, 40), (40, 90, 230), (250, 200, 0)],
    "cab": [(230, 30, 30), (30, 80, 220), (245, 245, 245), (250, 170, 0)],
    "bus": [(250, 200, 0), (220, 30, 40), (30, 110, 230), (240, 240, 240)],
    "accent": [(20, 20, 20)], "glass": [(30, 60, 110)], "trim": [(35, 35, 40)], "tyre": [(15, 15, 15)],
    "taillight": [(255, 0, 0)], "headlight": [(255, 255, 200)], "plate": [(250, 250, 250)],
    "destination": [(255, 150, 0)],
    "skin": [(255, 210, 170), (225, 170, 120), (170, 110, 70), (110, 70, 40)], "hair": [(40, 25, 10)],
    "shirt": [(255, 40, 40), (40, 120, 255), (40, 220, 70), (255, 220, 30), (250, 250, 250), (30, 30, 30),
              (255, 120, 200), (255, 140, 0)],
    "trousers": [(30, 40, 140), (20, 20, 20), (110, 80, 50), (90, 90, 100), (200, 190, 150)],
}

_REAL_OVERRIDES: dict[str, list[tuple[int, int, int]]] = {
    "sky_clear": [(120, 160, 205)], "sky_overcast": [(168, 172, 178)], "sky_dusk": [(200, 150, 130)],
    "sky_horizon_clear": [(195, 210, 225)], "sky_horizon_overcast": [(205, 205, 205)],
    "sky_horizon_dusk": [(235, 190, 150)],
    "road": [(100, 99, 97)], "sidewalk": [(150, 146, 140)], "curb": [(175, 172, 168)],
    "paint": [(205, 205, 195)],
    "facade": [(150, 115, 95), (175, 165, 145), (125, 128, 135), (140, 100, 90), (190, 185, 172),
               (115, 105, 110)],
    "window": [(55, 62, 72)], "window_lit": [(210, 190, 130)], "shop": [(80, 95, 100)],
    "cornice": [(90, 85, 80)],
    "foliage": [(70, 95, 45), (90, 105, 50), (55, 80, 50)], "trunk": [(80, 66, 52)],
    "pole": [(112, 112, 110)], "housing": [(42, 44, 42)],
    "lamp_red": [(255, 60, 40)], "lamp_yellow": [(255, 200, 40)], "lamp_green": [(60, 240, 140)],
    "sign_ring": [(185, 40, 40)], "sign_face": [(225, 225, 218)], "sign_digit": [(30, 30, 30)],
    "car": [(140, 40, 40), (50, 65, 110), (180, 165, 90), (200, 200, 198), (35, 35, 38), (70, 95, 75),
            (150, 110, 70), (110, 115, 120)],
    "cargo": [(200, 200, 195), (150, 60, 55), (70, 80, 120), (185, 160, 80)],
    "cab": [(150, 55, 50), (60, 75, 125), (195, 195, 190), (180, 130, 60)],
    "bus": [(195, 165, 70), (150, 55, 55), (70, 95, 140), (200, 200, 195)],
    "accent": [(45, 45, 45)], "glass": [(45, 55, 65)], "trim": [(45, 45, 47)], "tyre": [(25, 25, 25)],
    "taillight": [(190, 30, 30)], "headlight": [(235, 235, 215)], "plate": [(215, 215, 205)],
    "destination": [(230, 140, 40)],
    "skin": [(215, 180, 150), (190, 150, 115), (145, 105, 80), (100, 75, 55)], "hair": [(45, 35, 28)],
    "shirt": [(160, 60, 55), (60, 85, 130), (70, 110, 75), (180, 160, 90), (205, 205, 200), (40, 40, 42),
              (170, 120, 140), (170, 110, 60)],
    "trousers": [(45, 50, 85), (35, 35, 37), (95, 80, 62), (85, 85, 90), (165, 155, 130)],
}


def palette(style: str) -> Palette:
    """The colour tables (float RGB in 0..1, one row per variant) of ``style``."""
    if style not in ("sim", "real"):
        raise ValueError(f"unknown toysim style {style!r}; known: ['real', 'sim']")
    table = dict(_SIM)
    if style == "real":
        table.update(_REAL_OVERRIDES)
    return {name: np.asarray(rows, dtype=np.float32) / 255.0 for name, rows in table.items()}


def color(pal: Palette, name: str, index: int = 0) -> np.ndarray:
    """Variant ``index`` (wrapping) of the colour ``name``."""
    rows = pal[name]
    return rows[index % len(rows)]


def layered(shape: tuple[int, int], base: np.ndarray,
            layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """An h×w×3 image of ``base`` with each ``(mask, colour)`` painted on top in order."""
    out = np.empty(shape + (3,), dtype=np.float32)
    out[:] = base
    for mask, rgb in layers:
        out[np.broadcast_to(mask, shape)] = rgb
    return out


def _disc(u: np.ndarray, v: np.ndarray, cu: float, cv: float, r: float) -> np.ndarray:
    return (u - cu) ** 2 + (v - cv) ** 2 < r * r


def facade(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
    """A wall with a grid of windows, an optional shop floor and a dark cornice at the top."""
    a, height = obj.attrs, part.h1 - part.h0
    spacing, floor_m = a["window_spacing_m"], a["floor_m"]
    fu = (frag.u / spacing) % 1.0
    fv = (frag.v / floor_m) % 1.0
    col_on = np.abs(fu - 0.5) < a["window_frac"] / 2
    in_upper = (frag.v > floor_m) & (frag.v < height - 0.9)
    windows = col_on & (fv > 0.3) & (fv < 0.8) & in_upper
    cell = np.floor(frag.u / spacing) * 7 + np.floor(frag.v / floor_m) * 13 + obj.paint
    lit = windows & ((cell % 5) == 0)
    layers = [(windows, color(pal, "window")), (lit, color(pal, "window_lit")),
              (frag.v > height - 0.4, color(pal, "cornice"))]
    if a["shop"]:
        shop = (frag.v > 0.3) & (frag.v < floor_m * 0.8) & (np.abs(fu - 0.5) < 0.4)
        layers.append((shop, color(pal, "shop")))
    return layered(frag.mask.shape, color(pal, "facade", obj.paint) * obj.shade, layers)


def car(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
    """A car body: glass above the waist, lights and plate at the end, wheels on the side."""
    u, v = frag.u, frag.v
    width, height, length = part.x1 - part.x0, part.h1 - part.h0, part.z1 - part.z0
    if frag.face == "side":
        glass = (v > 0.85) & (v < height - 0.1) & (u > 0.9) & (u < length - 0.8)
        glass &= np.abs(u - length / 2) > 0.08  # the B pillar
        wheels = _disc(u, v, 0.8, 0.32, 0.32) | _disc(u, v, length - 0.8, 0.32, 0.32)
        layers = [(glass, color(pal, "glass")), (wheels, color(pal, "tyre"))]
    else:
        corner = (u < 0.35) | (u > width - 0.35)
        light = color(pal, "headlight" if obj.attrs["facing"] == "front" else "taillight")
        layers = [(v < 0.3, color(pal, "trim")), (corner & (v < 0.25), color(pal, "tyre")),
                  ((v > 0.5) & (v < 0.68) & corner, light),
                  ((v > 0.32) & (v < 0.48) & (np.abs(u - width / 2) < 0.25), color(pal, "plate")),
                  ((v > 0.82) & (v < height - 0.08) & (u > 0.12) & (u < width - 0.12), color(pal, "glass"))]
    return layered(frag.mask.shape, color(pal, "car", obj.paint) * obj.shade, layers)


def bus(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
    """A bus: a band of windows with pillars on the side, a windscreen and destination sign in front."""
    u, v = frag.u, frag.v
    width, height, length = part.x1 - part.x0, part.h1 - part.h0, part.z1 - part.z0
    if frag.face == "side":
        band = (v > 1.25) & (v < height - 0.45) & ((u / 1.3) % 1.0 > 0.12)
        wheels = _disc(u, v, 2.2, 0.45, 0.48) | _disc(u, v, length - 2.8, 0.45, 0.48)
        layers = [((v > 0.9) & (v < 1.05), color(pal, "accent")), (band, color(pal, "glass")),
                  (wheels, color(pal, "tyre"))]
    else:
        front = obj.attrs["facing"] == "front"
        inner = (u > 0.15) & (u < width - 0.15)
        corner = (u < 0.4) | (u > width - 0.4)
        layers = [(inner & (v > (1.0 if front else 1.6)) & (v < height - 0.45), color(pal, "glass")),
                  ((v > 0.45) & (v < 0.65) & corner, color(pal, "headlight" if front else "taillight")),
                  ((v < 0.25) & corner, color(pal, "tyre"))]
        if front:
            layers.append((inner & (v > height - 0.4) & (v < height - 0.12), color(pal, "destination")))
    return layered(frag.mask.shape, color(pal, "bus", obj.paint) * obj.shade, layers)


def truck_cargo(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
    """The cargo box: a stripe along the side, door seams and a bumper bar at the back."""
    u, v = frag.u, frag.v
    width = part.x1 - part.x0
    if frag.face == "side":
        layers = [((v > 0.25) & (v < 0.45), color(pal, "accent"))]
    else:
        layers = [(np.abs(u - width / 2) < 0.04, color(pal, "trim")), (v < 0.2, color(pal, "trim")),
                  ((v > 0.2) & (v < 0.4) & ((u < 0.3) | (u > width - 0.3)), color(pal, "taillight"))]
    return layered(frag.mask.shape, color(pal, "cargo", obj.paint) * obj.shade, layers)


def truck_cab(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
    """The cab: windscreen, grille and headlights in front, a door window on the side."""
    u, v = frag.u, frag.v
    width = part.x1 - part.x0
    front = obj.attrs["facing"] == "front"
    if frag.face == "side":
        lo, hi = (0.3, 1.3) if front else (0.9, 1.9)
        layers = [((v > 1.6) & (v < 2.5) & (u > lo) & (u < hi), color(pal, "glass")),
                  (_disc(u, v, 1.1, 0.5, 0.5), color(pal, "tyre"))]
    else:
        corner = (u < 0.35) | (u > width - 0.35)
        layers = [((v > 1.6) & (v < 2.6) & (u > 0.15) & (u < width - 0.15), color(pal, "glass")),
                  ((v > 0.6) & (v < 1.3) & (np.abs(u - width / 2) < width / 3), color(pal, "trim")),
                  ((v > 0.7) & (v < 0.9) & corner, color(pal, "headlight"))]
    return layered(frag.mask.shape, color(pal, "cab", obj.paint) * obj.shade, layers)


def _flat(name: str, paint_key: str | None = None) -> Material:
    """A material of one colour: ``name``'s variant chosen by ``obj.paint`` or by ``obj.attrs[paint_key]``."""

    def material(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
        index = obj.paint if paint_key is None else int(obj.attrs[paint_key])
        return np.broadcast_to(color(pal, name, index), frag.mask.shape + (3,))

    return material


def foliage(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
    """Leaves: the object's shade of green."""
    return np.broadcast_to(color(pal, "foliage", obj.paint) * obj.shade, frag.mask.shape + (3,))


def head(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
    """Skin, with hair on the top of the head."""
    hair = frag.v > 0.62 * (part.h1 - part.h0)
    return layered(frag.mask.shape, color(pal, "skin", int(obj.attrs["skin"])), [(hair, color(pal, "hair"))])


def torso(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
    """A shirt in the person's colour."""
    return np.broadcast_to(color(pal, "shirt", obj.paint) * obj.shade, frag.mask.shape + (3,))


def lamp(lamp_color: str) -> Material:
    """One lamp of a traffic light: bright when it is the light's colour, dim otherwise."""

    def material(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
        rgb = color(pal, f"lamp_{lamp_color}")
        if obj.attrs["color"] != lamp_color:
            rgb = 0.2 * rgb + 0.8 * color(pal, "housing")
        return np.broadcast_to(rgb, frag.mask.shape + (3,))

    return material


def sign_layout(u: np.ndarray, v: np.ndarray, part: Part, speed_limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the red ring and of the digits on a round sign, from surface coordinates."""
    s = u / (part.x1 - part.x0)  # 0..1 left to right
    t = 1.0 - v / (part.h1 - part.h0)  # 0..1 top to bottom
    radius = 2.0 * np.sqrt((s - 0.5) ** 2 + (t - 0.5) ** 2)
    bitmap = text_bitmap(str(speed_limit))
    box_w = 0.55
    box_h = box_w * bitmap.shape[0] / bitmap.shape[1]
    digits = sample_bitmap(bitmap, (s - 0.5) / box_w + 0.5, (t - 0.5) / box_h + 0.5)
    return radius > 0.8, digits


def sign_speed(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
    """A round speed-limit sign: red ring, white face, black digits."""
    ring, digits = sign_layout(frag.u, frag.v, part, int(obj.attrs["speed_limit"]))
    return layered(frag.mask.shape, color(pal, "sign_face"),
                   [(ring, color(pal, "sign_ring")), (digits, color(pal, "sign_digit"))])


MATERIALS: dict[str, Material] = {
    "facade": facade, "car": car, "bus": bus, "truck_cargo": truck_cargo, "truck_cab": truck_cab,
    "truck_chassis": _flat("trim"), "foliage": foliage, "trunk": _flat("trunk"), "pole": _flat("pole"),
    "light_housing": _flat("housing"), "lamp_red": lamp("red"), "lamp_yellow": lamp("yellow"),
    "lamp_green": lamp("green"), "sign_speed": sign_speed, "head": head, "torso": torso,
    "legs": _flat("trousers", "trousers"),
}


def is_lit_lamp(obj: SceneObject, part: Part) -> bool:
    """Whether ``part`` is the lit lamp of a traffic light."""
    return obj.kind == "traffic_light" and part.material == f"lamp_{obj.attrs.get('color')}"


def shade_part(pal: Palette, obj: SceneObject, part: Part, frag: Fragment) -> np.ndarray:
    """The colours of a fragment: its material, darkened on side faces."""
    try:
        material = MATERIALS[part.material]
    except KeyError:
        raise ValueError(f"toysim part of {obj.kind!r}: unknown material {part.material!r}") from None
    rgb = material(pal, obj, part, frag)
    return rgb * SIDE_SHADE if frag.face == "side" else rgb
