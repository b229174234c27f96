"""`framepipe export` writes a whole MP4 or nothing, and refuses a recording whose format changed."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framepipe.core.errors import ConfigError, FramepipeError
from framepipe.web.export import check_one_format, remux


def ts_segment(width: int, height: int, frames: int = 10, start: int = 0) -> bytes:
    """A real H.264 MPEG-TS segment like the encoder's (PyAV, libx264)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for index in range(frames):
            image = np.full((height, width, 3), (index * 20) % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = start + index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


class TestCheckOneFormat:
    def test_a_source_change_is_refused_naming_the_gop(self) -> None:
        """640x360 then 320x240 (a camera re-added with another source): one line naming GOP 8."""
        segments = [ts_segment(640, 360), ts_segment(320, 240, start=10)]
        with pytest.raises(ConfigError, match=r"changes format at GOP 8 \(h264 640x360 → h264 320x240"):
            check_one_format([7, 8], segments)

    def test_one_format_passes(self) -> None:
        """Segments of one format are accepted."""
        check_one_format([0, 1], [ts_segment(320, 240), ts_segment(320, 240, start=10)])


class TestRemux:
    def test_writes_a_playable_file_and_no_partial(self, tmp_path: Path) -> None:
        """Two segments → one MP4 with every frame; no temporary file left beside it."""
        out = tmp_path / "clip.mp4"
        remux([ts_segment(320, 240), ts_segment(320, 240, start=10)], out)
        with av.open(str(out)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 20
        assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]

    def test_failure_leaves_no_partial_file_and_keeps_the_old_one(self, tmp_path: Path) -> None:
        """Data that cannot be remuxed: one FramepipeError, no half-written file, the previous
        export at that path untouched."""
        out = tmp_path / "clip.mp4"
        out.write_bytes(b"previous export")
        with pytest.raises(FramepipeError, match="cannot write"):
            remux([b"\x47" + b"garbage" * 1000], out)
        assert out.read_bytes() == b"previous export"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
