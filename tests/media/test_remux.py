"""Overlay mode's segments: the camera's own GOP remuxed to MPEG-TS, no decode, no encode."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import pytest

from framepipe.core.errors import CorruptMediaError
from framepipe.core.messages import GopMessage
from framepipe.media.gop import GopCutter
from framepipe.media.remux import START_CODE, nal_units, remux_gop
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
from tests.helpers import MEDIA, clip

#: an Annex B source, as an RTSP camera sends it (H.264 in MPEG-TS).
ANNEXB = ClipSpec(width=320, height=240, fps=30, seconds=2.0, gop=15, bframes=2)
#: an HEVC camera (hvcC extradata in MP4): its segments need no HEVC encoder either.
HEVC = ClipSpec(width=320, height=240, fps=30, seconds=1.0, gop=15, bframes=2, codec="libx265")


def _gops(path: Path) -> list[GopMessage]:
    container, stream = open_input(str(path))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base)
        return [gop_message("cam", g, params) for g in cutter.cut(iter_packets(container, stream))]


def _made(name: str, spec: ClipSpec) -> Path:
    path = MEDIA / name
    if not path.is_file():
        make_clip(path, spec)
    return path


def _annexb_clip() -> Path:
    return _made("remux_annexb.ts", ANNEXB)


def _demux(data: bytes) -> list[av.Packet]:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        return [p for p in container.demux(container.streams.video[0]) if p.size]


def _decoded_pts_s(data: bytes) -> list[float]:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        return [float(f.time) for f in container.decode(video=0)]


class TestRemux:
    def test_annexb_packets_are_byte_identical_and_every_frame_decodes(self) -> None:
        """From an Annex B camera (RTSP, TS) each segment's video packets are the source
        GOP's bytes, in order, and decode to every frame at the source's timestamps."""
        gops = _gops(_annexb_clip())
        assert len(gops) == 4
        for gop in gops:
            data, duration = remux_gop(gop)
            assert [bytes(p) for p in _demux(data)] == [bytes(p) for p in gop.packets]
            pts_s = sorted(float(p * Fraction(*gop.time_base)) for p in gop.pts)
            assert _decoded_pts_s(data) == pytest.approx(pts_s, abs=1e-4)
            assert duration == pytest.approx(0.5)

    def test_mp4_source_keeps_every_nal_unit(self) -> None:
        """From an MP4 file (length-prefixed NALs) only the framing changes: each packet is the
        source's NAL units behind start codes (parameter sets before the key frame, and the
        access unit delimiter the TS mapping adds); the segments decode to every frame."""
        gops = _gops(clip("h264_bframes.mp4"))
        total = 0
        for gop in gops:
            data, _ = remux_gop(gop)
            packets = _demux(data)
            assert len(packets) == len(gop.packets)
            for packet, source, key in zip(packets, gop.packets, gop.keyframes, strict=True):
                units = [u for u in bytes(packet).split(START_CODE) if u]
                units = units[1:] if units[0] == b"\x09\xf0" else units  # the AUD
                if key:
                    units = [u for u in units if u[0] & 0x1F not in (7, 8)]  # SPS, PPS
                assert units == nal_units(source, 4)
            total += len(_decoded_pts_s(data))
        assert total == sum(len(g.packets) for g in gops) == 90

    def test_garbage_extradata_is_a_corrupt_media_error(self) -> None:
        """Truncated avcC extradata fails as CorruptMediaError (dead letter), not IndexError."""
        (gop, *_) = _gops(clip("h264_bframes.mp4"))
        broken = GopMessage(**{**gop.__dict__, "extradata": b"\x01\x64\x00"})
        with pytest.raises(CorruptMediaError, match="extradata"):
            remux_gop(broken)

    def test_hevc_source_remuxes_without_opening_an_encoder(self, capfd: pytest.CaptureFixture[str]) -> None:
        """An HEVC camera's segments decode to every frame, and the remux opens no HEVC
        encoder (libx265 reports each open and close on stderr; none is reported)."""
        gops = _gops(_made("remux_hevc.mp4", HEVC))
        capfd.readouterr()
        for gop in gops:
            data, _ = remux_gop(gop)
            assert len(_demux(data)) == len(gop.packets)
            assert len(_decoded_pts_s(data)) == len(gop.packets)
        assert "x265" not in capfd.readouterr().err

    def test_unknown_codec_is_a_corrupt_media_error(self) -> None:
        """A codec FFmpeg does not know dead-letters at once as CorruptMediaError, instead of
        being retried as an unexpected error."""
        (gop, *_) = _gops(_annexb_clip())
        with pytest.raises(CorruptMediaError, match="nonsense"):
            remux_gop(GopMessage(**{**gop.__dict__, "codec": "nonsense"}))
