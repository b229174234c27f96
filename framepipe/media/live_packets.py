"""One encoded video packet on its own, for the instant live view (``live.<camera>``, core NATS).

The gateway forwards every packet as it reads it; a viewer that joins mid-GOP drops
packets until the next keyframe, which carries the stream's extradata (avcC or Annex B
SPS/PPS) so it can start there without anything else. The wire format is binary and
internal (not a product stream): a fixed header, the codec name, the extradata (keyframes
only) and the packet's bytes as the demuxer gave them.

:func:`annex_b` turns a packet into the Annex B access unit WebRTC's H.264 payloader
wants: MP4/MKV (AVCC, length-prefixed NAL units) converted, and the SPS/PPS put in front
of a keyframe that does not carry them itself (RTSP cameras often send them only in SDP).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction

from framepipe.core.errors import CorruptMediaError

VERSION = 1
#: a packet bigger than this is not forwarded (core NATS' default max_payload is 1 MiB; a
#: live view loses one GOP rather than the gateway's connection).
MAX_PACKET_BYTES = 768 * 1024
_HEADER = struct.Struct("!BBqqIIIdHI")  # version, flags, pts, dts, tb num, tb den, seq, read at,
#                                         codec length, extradata length
_KEYFRAME = 1
START_CODE = b"\x00\x00\x00\x01"


@dataclass(frozen=True)
class LivePacket:
    codec: str
    pts: int
    dts: int
    time_base: Fraction
    keyframe: bool
    #: the gateway's count of packets it forwarded (gaps: packets the viewer lost).
    seq: int
    #: wall-clock time the gateway read (or, for a file played in real time, released) it.
    read_at: float
    data: bytes
    #: the stream's extradata; keyframes only, ``b""`` otherwise.
    extradata: bytes = b""

    @property
    def pts_s(self) -> float:
        return float(self.pts * self.time_base)

    @property
    def dts_s(self) -> float:
        return float(self.dts * self.time_base)

    def encode(self) -> bytes:
        codec = self.codec.encode()
        extra = self.extradata if self.keyframe else b""
        header = _HEADER.pack(
            VERSION,
            _KEYFRAME if self.keyframe else 0,
            self.pts,
            self.dts,
            self.time_base.numerator,
            self.time_base.denominator,
            self.seq & 0xFFFFFFFF,
            self.read_at,
            len(codec),
            len(extra),
        )
        return b"".join((header, codec, extra, self.data))

    @classmethod
    def decode(cls, raw: bytes) -> LivePacket:
        """Raises :class:`CorruptMediaError` for bytes that are not a packet of this version."""
        if len(raw) < _HEADER.size:
            raise CorruptMediaError(f"live packet of {len(raw)} bytes is shorter than its header")
        version, flags, pts, dts, num, den, seq, read_at, codec_len, extra_len = _HEADER.unpack_from(raw)
        if version != VERSION or den == 0 or num == 0:
            raise CorruptMediaError(f"live packet version {version} (time base {num}/{den}) is not {VERSION}")
        start = _HEADER.size
        if start + codec_len + extra_len > len(raw):
            raise CorruptMediaError("live packet is truncated")
        codec = raw[start : start + codec_len].decode("ascii", "replace")
        extra = raw[start + codec_len : start + codec_len + extra_len]
        data = raw[start + codec_len + extra_len :]
        return cls(codec, pts, dts, Fraction(num, den), bool(flags & _KEYFRAME), seq, read_at, data, extra)


def is_annex_b(data: bytes) -> bool:
    return data.startswith(b"\x00\x00\x01") or data.startswith(START_CODE)


def avcc_parameter_sets(extradata: bytes) -> tuple[list[bytes], int]:
    """(SPS and PPS NAL units, NAL length size) of an avcC record; for Annex B extradata (or
    none) the units and 0: the packets are Annex B too. The extradata decides, never a packet's
    first bytes (an AVCC length of 0x0000016a reads as a start code)."""
    if not extradata:
        return [], 0
    if is_annex_b(extradata):
        return _split_annex_b(extradata), 0
    if len(extradata) < 7 or extradata[0] != 1:
        raise CorruptMediaError("H.264 extradata is neither avcC nor Annex B")
    length_size = (extradata[4] & 3) + 1
    units: list[bytes] = []
    pos = 5
    for _ in range(2):  # the SPS list, then the PPS list
        if pos >= len(extradata):
            break
        count = extradata[pos] & (0x1F if not units else 0xFF)
        pos += 1
        for _ in range(count):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            units.append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return units, length_size


def _split_annex_b(data: bytes) -> list[bytes]:
    """NAL units between start codes (a 4-byte start code's extra zero trails the unit before)."""
    parts = (p.rstrip(b"\x00") for p in data.split(b"\x00\x00\x01")[1:])
    return [p for p in parts if p]


def annex_b(packet: LivePacket, parameter_sets: list[bytes], length_size: int) -> bytes:
    """``packet`` as an Annex B access unit (``length_size`` 0: it is one already, else AVCC with
    that NAL length size); a keyframe gets ``parameter_sets`` unless it carries its own."""
    if length_size == 0:
        body = packet.data
        nal_types = {n[0] & 0x1F for n in _split_annex_b(body) if n}
    else:
        nals: list[bytes] = []
        pos = 0
        while pos + length_size <= len(packet.data):
            size = int.from_bytes(packet.data[pos : pos + length_size], "big")
            pos += length_size
            if size == 0 or pos + size > len(packet.data):
                raise CorruptMediaError("H.264 packet's NAL lengths do not add up (not AVCC?)")
            nals.append(packet.data[pos : pos + size])
            pos += size
        body = b"".join(START_CODE + n for n in nals)
        nal_types = {n[0] & 0x1F for n in nals}
    if packet.keyframe and parameter_sets and not {7, 8} <= nal_types:
        body = b"".join(START_CODE + n for n in parameter_sets) + body
    return body
