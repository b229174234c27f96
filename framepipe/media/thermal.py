"""Radiometric thermal video: 16-bit frames in and out, and the visible → thermal homography.

A thermal camera's GOPs carry 16-bit values losslessly: FFV1 or PNG (``gray16le``)
as FFmpeg reads them from a file or a stream, or, over RTSP where RTP has no 16-bit
grey payload, RFC 4175 raw RGB with the high byte in red and the low byte in green
(``rgb24``; blue is 0). :func:`decode_thermal` turns either into ``uint16`` arrays;
anything lossy or 8-bit is refused (its values are not temperatures).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
import numpy.typing as npt

from framepipe.core.errors import ConfigError, PoisonError
from framepipe.core.messages import GopMessage

Values = npt.NDArray[np.uint16]
#: pixel formats whose values are the camera's 16-bit counts as they are.
GRAY16 = ("gray16le", "gray16be")
#: 16-bit counts packed into 8-bit RGB (high byte red, low byte green): RTSP/RTP raw video.
PACKED_RGB = "rgb24"
#: the codecs that keep every bit (what a radiometric stream may use).
LOSSLESS_CODECS = ("ffv1", "png", "rawvideo")


class ThermalFormatError(PoisonError):
    """A thermal GOP whose pixels are not lossless 16-bit values."""

    reason = "thermal-format"


def check_thermal_format(codec: str, pixel_format: str) -> None:
    if codec not in LOSSLESS_CODECS or pixel_format not in (*GRAY16, PACKED_RGB):
        raise ThermalFormatError(
            f"thermal video must be lossless 16-bit ({'/'.join(LOSSLESS_CODECS)} in "
            f"{'/'.join(GRAY16)}, or rgb24 packing over RTSP), got {codec} {pixel_format or '?'}: "
            "set the camera to its radiometric (TLinear) 16-bit output"
        )


def unpack_rgb(rgb: npt.NDArray[np.uint8]) -> Values:
    """16-bit counts from RGB with the high byte in red and the low byte in green."""
    values = (rgb[..., 0].astype(np.uint16) << 8) | rgb[..., 1].astype(np.uint16)
    return values.astype(np.uint16, copy=False)


def pack_rgb(values: Values) -> npt.NDArray[np.uint8]:
    """:func:`unpack_rgb`'s inverse (what a camera or a test server sends over RTP)."""
    rgb = np.zeros((*values.shape, 3), np.uint8)
    rgb[..., 0] = values >> 8
    rgb[..., 1] = values & 0xFF
    return rgb


def decode_thermal(gop: GopMessage) -> list[tuple[int, Values]]:
    """(pts, 16-bit frame) of every frame of a thermal GOP."""
    check_thermal_format(gop.codec, gop.pixel_format)
    try:
        ctx = av.CodecContext.create(gop.codec, "r")
        if not isinstance(ctx, av.VideoCodecContext):
            raise ValueError(f"{gop.codec} is not a video codec")
        ctx.width, ctx.height = gop.width, gop.height
        ctx.pix_fmt = gop.pixel_format
        if gop.extradata:
            ctx.extradata = gop.extradata
        out: list[tuple[int, Values]] = []
        for packet in gop.iter_packets():
            raw = av.Packet(packet.data)
            raw.pts, raw.dts = packet.pts, packet.dts
            for frame in ctx.decode(raw):
                out.append((frame.pts if frame.pts is not None else packet.pts, _values(frame)))
        for frame in ctx.decode(None):
            out.append((frame.pts if frame.pts is not None else gop.pts[-1], _values(frame)))
    except (av.error.FFmpegError, ValueError) as exc:
        raise ThermalFormatError(f"thermal GOP {gop.camera}/{gop.gop} does not decode: {exc}") from None
    return out


def _values(frame: av.VideoFrame) -> Values:
    if frame.format.name == PACKED_RGB:
        return unpack_rgb(np.asarray(frame.to_ndarray(), np.uint8))
    return np.asarray(frame.to_ndarray(format="gray16le"), np.uint16)


def write_thermal_clip(path: Path, frames: Sequence[Values], fps: int, codec: str = "ffv1") -> Path:
    """A lossless 16-bit clip (FFV1 gray16le in Matroska) of ``frames``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        if not isinstance(stream, av.VideoStream):
            raise TypeError(f"{codec} is not a video codec")
        stream.height, stream.width = frames[0].shape
        stream.pix_fmt = "gray16le"
        stream.time_base = Fraction(1, fps)
        for index, values in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(values), format="gray16le")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# -- registration ------------------------------------------------------------------


Points = npt.NDArray[np.float64]


def _collinear(points: Points, tolerance: float) -> bool:
    for skip in range(4):
        a, b, c = (points[i] for i in range(4) if i != skip)
        area = abs((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])) / 2.0
        if area < tolerance:
            return True
    return False


def fit_homography(visible: Sequence[tuple[float, float]], thermal: Sequence[tuple[float, float]]) -> Points:
    """The 3×3 homography mapping 4 visible points onto 4 thermal points (DLT, h33 = 1).

    Three points on one line (in either image) fix no homography: refused in one line."""
    src, dst = np.asarray(visible, np.float64), np.asarray(thermal, np.float64)
    if src.shape != (4, 2) or dst.shape != (4, 2):
        raise ConfigError("calibration needs exactly 4 point pairs (x,y in visible, x,y in thermal)")
    for name, points in (("visible", src), ("thermal", dst)):
        span = float(np.ptp(points, axis=0).max()) or 1.0
        if _collinear(points, 1e-3 * span * span):
            raise ConfigError(
                f"three of the 4 {name} points lie on one line: pick 4 points spread over the "
                "image, like the corners of a heated plate"
            )
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    matrix = vt[-1].reshape(3, 3)
    if abs(matrix[2, 2]) < 1e-12:
        raise ConfigError("the 4 point pairs give a degenerate homography: pick other points")
    result: Points = matrix / matrix[2, 2]
    return result


def map_points(matrix: Points, points: Points) -> Points:
    """``points`` (n×2, visible pixels) in thermal pixels; NaN where they map to infinity."""
    ones = np.ones((len(points), 1))
    mapped = np.hstack([points, ones]) @ matrix.T
    with np.errstate(divide="ignore", invalid="ignore"):
        out: Points = mapped[:, :2] / mapped[:, 2:3]
    out[~np.isfinite(out).all(axis=1) | (mapped[:, 2] <= 0)] = np.nan
    return out
