"""Masks drawn onto real face photos from dlib's 5 landmarks: the mask baseline's training data.

No pretrained mask model ships in a package, and no masked-face photo set does, so the
baseline (:mod:`.mask_baseline`) learns from masks drawn here on the real portraits
that packages ship. A mask is placed in the face's own frame, taken from the 5 points:
the eye line (through the two eye centres) gives the horizontal axis and the scale (the
distance between the eyes, ``d``), the nose point (the base of the nose) how far down
the nose ends. ``worn`` covers the nose from just under the eyes to under the chin;
``below_nose`` starts under the nose, leaving it free, and covers the mouth and chin.
Styles: surgical (light blue, white, mint, with three pleats), cloth (solid colours, a
weave and a centre seam), patterned (stripes, dots, checks), each with ear loops, some
curvature shading and soft edges. The same function draws the mask for the tests' video
(a masked portrait panned into a clip).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

Coverage = Literal["worn", "below_nose"]
Style = Literal["surgical", "cloth", "stripes", "dots", "checks"]
STYLES: tuple[Style, ...] = ("surgical", "cloth", "stripes", "dots", "checks")
SURGICAL = ((155, 200, 232), (236, 238, 240), (160, 212, 190), (120, 170, 220))
CLOTH = (
    (28, 28, 32), (30, 42, 92), (122, 122, 128), (168, 32, 42), (210, 190, 158),
    (98, 110, 62), (92, 48, 120), (230, 120, 150), (40, 110, 150), (200, 200, 60),
)  # fmt: skip
RGB = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FaceFrame:
    """The face's own axes from the 5 landmarks: origin between the eyes, unit ``d``."""

    origin: npt.NDArray[np.float64]
    across: npt.NDArray[np.float64]  # unit vector along the eye line
    down: npt.NDArray[np.float64]  # unit vector towards the nose
    d: float  # distance between the eye centres, pixels
    nose: float  # how far below the eye line the nose point is, in d

    @classmethod
    def of(cls, landmarks: npt.NDArray[np.floating]) -> FaceFrame:
        points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        eye_a, eye_b, nose = points[0:2].mean(axis=0), points[2:4].mean(axis=0), points[4]
        origin = (eye_a + eye_b) / 2
        span = eye_b - eye_a
        d = float(np.linalg.norm(span)) or 1.0
        across = span / d
        down = np.array([-across[1], across[0]])
        if float(np.dot(nose - origin, down)) < 0:
            down = -down
        drop = float(np.dot(nose - origin, down)) / d
        return cls(origin, across, down, d, max(drop, 0.3))

    def to_pixels(self, a: float, b: float) -> tuple[float, float]:
        x, y = self.origin + (a * self.across + b * self.down) * self.d
        return float(x), float(y)


@dataclass(frozen=True)
class MaskLook:
    style: Style
    colour: tuple[int, int, int]
    second: tuple[int, int, int]
    #: the pattern's period in d, the shape's scale (1 = average), its chin drop.
    period: float = 0.22
    width: float = 1.0
    chin: float = 1.0


def random_look(rng: np.random.Generator) -> MaskLook:
    style = STYLES[int(rng.integers(len(STYLES)))]
    palette = SURGICAL if style == "surgical" else CLOTH
    colour = palette[int(rng.integers(len(palette)))]
    second = CLOTH[int(rng.integers(len(CLOTH)))]
    jitter = rng.integers(-14, 15, size=3)
    colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter, strict=True))  # type: ignore[assignment]
    return MaskLook(
        style,
        colour,
        second,
        period=float(rng.uniform(0.14, 0.3)),
        width=float(rng.uniform(0.92, 1.08)),
        chin=float(rng.uniform(0.9, 1.1)),
    )


def outline(frame: FaceFrame, coverage: Coverage, look: MaskLook) -> list[tuple[float, float]]:
    """The mask's polygon in face units (a across, b down), clockwise from the top left."""
    w, n = look.width, frame.nose
    if coverage == "worn":
        top, side = 0.38 * n, 0.62 * n  # over the bridge of the nose, lower at the cheeks
    else:
        top, side = n + 0.12, n + 0.2  # under the nose: the nose stays free
    chin = n + 1.0 * look.chin
    return [
        (-1.0 * w, side), (-0.4 * w, top + 0.06), (0.0, top), (0.4 * w, top + 0.06), (1.0 * w, side),
        (1.02 * w, n + 0.38), (0.8 * w, n + 0.75 * look.chin), (0.42 * w, chin), (0.0, chin + 0.05),
        (-0.42 * w, chin), (-0.8 * w, n + 0.75 * look.chin), (-1.02 * w, n + 0.38),
    ]  # fmt: skip


