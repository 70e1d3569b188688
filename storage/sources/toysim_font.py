"""A 3×5 bitmap font for the digits on the toy simulator's speed-limit signs.

Small on purpose: sign digits are the fine detail a translator must keep legible, and a tiny font
makes them a handful of pixels wide at demo resolution.
"""

from __future__ import annotations

import numpy as np

GLYPH_ROWS = 5
GLYPH_COLS = 3

_DIGIT_ROWS: dict[str, tuple[str, ...]] = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
}

DIGITS: dict[str, np.ndarray] = {
    char: np.array([[c == "#" for c in row] for row in rows], dtype=bool)
    for char, rows in _DIGIT_ROWS.items()
}


def text_bitmap(text: str) -> np.ndarray:
    """The bitmap of a digit string: 5 rows, 3 columns per glyph and one blank column between glyphs."""
    if not text or any(ch not in DIGITS for ch in text):
        raise ValueError(f"text {text!r}: the toy font only draws the digits 0-9")
    width = len(text) * (GLYPH_COLS + 1) - 1
    bitmap = np.zeros((GLYPH_ROWS, width), dtype=bool)
    for i, ch in enumerate(text):
        start = i * (GLYPH_COLS + 1)
        bitmap[:, start:start + GLYPH_COLS] = DIGITS[ch]
    return bitmap


def sample_bitmap(bitmap: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Look ``bitmap`` up at normalised coordinates ``s`` (across, 0..1) and ``t`` (down, 0..1).

    Points outside the unit square are False. ``s`` and ``t`` broadcast against each other.
    """
    rows, cols = bitmap.shape
    inside = (s >= 0) & (s < 1) & (t >= 0) & (t < 1)
    col = np.clip((s * cols).astype(np.int64), 0, cols - 1)
    row = np.clip((t * rows).astype(np.int64), 0, rows - 1)
    return inside & bitmap[row, col]
