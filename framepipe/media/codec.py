"""Decode one GOP message, encode annotated frames into one MPEG-TS segment.

Both directions use PyAV's ``CodecContext`` directly (no container on the
decode side): a GOP message carries exactly what FFmpeg needs — codec name,
extradata, packets with pts/dts and the time base.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction
from itertools import pairwise
from statistics import median

import av
import av.error

from framepipe.core.errors import CorruptMediaError
from framepipe.core.messages import GopMessage


def _decoder_context(gop: GopMessage, threads: int) -> av.VideoCodecContext:
    try:
        ctx = av.CodecContext.create(gop.codec, "r")
    except (ValueError, av.error.FFmpegError) as exc:
        raise CorruptMediaError(f"unknown codec {gop.codec!r}: {exc}") from None
    if not isinstance(ctx, av.VideoCodecContext):
        raise CorruptMediaError(f"codec {gop.codec!r} is not a video codec")
    if gop.extradata:
        ctx.extradata = gop.extradata
    ctx.thread_count = threads
    ctx.thread_type = "FRAME" if threads > 1 else "SLICE"
    return ctx


def decode_gop(gop: GopMessage, threads: int = 1, through_pts: int | None = None) -> Iterator[av.VideoFrame]:
    """Yield the GOP's frames in presentation order.

    With ``through_pts``, stop once the frame shown at that pts is out: the packets after it
    are not decoded (no frame before it depends on them), so the frames after it are missing.

    Raises :class:`CorruptMediaError` when the packets do not decode, or decode
    to no frame at all (garbage, truncation, wrong codec parameters).
    """
    ctx = _decoder_context(gop, threads)
    time_base = Fraction(*gop.time_base)
    frames: list[av.VideoFrame] = []
    errors = 0
    stopped = False
    for pkt in gop.iter_packets():
        packet = av.Packet(pkt.data)
        packet.pts, packet.dts, packet.time_base = pkt.pts, pkt.dts, time_base
        try:
            out = ctx.decode(packet)
        except av.error.FFmpegError:
            errors += 1
            continue
        frames.extend(out)
        # The decoder hands frames out in presentation order: every earlier one is out too.
        if through_pts is not None and any(f.pts is not None and f.pts >= through_pts for f in out):
            stopped = True
            break
    if not stopped:
        try:
            frames.extend(ctx.decode(None))
        except av.error.FFmpegError:
            errors += 1
    if not frames:
        raise CorruptMediaError(
            f"GOP {gop.gop} of {gop.camera}: {len(gop.packets)} {gop.codec} packets decoded to no frame"
            f" ({errors} decode errors)"
        )
    expected = (
        sum(1 for p in gop.pts if p <= through_pts)
        if stopped and through_pts is not None
        else len(gop.packets)
    )
    if errors and len(frames) < expected:
        raise CorruptMediaError(
            f"GOP {gop.gop} of {gop.camera}: {errors} decode errors, {len(frames)} of "
            f"{expected} frames decoded"
        )
    frames.sort(key=lambda f: f.pts if f.pts is not None else 0)
    yield from frames


def frame_duration(pts: list[int]) -> int:
    """Typical pts step of a GOP (1 for a single frame)."""
    steps = [b - a for a, b in pairwise(pts) if b > a]
    return int(median(steps)) if steps else 1


def output_size(width: int, height: int, output_height: int = 0) -> tuple[int, int]:
    """Even frame size to encode: the source's, or scaled down to ``output_height`` (aspect kept)."""
    if output_height and output_height < height:
        width, height = round(width * output_height / height), output_height
    return width - width % 2, height - height % 2


def encode_segment(
    frames: list[av.VideoFrame],
    time_base: Fraction,
    *,
    codec: str = "libx264",
    preset: str = "superfast",
    crf: int = 23,
    threads: int = 1,
    tune: str = "",
    output_height: int = 0,
) -> tuple[bytes, float]:
    """Encode RGB/YUV frames (with source pts) into one MPEG-TS segment.

    The segment keeps the source timestamps, so consecutive segments form one
    continuous timeline and an HLS player needs no discontinuity between them.
    ``output_height`` scales the frames down before encoding (0: source size).
    Returns (segment bytes, duration in seconds).
    """
    if not frames:
        raise ValueError("no frames to encode")
    pts = [f.pts if f.pts is not None else i for i, f in enumerate(frames)]
    step = frame_duration(pts)
    rate = Fraction(1, 1) / (step * time_base) if step * time_base > 0 else Fraction(30)
    width, height = output_size(frames[0].width, frames[0].height, output_height)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        stream = container.add_stream(codec, rate=rate.limit_denominator(100000))
        if not isinstance(stream, av.VideoStream):
            raise TypeError(f"{codec} is not a video codec")
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        stream.codec_context.thread_count = threads
        # No B-frames: WebRTC passes these packets through (web/whep.py), and browsers' WebRTC
        # H.264 decoders return nothing for a reordered frame (Chromium: EAGAIN, then keyframe requests).
        if codec == "libx264":
            stream.options = {"preset": preset, "crf": str(crf), "x264-params": "scenecut=0:bframes=0"}
            if tune:
                stream.options = {**stream.options, "tune": tune}
        elif codec.endswith("_nvenc"):
            stream.options = {"preset": "p4", "rc": "vbr", "cq": str(crf), "bf": "0"}
        for frame in frames:
            if frame.width != width or frame.height != height or frame.format.name != "yuv420p":
                converted = frame.reformat(width=width, height=height, format="yuv420p")
                converted.pts = frame.pts
                frame = converted
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    duration = float((max(pts) - min(pts) + step) * time_base)
    return buffer.getvalue(), duration
