"""Encoded H.264 out of a stored segment, untouched, for live egress (WebRTC) that must not re-encode."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import av.error

from framepipe.core.errors import CorruptMediaError


@dataclass(frozen=True)
class AccessUnit:
    """One encoded picture in decode order: Annex B bytes and times in seconds."""

    data: bytes
    pts_s: float
    dts_s: float
    keyframe: bool


def demux_h264(segment: bytes) -> list[AccessUnit]:
    """The H.264 access units of an MPEG-TS segment (Annex B, as the muxer stored them).

    Raises :class:`CorruptMediaError` for a segment with no H.264 video in it.
    """
    units: list[AccessUnit] = []
    try:
        with av.open(io.BytesIO(segment), "r", format="mpegts") as container:
            if not container.streams.video:
                raise CorruptMediaError("segment has no video stream")
            stream = container.streams.video[0]
            if stream.codec_context.name != "h264":
                raise CorruptMediaError(f"segment video is {stream.codec_context.name}, not h264")
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None or packet.time_base is None:
                    continue  # the demuxer's final flush packet
                dts = packet.dts if packet.dts is not None else packet.pts
                units.append(
                    AccessUnit(
                        bytes(packet),
                        float(packet.pts * packet.time_base),
                        float(dts * packet.time_base),
                        bool(packet.is_keyframe),
                    )
                )
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(f"segment does not demux: {exc}") from None
    return units
