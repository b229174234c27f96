"""Paired test media for fever screening, made at test time with PyAV from real photos.

A visible clip (H.264) of two real portraits side by side drifting right, and its
radiometric twin (FFV1 gray16le, TLinear centikelvin): a 22 °C room, each face an
ellipse 2 °C below its chosen temperature with its inner-canthus spot (from dlib's
real landmarks on the photo) at the chosen temperature, moving in step. The thermal
camera sees the visible image at a quarter of its size: the homography is
``diag(0.25, 0.25, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from PIL import Image

from framepipe.media.thermal import Values, pack_rgb, write_thermal_clip
from framepipe.stages.analysis.embedder import FaceEmbedder
from tests.helpers import PORTRAIT_CROPS, face_photo

WIDTH, HEIGHT, FPS, SECONDS, GOP = 640, 480, 10, 3, 5
THERMAL_SCALE = 0.25
HOMOGRAPHY = [THERMAL_SCALE, 0.0, 0.0, 0.0, THERMAL_SCALE, 0.0, 0.0, 0.0, 1.0]
ROOM_C = 22.0
#: the two people: photo, where its 220-px square starts, the face's temperature.
PEOPLE = (("obama2.jpg", (40, 130), 38.4), ("biden.jpg", (360, 130), 36.6))
DRIFT_PX = 2  # per frame, to the right (0.5 thermal px)
FACE_PX = 220


def counts(celsius: npt.NDArray[np.float64] | float) -> npt.NDArray[np.uint16]:
    """TLinear centikelvin."""
    return np.asarray(np.round((np.asarray(celsius) + 273.15) * 100.0), np.uint16)


@dataclass(frozen=True)
class PairedClips:
    visible: Path
    thermal: Path
    #: the thermal frames as written (to check the lossless paths bit for bit).
    thermal_frames: list[Values]


def _visible_frame(squares: list[Image.Image], index: int, drift_px: int) -> npt.NDArray[np.uint8]:
    canvas = Image.new("RGB", (WIDTH, HEIGHT), (92, 96, 104))
    for square, (_, (x, y), _) in zip(squares, PEOPLE, strict=True):
        canvas.paste(square, (x + drift_px * index, y))
    return np.asarray(canvas)


def make_paired_clips(
    folder: Path, embedder: FaceEmbedder, drift_px: int = DRIFT_PX, thermal_seconds: int = SECONDS
) -> PairedClips:
    """The pair; ``thermal_seconds`` > SECONDS with ``drift_px`` 0 (people standing still) lets a
    thermal camera started a little earlier cover the whole visible clip."""
    squares = []
    for name, _, _ in PEOPLE:
        with Image.open(face_photo(name)) as photo:
            squares.append(photo.convert("RGB").crop(PORTRAIT_CROPS[name]).resize((FACE_PX, FACE_PX)))
    first = _visible_frame(squares, 0, drift_px)
    faces = []  # (box, inner-canthus midpoint, eye span) in the first visible frame
    for box in sorted(embedder.detect(first)):
        x1, y1, x2, y2 = (round(v) for v in box)
        shape = embedder.shape_predictor(first, embedder._dlib.rectangle(x1, y1, x2, y2))
        points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float64)
        centre_a, centre_b = points[0:2].mean(axis=0), points[2:4].mean(axis=0)
        inner = [points[0:2][np.argmin(np.linalg.norm(points[0:2] - centre_b, axis=1))]]
        inner.append(points[2:4][np.argmin(np.linalg.norm(points[2:4] - centre_a, axis=1))])
        faces.append((box, (inner[0] + inner[1]) / 2.0, float(np.linalg.norm(centre_a - centre_b))))
    if len(faces) != len(PEOPLE):
        raise RuntimeError(f"expected {len(PEOPLE)} faces in the test frame, dlib found {len(faces)}")

    frames = SECONDS * FPS
    visible = folder / "visible.mp4"
    with av.open(str(visible), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.time_base = Fraction(1, FPS)
        stream.options = {
            "preset": "veryfast",
            "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0",
        }
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(_visible_frame(squares, index, drift_px), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    rng = np.random.default_rng(15)
    th_h, th_w = round(HEIGHT * THERMAL_SCALE), round(WIDTH * THERMAL_SCALE)
    yy, xx = np.mgrid[0:th_h, 0:th_w].astype(np.float64)
    thermal_frames = []
    for index in range(thermal_seconds * FPS):
        scene = ROOM_C + rng.normal(0.0, 0.05, (th_h, th_w))
        shift = drift_px * index * THERMAL_SCALE
        for (box, canthus, span), (_, _, face_c) in zip(faces, PEOPLE, strict=True):
            x1, y1, x2, y2 = (v * THERMAL_SCALE for v in box)
            cx, cy = (x1 + x2) / 2 + shift, (y1 + y2) / 2
            rx, ry = (x2 - x1) / 2 * 1.1, (y2 - y1) / 2 * 1.4
            skin = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
            scene[skin] = face_c - 2.0 + rng.normal(0.0, 0.05, int(skin.sum()))
            kx, ky = canthus[0] * THERMAL_SCALE + shift, canthus[1] * THERMAL_SCALE
            spot = (xx - kx) ** 2 + (yy - ky) ** 2 <= (0.3 * span * THERMAL_SCALE) ** 2
            scene[spot] = face_c + rng.normal(0.0, 0.03, int(spot.sum()))
        thermal_frames.append(counts(scene))
    thermal = write_thermal_clip(folder / "thermal.mkv", thermal_frames, FPS)
    return PairedClips(visible, thermal, thermal_frames)


def write_packed_rgb(path_folder: Path, frames: list[Values], fps: int, repeat: int) -> Path:
    """The thermal frames as raw packed RGB (for the RTSP server's RFC 4175 mount)."""
    height, width = frames[0].shape
    path = path_folder / f"thermal_{width}x{height}_{fps}.rgb"
    path.write_bytes(b"".join(pack_rgb(f).tobytes() for _ in range(repeat) for f in frames))
    return path
