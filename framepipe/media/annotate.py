"""Draw detection boxes and labels on RGB frames (numpy only, no OpenCV)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from framepipe.pipeline.messages import Detection

BOX_COLOUR = np.array([40, 230, 60], dtype=np.uint8)
TEXT_COLOUR = np.array([10, 10, 10], dtype=np.uint8)

# 3×5 bitmap glyphs: enough for labels like "face 0.94".
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001010010", "8": "111101111101111",
    "9": "111101111001111", ".": "000000000000010", " ": "000000000000000",
    "f": "011100110100100", "a": "000011101101011", "c": "000111100100111",
    "e": "111101111100111", "p": "111101111100100", "r": "000110101100100",
    "s": "011100010001110", "o": "000111101101111", "n": "000110101101101",
    "?": "111001011000010",
}  # fmt: skip


def _glyph(char: str) -> npt.NDArray[np.bool_]:
    bits = _GLYPHS.get(char, _GLYPHS["?"])
    return np.array([b == "1" for b in bits], dtype=bool).reshape(5, 3)


def draw_text(image: npt.NDArray[np.uint8], x: int, y: int, text: str, scale: int) -> None:
    """Stamp ``text`` on a coloured plate with its top-left corner at (x, y)."""
    height, width = image.shape[:2]
    plate_w = (len(text) * 4 + 1) * scale
    plate_h = 7 * scale
    x = max(0, min(x, width - plate_w))
    y = max(0, min(y, height - plate_h))
    image[y : y + plate_h, x : x + plate_w] = BOX_COLOUR
    for i, char in enumerate(text.lower()):
        mask = np.kron(_glyph(char), np.ones((scale, scale), dtype=bool))
        gx, gy = x + (1 + 4 * i) * scale, y + scale
        region = image[gy : gy + mask.shape[0], gx : gx + mask.shape[1]]
        region[mask[: region.shape[0], : region.shape[1]]] = TEXT_COLOUR


def draw_detections(image: npt.NDArray[np.uint8], detections: Iterable[Detection]) -> None:
    """Outline each box and label it ``<label> <score>``, in place."""
    height, width = image.shape[:2]
    thickness = max(2, height // 240)
    scale = max(1, height // 240)
    for det in detections:
        x1, y1, x2, y2 = (round(v) for v in det.box)
        x1, x2 = sorted((max(0, min(x1, width - 1)), max(0, min(x2, width - 1))))
        y1, y2 = sorted((max(0, min(y1, height - 1)), max(0, min(y2, height - 1))))
        image[y1 : y1 + thickness, x1 : x2 + 1] = BOX_COLOUR
        image[max(y1, y2 - thickness + 1) : y2 + 1, x1 : x2 + 1] = BOX_COLOUR
        image[y1 : y2 + 1, x1 : x1 + thickness] = BOX_COLOUR
        image[y1 : y2 + 1, max(x1, x2 - thickness + 1) : x2 + 1] = BOX_COLOUR
        draw_text(image, x1, y1 - 7 * scale, f"{det.label} {det.score:.2f}", scale)
