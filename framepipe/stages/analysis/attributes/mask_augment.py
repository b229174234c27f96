"""Augmentation for the mask baseline: lighting and camera effects, and hard "none" negatives.

Leave-one-person-out showed the first baseline calling bare faces unlike its few training
faces "masked" (a broad smile, a dark collar under the chin, other lighting). So a bare
face here is often given something in the lower face or right under it that is NOT a
mask: a beard or stubble, a moustache, a scarf or collar below the chin, a hand at the
jaw. And every face (bare or masked) goes through lighting and camera changes the photos
do not have: colour temperature and hue, saturation, grey, gamma, light from one side,
blur, sensor noise and JPEG compression. Drawn in the face's own frame
(:class:`.mask_synth.FaceFrame`) like the masks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

from framepipe.stages.analysis.attributes.mask_synth import CLOTH, FaceFrame, _texture, random_look

RGB = npt.NDArray[np.uint8]
HAIR = ((22, 18, 16), (48, 32, 22), (84, 60, 40), (120, 96, 70), (150, 80, 40), (160, 158, 150),
        (205, 200, 190))  # fmt: skip
#: shapes in the face's units: (across, down from the nose point), as in mask_synth's outline.
MOUTH = ((-0.38, 0.33), (0.0, 0.25), (0.38, 0.33), (0.3, 0.58), (0.0, 0.62), (-0.3, 0.58))
BEARD = ((-1.05, -0.15), (-0.5, 0.2), (0.0, 0.15), (0.5, 0.2), (1.05, -0.15), (0.95, 0.7), (0.5, 1.05),
         (0.0, 1.15), (-0.5, 1.05), (-0.95, 0.7))  # fmt: skip
MOUSTACHE = ((-0.45, 0.38), (0.0, 0.12), (0.45, 0.38), (0.3, 0.3), (0.0, 0.22), (-0.3, 0.3))
GOATEE = ((-0.25, 0.65), (0.25, 0.65), (0.18, 1.1), (-0.18, 1.1))
#: from the scarf's top edge (under the chin) down.
SCARF = ((-1.8, 0.2), (-0.6, 0.0), (0.6, 0.0), (1.8, 0.2), (2.0, 2.5), (-2.0, 2.5))


def photometric(image: RGB, rng: np.random.Generator) -> RGB:
    """Lighting and camera changes on an RGB image (a new array)."""
    picture = Image.fromarray(image)
    if rng.random() < 0.5:  # hue and saturation: other skin tones, other white balance
        hue, sat, val = (np.asarray(c, np.int16) for c in picture.convert("HSV").split())
        hue = (hue + int(rng.integers(-14, 15))) % 256
        sat = np.clip(sat * float(rng.uniform(0.5, 1.4)), 0, 255)
        channels = [Image.fromarray(c.astype(np.uint8)) for c in (hue, sat, val)]
        picture = Image.merge("HSV", channels).convert("RGB")
    if rng.random() < 0.12:
        picture = picture.convert("L").convert("RGB")
    if rng.random() < 0.45:
        picture = picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.8))))
    out = np.asarray(picture, np.float32) / 255.0
    out = out ** float(rng.uniform(0.7, 1.5))
    if rng.random() < 0.4:  # light from one side
        height, width = out.shape[:2]
        angle = float(rng.uniform(0, 2 * np.pi))
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = ((xx / width - 0.5) * np.cos(angle) + (yy / height - 0.5) * np.sin(angle)) + 0.5
        out = out * (1.0 - float(rng.uniform(0.2, 0.5)) * np.clip(ramp, 0, 1))[..., None]
    gain = float(rng.uniform(0.6, 1.35)) * rng.uniform(0.85, 1.15, 3)
    contrast = float(rng.uniform(0.7, 1.25))
    mean = out.mean()
    out = ((out - mean) * contrast + mean) * gain * 255.0 + rng.normal(0, float(rng.uniform(1, 6)), out.shape)
    adjusted = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        adjusted.save(buffer, "JPEG", quality=int(rng.integers(15, 90)))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            adjusted = decoded.convert("RGB")
    return np.ascontiguousarray(np.asarray(adjusted))


def _blend(image: RGB, alpha: npt.NDArray[np.float64], texture: npt.NDArray[np.float64]) -> RGB:
    out = image.astype(np.float64) * (1.0 - alpha[..., None]) + texture * alpha[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _polygon_alpha(shape: tuple[int, ...], polygons: list[list[tuple[float, float]]], blur: float,
                   holes: list[list[tuple[float, float]]] = ()) -> npt.NDArray[np.float64]:  # type: ignore[assignment]  # fmt: skip
    region = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(region)
    for polygon in polygons:
        draw.polygon(polygon, fill=255)
    for hole in holes:
        draw.polygon(hole, fill=0)
    return np.asarray(region.filter(ImageFilter.GaussianBlur(blur)), np.float64) / 255.0


def _face_coordinates(shape: tuple[int, ...], frame: FaceFrame) -> tuple[npt.NDArray[np.float64], ...]:
    grid_y, grid_x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    rel_x, rel_y = grid_x - frame.origin[0], grid_y - frame.origin[1]
    a = (rel_x * frame.across[0] + rel_y * frame.across[1]) / frame.d
    b = (rel_x * frame.down[0] + rel_y * frame.down[1]) / frame.d
    return a, b


def occlude(image: RGB, landmarks: npt.NDArray[np.floating], rng: np.random.Generator) -> RGB:
    """A bare face with one thing that is not a mask: beard, moustache, scarf or hand."""
    frame = FaceFrame.of(landmarks)
    n = frame.nose

    def px(points: Sequence[tuple[float, float]], below: float = n) -> list[tuple[float, float]]:
        return [frame.to_pixels(a, below + b) for a, b in points]

    kind = int(rng.integers(4))
    blur = max(0.8, frame.d * 0.03)
    if kind in (0, 1):  # beard (with moustache) or moustache and goatee: hair, not fabric
        hair = np.array(HAIR[int(rng.integers(len(HAIR)))], np.float64)
        shapes = [px(BEARD)] if kind == 0 else [px(MOUSTACHE), px(GOATEE)]
        alpha = _polygon_alpha(image.shape, shapes, blur, holes=[px(MOUTH)])
        density = float(rng.uniform(0.45, 0.95))
        strands = rng.random(image.shape[:2])
        alpha = alpha * np.clip(density + 0.5 * (strands - 0.5), 0, 1)
        texture = hair[None, None, :] * rng.uniform(0.6, 1.4, image.shape[:2])[..., None]
        return _blend(image, alpha, texture)
    if kind == 2:  # scarf, collar or turtleneck: fabric, but under the chin, mouth and chin free
        top = n + float(rng.uniform(1.1, 1.35))
        alpha = _polygon_alpha(image.shape, [px(SCARF, top)], blur)
        a, b = _face_coordinates(image.shape, frame)
        texture = _texture(random_look(rng), a, b, top, top + 2.5, rng)
        return _blend(image, alpha, texture)
    # a hand at the jaw or under the chin, in the face's own skin colour, fingers apart
    cheek = frame.to_pixels(0.55 * float(rng.choice([-1.0, 1.0])), n)
    x, y = int(np.clip(cheek[0], 0, image.shape[1] - 1)), int(np.clip(cheek[1], 0, image.shape[0] - 1))
    skin = np.median(image[max(0, y - 3) : y + 4, max(0, x - 3) : x + 4].reshape(-1, 3), axis=0)
    skin = skin * rng.uniform(0.85, 1.1, 3)
    side = float(rng.choice([-1.0, 1.0]))
    ca, cb = side * float(rng.uniform(0.5, 1.0)), n + float(rng.uniform(0.95, 1.3))
    fingers = [px([(ca + side * dx - 0.07, cb - 0.05), (ca + side * dx + 0.07, cb - 0.05),
                   (ca + side * dx + 0.06, cb - 0.55), (ca + side * dx - 0.06, cb - 0.55)])
               for dx in (-0.3, -0.12, 0.06, 0.24)]  # fmt: skip
    palm = px([(ca - 0.42, cb - 0.1), (ca + 0.42, cb - 0.1), (ca + 0.35, cb + 0.6), (ca - 0.35, cb + 0.6)])
    alpha = _polygon_alpha(image.shape, [palm, *fingers], blur)
    shade = 1.0 - 0.15 * rng.random(image.shape[:2])
    return _blend(image, alpha, skin[None, None, :] * shade[..., None])


def random_mask_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Any colour, skin-like ones too: masks come in more than the palette."""
    if rng.random() < 0.5:
        base = CLOTH[int(rng.integers(len(CLOTH)))]
        return tuple(int(v) for v in np.clip(np.array(base) * rng.uniform(0.7, 1.3, 3), 0, 255))  # type: ignore[return-value]
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]
