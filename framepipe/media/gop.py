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
H264_PARAMETER_SETS = {7, 8}  # SPS, PPS
HEVC_PARAMETER_SETS = {32, 33, 34}  # VPS, SPS, PPS


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


def nal_type(codec: str, header: int) -> int:
    return header & 0x1F if codec == "h264" else (header >> 1) & 0x3F


def parameter_set_types(codec: str) -> set[int]:
    return H264_PARAMETER_SETS if codec == "h264" else HEVC_PARAMETER_SETS if codec == "hevc" else set()


def has_parameter_sets(codec: str, data: bytes | None, length_size: int | None) -> bool:
    """True when ``data`` (an access unit or extradata) carries every parameter set type."""
    wanted = parameter_set_types(codec)
    if not wanted:
        return True
    if not data:
        return False
    if length_size is not None or (codec in ("h264", "hevc") and data[:1] == b"\x01"):
        return True  # avcC/hvcC extradata: the record holds the parameter sets
    return wanted <= {nal_type(codec, b) for b in iter_nal_headers(data, None)}


def annexb_parameter_sets(codec: str, data: bytes) -> bytes:
    """The parameter-set NAL units of an Annex B access unit, each with a start code."""
    wanted = parameter_set_types(codec)
    out = bytearray()
    starts: list[int] = []
    pos = 0
    while True:
        start = data.find(b"\x00\x00\x01", pos)
        if start < 0 or start + 3 >= len(data):
            break
        starts.append(start + 3)
        pos = start + 3
    for i, begin in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        if nal_type(codec, data[begin]) in wanted:
            out += b"\x00\x00\x00\x01" + data[begin:end].rstrip(b"\x00")
    return bytes(out)


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
        # Annex B streams (RTSP, MPEG-TS) may carry SPS/PPS in band only: a GOP can
        # start only once they are known, and an IDR without them gets the last ones.
        self.extradata_has_params = has_parameter_sets(codec, extradata, self.length_size)
        self._parameter_sets = b""

    def mark_discontinuity(self) -> None:
        """Input was interrupted (reconnect): the next GOP starts after a gap."""
        self._pending_discontinuity = True

    def push(self, packet: DemuxedPacket) -> Iterator[Gop]:
        clean = is_clean_random_access(self.codec, packet.data, self.length_size, packet.keyframe)
        if clean and not self.extradata_has_params and self.length_size is None:
            params = annexb_parameter_sets(self.codec, packet.data)
            if has_parameter_sets(self.codec, params, None):
                self._parameter_sets = params
            elif self._parameter_sets:
                packet = DemuxedPacket(
                    packet.pts, packet.dts, packet.keyframe, self._parameter_sets + packet.data
                )
            else:
                clean = False  # an IDR we cannot decode yet: no SPS/PPS seen so far
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


class TimestampNormalizer:
    """Monotonic decode timestamps across jumps, wraps and reconnects.

    Missing timestamps are synthesised; a decode timestamp that goes back by
    more than a second or leaps forward by more than ``max_jump_s`` (an RTP/MPEG-TS wrap, a camera
    clock reset, a new RTSP session) rebases the stream so it continues one
    frame after the last output timestamp, and reports the jump so the caller
    can mark a discontinuity.
    """

    def __init__(self, time_base: Fraction, max_jump_s: float = 10.0) -> None:
        self.time_base = time_base
        self.max_jump_s = max_jump_s
        self.max_jump = max(1, int(max_jump_s / time_base)) if time_base > 0 else 1
        # Reordering noise (a synthesised dts, a B-frame) is not a jump: up to 1 s back.
        self.tolerance = min(self.max_jump, max(1, int(1 / time_base)) if time_base > 0 else 1)
        self.offset = 0
        self.step = 1
        self.last_raw: int | None = None
        self.last_out: int | None = None
        self.jumps = 0

    def restart(self, time_base: Fraction) -> None:
        """A new connection: its first timestamp continues the old timeline (same time base)."""
        if time_base != self.time_base:
            self.time_base = time_base
            self.max_jump = max(1, int(self.max_jump_s / time_base)) if time_base > 0 else 1
            self.tolerance = min(self.max_jump, max(1, int(1 / time_base)) if time_base > 0 else 1)
            self.offset, self.step, self.last_out = 0, 1, None
        self.last_raw = None

    def __call__(self, pts: int | None, dts: int | None) -> tuple[int, int, bool]:
        """(pts, dts, jumped) on the output timeline."""
        synthetic = dts is None
        if dts is None:
            # Just after the previous one: never past the real ones that follow (B-frames).
            dts = self.last_raw + 1 if self.last_raw is not None else pts
        if pts is None:
            pts = dts
        if pts is None or dts is None:
            pts = dts = self.last_raw + 1 if self.last_raw is not None else 0
        jumped = False
        if self.last_raw is None:
            if self.last_out is not None:
                self.offset = self.last_out + self.step - dts
        else:
            delta = dts - self.last_raw
            if delta < -self.tolerance or delta > self.max_jump:
                self.offset = (self.last_out if self.last_out is not None else 0) + self.step - dts
                self.jumps += 1
                jumped = True
            elif delta > 0 and not synthetic:
                self.step = delta if self.step == 1 else min(self.step, delta)
        self.last_raw = dts
        out_dts = dts + self.offset
        if self.last_out is not None and out_dts <= self.last_out and not jumped:
            out_dts = self.last_out + 1
        self.last_out = out_dts
        return pts + self.offset, out_dts, jumped
