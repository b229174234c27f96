"""GOP cutting and decoding on real encoded video (H.264 and HEVC made with PyAV)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from framepipe.core.errors import CorruptMediaError
from framepipe.core.messages import GopMessage
from framepipe.media.codec import decode_gop, encode_segment
from framepipe.media.gop import GopCutter, is_clean_random_access, nal_length_size
from framepipe.media.sample import count_frames
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
from tests.helpers import clip


def _gops(name: str) -> list[GopMessage]:
    container, stream = open_input(str(clip(name)))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base, max_seconds=10.0)
        return [gop_message("cam", g, params) for g in cutter.cut(iter_packets(container, stream))]


@pytest.mark.parametrize(
    "name", ["h264_bframes.mp4", "hevc_odd.mkv", "hevc_open_gop.mkv", "h264_odd_long_gop.mp4"]
)
def test_gops_decode_independently_to_every_frame(name: str) -> None:
    """Each GOP decodes alone, and together they give every frame of the file, in order."""
    gops = _gops(name)
    assert len(gops) >= 1
    total = 0
    for index, gop in enumerate(gops):
        assert gop.gop == index
        assert gop.frame_offset == total
        frames = list(decode_gop(gop))
        assert len(frames) == len(gop.packets)
        assert [f.pts for f in frames] == sorted(f.pts for f in frames)
        total += len(frames)
    assert total == count_frames(clip(name))


def test_closed_gops_are_cut_at_every_idr() -> None:
    """A 3 s clip with 1 s closed GOPs becomes exactly 3 GOP messages."""
    assert [len(g.packets) for g in _gops("h264_bframes.mp4")] == [30, 30, 30]


def test_open_gop_hevc_is_cut_only_at_idr() -> None:
    """x265's open GOP marks CRA pictures as keyframes; cutting there would drop
    the leading pictures, so only the IDR starts a GOP."""
    container, stream = open_input(str(clip("hevc_open_gop.mkv")))
    with container:
        params = stream_params(stream)
        size = nal_length_size(params.codec, params.extradata)
        packets = list(iter_packets(container, stream))
    keyframes = [p for p in packets if p.keyframe]
    clean = [p for p in packets if is_clean_random_access(params.codec, p.data, size, p.keyframe)]
    assert len(keyframes) > len(clean) == 1
    assert len(_gops("hevc_open_gop.mkv")) == 1


def test_garbage_packets_are_corrupt_media() -> None:
    """Bytes that are not H.264 raise CorruptMediaError (the runner's DLQ path)."""
    good = _gops("h264_bframes.mp4")[0]
    bad = GopMessage(**{**good.__dict__, "packets": tuple(b"\xde\xad\xbe\xef" * 50 for _ in good.packets)})
    with pytest.raises(CorruptMediaError):
        list(decode_gop(bad))
    truncated = GopMessage(**{**good.__dict__, "packets": tuple(p[: len(p) // 3] for p in good.packets)})
    with pytest.raises(CorruptMediaError):
        list(decode_gop(truncated))


def test_segment_keeps_frame_count_and_odd_sizes() -> None:
    """An odd-sized GOP encodes to a segment with the same number of frames."""
    import io

    import av

    gop = _gops("h264_odd_long_gop.mp4")[0]
    frames = list(decode_gop(gop))
    data, duration = encode_segment(frames, Fraction(*gop.time_base))
    assert duration == pytest.approx(len(frames) / 30, rel=0.01)
    with av.open(io.BytesIO(data), format="mpegts") as container:
        assert sum(1 for _ in container.decode(video=0)) == len(frames)