def _texture(look: MaskLook, a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], top: float, chin: float,
             rng: np.random.Generator) -> npt.NDArray[np.float64]:  # fmt: skip
    base = np.empty((*a.shape, 3), np.float64)
    base[:] = look.colour
    if look.style == "surgical":
        height = max(chin - top, 1e-3)
        for fraction in (0.3, 0.5, 0.7):  # three pleats across the mask
            line = np.abs(b - (top + fraction * height)) < 0.025
            base[line] *= 0.8
            below = (b - (top + fraction * height) > 0.025) & (b - (top + fraction * height) < 0.06)
            base[below] *= 1.05
    elif look.style == "cloth":
        seam = np.abs(a) < 0.02
        base[seam] *= 0.75
        weave = 0.06 * np.sin(a * 160.0) * np.sin(b * 160.0)
        base *= (1.0 + weave)[..., None]
    else:
        p = look.period
        if look.style == "stripes":
            on = np.floor((a + 0.5 * b) / p) % 2 == 0
        elif look.style == "dots":
            da, db = (a / p) % 1.0 - 0.5, (b / p) % 1.0 - 0.5
            on = da * da + db * db < 0.09
        else:
            on = (np.floor(a / p) + np.floor(b / p)) % 2 == 0
        base[on] = look.second
    base += rng.normal(0.0, 4.0, size=base.shape)  # fabric grain
    shade = 1.0 - 0.28 * np.clip(a * a, 0.0, 1.2)  # the mask curves away at the sides
    return np.asarray(base * shade[..., None])


def draw_mask(
    image: RGB, landmarks: npt.NDArray[np.floating], coverage: Coverage, look: MaskLook, seed: int = 0
) -> RGB:
    """A copy of ``image`` (RGB) with a mask on the face whose 5 landmarks are given."""
    rng = np.random.default_rng(seed)
    frame = FaceFrame.of(landmarks)
    polygon_units = outline(frame, coverage, look)
    polygon = [frame.to_pixels(a, b) for a, b in polygon_units]
    height, width = image.shape[:2]
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    pad = max(2, round(frame.d * 0.5))
    x0, y0 = max(0, int(min(xs)) - pad), max(0, int(min(ys)) - pad)
    x1, y1 = min(width, int(max(xs)) + pad), min(height, int(max(ys)) + pad)
    if x1 <= x0 or y1 <= y0:
        return image.copy()
    region = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(region)
    draw.polygon([(x - x0, y - y0) for x, y in polygon], fill=255)
    # Ear loops: from the mask's corners outwards, towards the ears.
    loop = max(1, round(frame.d * 0.035))
    side = polygon_units[4][1]
    for sign in (-1.0, 1.0):
        for (fa, fb), (ta, tb) in (
            ((0.98 * look.width, side), (1.38, side - 0.1)),
            ((0.95 * look.width, frame.nose + 0.55), (1.38, frame.nose + 0.2)),
        ):
            start, end = frame.to_pixels(sign * fa, fb), frame.to_pixels(sign * ta, tb)
            draw.line([(start[0] - x0, start[1] - y0), (end[0] - x0, end[1] - y0)], fill=255, width=loop)
    blur = max(0.6, frame.d * 0.012)
    alpha = np.asarray(region.filter(ImageFilter.GaussianBlur(blur)), np.float64)[..., None] / 255.0
    grid_y, grid_x = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    rel_x, rel_y = grid_x - frame.origin[0], grid_y - frame.origin[1]
    a = (rel_x * frame.across[0] + rel_y * frame.across[1]) / frame.d
    b = (rel_x * frame.down[0] + rel_y * frame.down[1]) / frame.d
    top = min(p[1] for p in polygon_units)
    chin = max(p[1] for p in polygon_units)
    texture = _texture(look, a, b, top, chin, rng)
    out = image.astype(np.float64, copy=True)
    patch = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = patch * (1.0 - alpha) + texture * alpha
    return np.clip(out, 0, 255).astype(np.uint8)
