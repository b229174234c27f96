"""Encoder codec choice: NVENC when it opens, libx264 otherwise."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from framepipe.media.codec import encode_segment
from framepipe.stages.encoder import NVENC, SOFTWARE, nvenc_available, pick_codec


def test_auto_picks_nvenc_only_when_it_opens() -> None:
    """An explicit codec is kept; "auto" is NVENC only where an NVENC encoder really opens."""
    assert pick_codec("libx264") == "libx264"
    assert pick_codec("auto") == (NVENC if nvenc_available() else SOFTWARE)


@pytest.mark.parametrize("codec", [SOFTWARE, NVENC])
def test_segment_encodes_and_decodes(codec: str) -> None:
    """Ten frames encode to an MPEG-TS segment of the right duration that decodes back to ten frames."""
    if codec == NVENC and not nvenc_available():
        pytest.skip("no usable NVENC here (needs an NVIDIA GPU and driver)")
    frames = []
    for i in range(10):
        image = np.full((128, 160, 3), (i * 20) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = 3000 * i
        frames.append(frame)
    data, duration = encode_segment(frames, Fraction(1, 90000), codec=codec)
    assert duration == pytest.approx(10 / 30)
    with av.open(io.BytesIO(data), format="mpegts") as container:
        assert sum(1 for _ in container.decode(video=0)) == 10
