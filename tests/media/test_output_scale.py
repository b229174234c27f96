"""The encoder's optional output scale and tune (burn-in mode)."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import pytest

from framepipe.core.errors import ConfigError
from framepipe.core.settings import EncoderSettings
from framepipe.media.codec import decode_gop, encode_segment, output_size
from framepipe.media.gop import GopCutter
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
from tests.helpers import clip


class TestOutputScale:
    def test_output_size_keeps_aspect_and_never_scales_up(self) -> None:
        """1080p → 720p keeps 16:9; 0 or a larger height keeps the source; sizes stay even."""
        assert output_size(1920, 1080, 720) == (1280, 720)
        assert output_size(1920, 1080, 0) == (1920, 1080)
        assert output_size(640, 360, 720) == (640, 360)
        assert output_size(641, 361, 0) == (640, 360)

    def test_segment_is_encoded_at_the_output_height(self) -> None:
        """Real 640×360 frames encoded with output_height = 180 (and a tune) decode at 320×180,
        every frame, with the source timestamps."""
        container, stream = open_input(str(clip("h264_bframes.mp4")))
        with container:
            params = stream_params(stream)
            cutter = GopCutter(params.codec, params.extradata, params.time_base)
            gop = gop_message("s", next(iter(cutter.cut(iter_packets(container, stream)))), params)
        frames = list(decode_gop(gop))
        data, _ = encode_segment(frames, Fraction(*gop.time_base), output_height=180, tune="zerolatency")
        with av.open(io.BytesIO(data), format="mpegts") as out:
            decoded = list(out.decode(video=0))
        assert {(f.width, f.height) for f in decoded} == {(320, 180)}
        source_s = [round(float(f.pts * Fraction(*gop.time_base)), 3) for f in frames]
        assert [round(float(f.time), 3) for f in decoded] == source_s

    def test_odd_output_height_is_a_config_error(self) -> None:
        """encoder.output_height must be even: the error names the setting."""
        with pytest.raises(ConfigError, match=r"encoder\.output_height must be even"):
            EncoderSettings(output_height=719)
