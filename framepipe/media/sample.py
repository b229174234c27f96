"""Generated test and demo media: real encoded video with a real face.

The face is scikit-image's ``astronaut`` photo (public domain, NASA), panned
and zoomed over a textured background so that it moves. Because the motion is
known, the true face box of every frame is known too (:func:`face_box`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from framepipe.media.stamp import paint_stamp

# Face of the astronaut photo (512×512), x1, y1, x2, y2 in its pixels. Read off
# the image by eye (forehead to chin, ear to ear) and checked by drawing it.
ASTRONAUT_FACE = (172.0, 62.0, 282.0, 180.0)

# Named frame sizes for benchmarks and tests ("720p" → 1280×720).
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "360p": (640, 360),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}


@dataclass(frozen=True)
class ClipSpec:
    width: int = 1280
    height: int = 720
    fps: int = 30
    seconds: float = 10.0
    gop: int = 60
    bframes: int = 2
    codec: str = "libx264"
    open_gop: bool = False
    crf: int = 26
    pix_fmt: str = "yuv420p"  # 4:2:0 needs even sizes; use yuv444p for odd ones
    #: paint each frame's number as a machine-readable code (``media.stamp``; live-view tests)
    stamp: bool = False

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    @classmethod
    def named(cls, resolution: str, *, gop: int = 30, seconds: float = 10.0, fps: int = 30) -> ClipSpec:
        """H.264 clip at a named size (``"720p"``, ``"1080p"``...) with a fixed GOP length in frames."""
        try:
            width, height = RESOLUTIONS[resolution]
        except KeyError:
            raise ValueError(
                f"unknown resolution {resolution!r}; use one of {', '.join(RESOLUTIONS)}"
            ) from None
        return cls(width=width, height=height, fps=fps, seconds=seconds, gop=gop)

    @property
    def cache_name(self) -> str:
        """A file name that changes with every field, so a cached clip is never stale."""
        suffix = ".mkv" if self.codec == "libx265" else ".mp4"
        stamp = "_stamp" if self.stamp else ""
        return (
            f"{self.codec}_{self.width}x{self.height}_{self.fps}fps_{self.seconds:g}s_gop{self.gop}"
            f"_b{self.bframes}{'_open' if self.open_gop else ''}_crf{self.crf}_{self.pix_fmt}{stamp}{suffix}"
        )


def _placement(spec: ClipSpec, index: int) -> tuple[float, float, float]:
    """Scale and top-left corner of the photo in frame ``index``."""
    t = index / max(spec.frames - 1, 1)
    base = 0.8 * spec.height / 512.0
    scale = base * (1.0 + 0.25 * math.sin(math.pi * t))
    size = 512 * scale
    x = (spec.width - size) * (0.1 + 0.8 * t)
    y = (spec.height - size) * (0.5 + 0.3 * math.sin(2 * math.pi * t))
    return scale, x, y


def face_box(spec: ClipSpec, index: int) -> tuple[float, float, float, float]:
    """True face box in frame ``index`` of a clip made by :func:`make_clip`."""
    scale, x, y = _placement(spec, index)
    x1, y1, x2, y2 = ASTRONAUT_FACE
    return x + x1 * scale, y + y1 * scale, x + x2 * scale, y + y2 * scale


def _background(width: int, height: int) -> npt.NDArray[np.uint8]:
    yy, xx = np.mgrid[0:height, 0:width]
    r = 60 + 40 * np.sin(xx / 37.0)
    g = 70 + 30 * np.cos(yy / 23.0)
    b = 90 + 40 * np.sin((xx + yy) / 51.0)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def render_frame(
    spec: ClipSpec,
    index: int,
    photo: npt.NDArray[np.uint8],
    background: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8]:
    scale, x, y = _placement(spec, index)
    size = max(2, round(512 * scale))
    scaled = (
        av.VideoFrame.from_ndarray(photo, format="rgb24")
        .reformat(width=size, height=size, interpolation="BILINEAR")
        .to_ndarray()
    )
    frame = (background if background is not None else _background(spec.width, spec.height)).copy()
    x0, y0 = round(x), round(y)
    xs0, ys0 = max(0, -x0), max(0, -y0)
    xd0, yd0 = max(0, x0), max(0, y0)
    w = min(size - xs0, spec.width - xd0)
    h = min(size - ys0, spec.height - yd0)
    if w > 0 and h > 0:
        frame[yd0 : yd0 + h, xd0 : xd0 + w] = scaled[ys0 : ys0 + h, xs0 : xs0 + w]
    return frame


def astronaut() -> npt.NDArray[np.uint8]:
    from skimage import data

    photo: npt.NDArray[np.uint8] = np.ascontiguousarray(data.astronaut())  # type: ignore[no-untyped-call]
    return photo


def make_clip(path: Path, spec: ClipSpec = ClipSpec(), photo: npt.NDArray[np.uint8] | None = None) -> Path:
    """Encode a clip to ``path`` (container from the suffix); returns ``path``.

    ``photo``: a 512×512 RGB photo to pan instead of the astronaut (face tests use
    other people's portraits; ``face_box`` then does not apply).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    photo = astronaut() if photo is None else photo
    background = _background(spec.width, spec.height)
    tmp = path.with_name(path.name + ".partial" + path.suffix)
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream(spec.codec, rate=spec.fps)
        if not isinstance(stream, av.VideoStream):
            raise TypeError(f"{spec.codec} is not a video codec")
        stream.width = spec.width
        stream.height = spec.height
        stream.pix_fmt = spec.pix_fmt
        stream.codec_context.time_base = Fraction(1, spec.fps)
        if spec.codec == "libx264":
            params = f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:bframes={spec.bframes}"
            if spec.open_gop:
                params += ":open-gop=1"
            stream.options = {"preset": "veryfast", "crf": str(spec.crf), "x264-params": params}
        elif spec.codec == "libx265":
            params = (
                f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:bframes={spec.bframes}"
                f":open-gop={1 if spec.open_gop else 0}:log-level=error"
            )
            stream.options = {"preset": "ultrafast", "crf": str(spec.crf), "x265-params": params}
        for index in range(spec.frames):
            rgb = render_frame(spec, index, photo, background)
            if spec.stamp:
                paint_stamp(rgb, index)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, spec.fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    tmp.replace(path)
    return path


def cached_clip(spec: ClipSpec, cache_dir: Path) -> Path:
    """The clip for ``spec`` under ``cache_dir``, generated on first use (never downloaded)."""
    path = cache_dir / spec.cache_name
    return path if path.is_file() else make_clip(path, spec)


def count_frames(path: Path | str) -> int:
    """Decode every frame of the first video stream (ground truth for tests)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
