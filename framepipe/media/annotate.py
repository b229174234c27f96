"""Draw detection boxes and labels on frames (numpy only, no OpenCV).

The same drawing goes onto an RGB array (:func:`draw_detections`) or straight onto
the planes of a decoded YUV 4:2:0 frame (:func:`draw_detections_yuv420`). The
encoder uses the latter: converting a 720p frame to RGB and back costs more than
libx264's own encode of it, while painting a few rectangles into the planes costs
microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import av
import numpy as np
import numpy.typing as npt

from framepipe.core.messages import Detection

BOX_COLOUR = np.array([40, 230, 60], dtype=np.uint8)
TEXT_COLOUR = np.array([10, 10, 10], dtype=np.uint8)
#: pixel formats :func:`draw_detections_yuv420` paints in place (8-bit, chroma halved both ways).
YUV420_FORMATS = frozenset({"yuv420p", "yuvj420p"})

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
# The rest of the alphabet and '_', '-': names from the face gallery are drawn too.
_GLYPHS.update({
    "b": "100100111101111", "d": "001001111101111", "g": "111101111001111",
    "h": "100100111101101", "i": "010000010010010", "j": "001000001101111",
    "k": "101101110101101", "l": "010010010010011", "m": "000111111101101",
    "q": "111101111001001", "t": "010111010010011", "u": "000101101101111",
    "v": "000101101101010", "w": "000101101111111", "x": "000101010101101",
    "y": "101101111001111", "z": "000111011100111", "_": "000000000000111",
    "-": "000000111000000",
})  # fmt: skip


def _glyph(char: str) -> npt.NDArray[np.bool_]:
    bits = _GLYPHS.get(char, _GLYPHS["?"])
    return np.array([b == "1" for b in bits], dtype=bool).reshape(5, 3)


class Painter(Protocol):
    """Where the drawing lands: rectangles and stamped masks in an RGB colour."""

    width: int
    height: int

    def fill(self, x0: int, y0: int, x1: int, y1: int, colour: npt.NDArray[np.uint8]) -> None:
        """Paint [x0, x1) × [y0, y1)."""

    def stamp(self, x: int, y: int, mask: npt.NDArray[np.bool_], colour: npt.NDArray[np.uint8]) -> None:
        """Paint the true pixels of ``mask`` with its top-left corner at (x, y)."""


class RgbPainter:
    def __init__(self, image: npt.NDArray[np.uint8]) -> None:
        self.image = image
        self.height, self.width = image.shape[:2]

    def fill(self, x0: int, y0: int, x1: int, y1: int, colour: npt.NDArray[np.uint8]) -> None:
        self.image[y0:y1, x0:x1] = colour

    def stamp(self, x: int, y: int, mask: npt.NDArray[np.bool_], colour: npt.NDArray[np.uint8]) -> None:
        region = self.image[y : y + mask.shape[0], x : x + mask.shape[1]]
        region[mask[: region.shape[0], : region.shape[1]]] = colour


def rgb_to_yuv(colour: npt.NDArray[np.uint8], full_range: bool = False) -> tuple[int, int, int]:
    """BT.601 Y, Cb, Cr of an RGB colour (limited range unless ``full_range``: yuvj)."""
    r, g, b = (float(c) for c in colour)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 + (b - y) * 0.564
    cr = 128 + (r - y) * 0.713
    if not full_range:
        y = 16 + y * 219 / 255
        cb = 128 + (cb - 128) * 224 / 255
        cr = 128 + (cr - 128) * 224 / 255
    luma, blue, red = (round(min(max(v, 0.0), 255.0)) for v in (y, cb, cr))
    return luma, blue, red


def _plane_array(plane: av.video.plane.VideoPlane) -> npt.NDArray[np.uint8]:
    """A writable (height, width) view of a plane, without its row padding."""
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


class Yuv420Painter:
    """Paints the Y plane at full resolution and Cb/Cr at half, in place."""

    def __init__(self, frame: av.VideoFrame) -> None:
        if frame.format.name not in YUV420_FORMATS:
            raise ValueError(f"cannot paint {frame.format.name} frames in place")
        self.width, self.height = frame.width, frame.height
        self.full_range = frame.format.name == "yuvj420p"
        self.planes = [_plane_array(plane) for plane in frame.planes]

    def _yuv(self, colour: npt.NDArray[np.uint8]) -> tuple[int, int, int]:
        return rgb_to_yuv(colour, self.full_range)

    def fill(self, x0: int, y0: int, x1: int, y1: int, colour: npt.NDArray[np.uint8]) -> None:
        luma, cb, cr = self._yuv(colour)
        self.planes[0][y0:y1, x0:x1] = luma
        cy0, cy1, cx0, cx1 = y0 // 2, (y1 + 1) // 2, x0 // 2, (x1 + 1) // 2
        self.planes[1][cy0:cy1, cx0:cx1] = cb
        self.planes[2][cy0:cy1, cx0:cx1] = cr

    def stamp(self, x: int, y: int, mask: npt.NDArray[np.bool_], colour: npt.NDArray[np.uint8]) -> None:
        luma, cb, cr = self._yuv(colour)
        region = self.planes[0][y : y + mask.shape[0], x : x + mask.shape[1]]
        region[mask[: region.shape[0], : region.shape[1]]] = luma
        # A chroma sample is the glyph's colour when any of its 2×2 luma pixels is.
        full = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=bool)
        full[y % 2 : y % 2 + mask.shape[0], x % 2 : x % 2 + mask.shape[1]] = mask
        rows, cols = full.shape[0] // 2, full.shape[1] // 2
        half = np.asarray(full[: rows * 2, : cols * 2].reshape(rows, 2, cols, 2).any(axis=(1, 3)))
        for plane, value in ((self.planes[1], cb), (self.planes[2], cr)):
            chroma = plane[y // 2 : y // 2 + rows, x // 2 : x // 2 + cols]
            chroma[half[: chroma.shape[0], : chroma.shape[1]]] = value


def draw_text(painter: Painter, x: int, y: int, text: str, scale: int) -> None:
    """Stamp ``text`` on a coloured plate with its top-left corner at (x, y)."""
    plate_w = (len(text) * 4 + 1) * scale
    plate_h = 7 * scale
    x = max(0, min(x, painter.width - plate_w))
    y = max(0, min(y, painter.height - plate_h))
    painter.fill(x, y, x + plate_w, y + plate_h, BOX_COLOUR)
    for i, char in enumerate(text.lower()):
        mask = np.kron(_glyph(char), np.ones((scale, scale), dtype=bool))
        painter.stamp(x + (1 + 4 * i) * scale, y + scale, mask, TEXT_COLOUR)


def paint_detections(painter: Painter, detections: Iterable[Detection]) -> None:
    """Outline each box and label it ``<label> <score>``."""
    width, height = painter.width, painter.height
    thickness = max(2, height // 240)
    scale = max(1, height // 240)
    for det in detections:
        x1, y1, x2, y2 = (round(v) for v in det.box)
        x1, x2 = sorted((max(0, min(x1, width - 1)), max(0, min(x2, width - 1))))
        y1, y2 = sorted((max(0, min(y1, height - 1)), max(0, min(y2, height - 1))))
        painter.fill(x1, y1, x2 + 1, y1 + thickness, BOX_COLOUR)
        painter.fill(x1, max(y1, y2 - thickness + 1), x2 + 1, y2 + 1, BOX_COLOUR)
        painter.fill(x1, y1, x1 + thickness, y2 + 1, BOX_COLOUR)
        painter.fill(max(x1, x2 - thickness + 1), y1, x2 + 1, y2 + 1, BOX_COLOUR)
        # An analysed face shows who it is (or "unknown"); otherwise the label and score.
        text = det.identity or f"{det.label} {det.score:.2f}"
        draw_text(painter, x1, y1 - 7 * scale, text, scale)
        # Its attribute readings, one plate under the box: "mask worn  fever 37.9".
        if det.attributes:
            draw_text(painter, x1, y2 + 1, attribute_caption(det), scale)


def attribute_caption(det: Detection) -> str:
    """``mask worn fever 37.9``: each reading's name and value (numbers to one decimal)."""
    parts = [
        f"{a.name} {a.value:.1f}" if isinstance(a.value, float) else f"{a.name} {a.value}"
        for a in det.attributes
    ]
    return "  ".join(parts)


def draw_detections(image: npt.NDArray[np.uint8], detections: Iterable[Detection]) -> None:
    """Draw on an RGB (height, width, 3) array, in place."""
    paint_detections(RgbPainter(image), detections)


def draw_detections_yuv420(frame: av.VideoFrame, detections: Iterable[Detection]) -> av.VideoFrame:
    """Draw on a decoded frame's own planes and return it.

    Frames that are not 8-bit 4:2:0 go through RGB (a new frame with the same pts). A
    frame whose buffers the decoder still shares is copied first (``make_writable``).
    """
    if frame.format.name not in YUV420_FORMATS:
        image: npt.NDArray[np.uint8] = frame.to_ndarray(format="rgb24")  # type: ignore[assignment]
        draw_detections(image, detections)
        drawn = av.VideoFrame.from_ndarray(image, format="rgb24")
        drawn.pts = frame.pts
        if frame.time_base is not None:
            drawn.time_base = frame.time_base
        return drawn
    frame.make_writable()
    paint_detections(Yuv420Painter(frame), detections)
    return frame
