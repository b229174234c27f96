"""Cut a demuxed packet stream into independently decodable GOPs.

A container's keyframe flag is not enough: HEVC CRA pictures (x265's default
open GOP) and H.264 recovery-point I-frames are flagged as keyframes, but the
leading pictures after them reference the previous GOP, so a decoder that
starts there drops frames. We therefore cut only at IDR/BLA access units,
found by reading NAL unit types (length-prefixed as in MP4, or Annex B as in
MPEG-TS/RTSP). If a stream has no IDR for ``max_seconds`` we fall back to any
keyframe and mark the GOP ``open`` so the loss is visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

H264_IDR = {5}
HEVC_CLEAN_RANDOM_ACCESS = {17, 18, 19, 20}  # BLA_W_RADL, BLA_N_LP, IDR_W_RADL, IDR_N_LP


def nal_length_size(codec: str, extradata: bytes | None) -> int | None:
    """Length-prefix size from avcC/hvcC extradata; None means Annex B."""
    if not extradata or extradata[:3] == b"\x00\x00\x01" or extradata[:4] == b"\x00\x00\x00\x01":
        return None
    if codec == "h264" and len(extradata) > 4 and extradata[0] == 1:
        return (extradata[4] & 0x03) + 1
    if codec == "hevc" and len(extradata) > 21 and extradata[0] == 1:
        return (extradata[21] & 0x03) + 1
    return None


def iter_nal_headers(data: bytes, length_size: int | None) -> Iterator[int]:
    """First header byte of each NAL unit in one access unit."""
    if length_size:
        pos = 0
        while pos + length_size < len(data):
            size = int.from_bytes(data[pos : pos + length_size], "big")
            pos += length_size
            if size <= 0 or pos >= len(data):
                return
            yield data[pos]
            pos += size
        return
    pos = 0
    while True:
        start = data.find(b"\x00\x00\x01", pos)
        if start < 0 or start + 3 >= len(data):
            return
        yield data[start + 3]
        pos = start + 3


def is_clean_random_access(codec: str, data: bytes, length_size: int | None, keyframe: bool) -> bool:
    """True when decoding can start at this access unit without losing frames."""
    if codec == "h264":
        return any((b & 0x1F) in H264_IDR for b in iter_nal_headers(data, length_size))
    if codec == "hevc":
        return any(((b >> 1) & 0x3F) in HEVC_CLEAN_RANDOM_ACCESS for b in iter_nal_headers(data, length_size))
    return keyframe


@dataclass
class DemuxedPacket:
    pts: int
    dts: int
    keyframe: bool
    data: bytes


@dataclass
class Gop:
    """Packets from one clean random-access point up to the next."""

    index: int
    frame_offset: int
    packets: list[DemuxedPacket] = field(default_factory=list)
    open: bool = False
    discontinuity: bool = False

    def duration_s(self, time_base: Fraction) -> float:
        if not self.packets:
            return 0.0
        pts = [p.pts for p in self.packets]
        return float((max(pts) - min(pts)) * time_base)


class GopCutter:
    """Feed packets in decode order; get complete GOPs out."""

    def __init__(
        self,
        codec: str,
        extradata: bytes | None,
        time_base: Fraction,
        max_seconds: float = 10.0,
        first_index: int = 0,
        first_frame: int = 0,
    ) -> None:
        self.codec = codec
        self.length_size = nal_length_size(codec, extradata)
        self.time_base = time_base
        self.max_seconds = max_seconds
        self.next_index = first_index
        self.frames_seen = first_frame
        self.skipped_before_first = 0
        self._current: Gop | None = None
        self._pending_discontinuity = False

    def mark_discontinuity(self) -> None:
        """Input was interrupted (reconnect): the next GOP starts after a gap."""
        self._pending_discontinuity = True

    def push(self, packet: DemuxedPacket) -> Iterator[Gop]:
        clean = is_clean_random_access(self.codec, packet.data, self.length_size, packet.keyframe)
        current = self._current
        too_long = (
            current is not None and packet.keyframe and current.duration_s(self.time_base) >= self.max_seconds
        )
        if clean or too_long:
            if current is not None and current.packets:
                yield current
            self._current = Gop(
                index=self.next_index,
                frame_offset=self.frames_seen,
                open=not clean,
                discontinuity=self._pending_discontinuity,
            )
            self._pending_discontinuity = False
            self.next_index += 1
        if self._current is None:
            # Stream started mid-GOP (or before its first IDR): nothing can decode these.
            self.skipped_before_first += 1
            self.frames_seen += 1
            return
        self._current.packets.append(packet)
        self.frames_seen += 1

    def flush(self) -> Iterator[Gop]:
        if self._current is not None and self._current.packets:
            yield self._current
        self._current = None

    def cut(self, packets: Iterable[DemuxedPacket]) -> Iterator[Gop]:
        for packet in packets:
            yield from self.push(packet)
        yield from self.flush()
