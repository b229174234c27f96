"""Drawing detections: straight into YUV 4:2:0 planes looks like drawing in RGB."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt
import pytest

from framepipe.core.messages import Detection
from framepipe.media.annotate import BOX_COLOUR, draw_detections, draw_detections_yuv420, rgb_to_yuv

BOXES = (Detection((101.3, 203.7, 401.2, 515.5), 0.94), Detection((900.0, 10.0, 1270.0, 300.0), 0.5))


def _noise_frame(fmt: str) -> av.VideoFrame:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=fmt)
    frame.pts = 1234
    return frame


def _rgb(frame: av.VideoFrame) -> npt.NDArray[np.int16]:
    return frame.to_ndarray(format="rgb24").astype(np.int16)  # type: ignore[no-any-return]


@pytest.mark.parametrize("fmt", ["yuv420p", "yuvj420p"])
def test_yuv420_drawing_matches_rgb_drawing(fmt: str) -> None:
    """Boxes and labels painted into the planes come out (after conversion) within a few
    levels of the same drawing done in RGB; pixels two or more away from any drawn pixel
    are untouched (4:2:0 chroma is shared by 2×2 blocks, so only the rim can change)."""
    frame = _noise_frame(fmt)
    before = _rgb(frame)
    expected = before.astype(np.uint8)
    draw_detections(expected, BOXES)
    drawn_mask = np.any(expected != before, axis=2)
    assert drawn_mask.sum() > 10_000

    result = draw_detections_yuv420(frame, BOXES)
    assert result is frame  # painted in place, no new frame
    after = _rgb(result)
    inside = np.abs(after - expected.astype(np.int16)).max(axis=2)[drawn_mask]
    assert np.percentile(inside, 95) <= 4

    near = drawn_mask.copy()
    for dy in (-2, -1, 0, 1, 2):
        for dx in (-2, -1, 0, 1, 2):
            near |= np.roll(np.roll(drawn_mask, dy, axis=0), dx, axis=1)
    assert np.array_equal(after[~near], before[~near])


def test_other_formats_are_drawn_through_rgb() -> None:
    """A 4:4:4 frame is not painted in place: it is drawn in RGB and keeps its pts."""
    frame = _noise_frame("yuv444p")
    result = draw_detections_yuv420(frame, BOXES)
    assert result is not frame
    assert result.pts == 1234
    x1, y1 = 101, 204
    assert np.abs(_rgb(result)[y1 + 1, x1 + 40] - BOX_COLOUR.astype(np.int16)).max() <= 2


def test_rgb_to_yuv_ranges() -> None:
    """BT.601: white is Y 235 in limited range and 255 in full range, grey has neutral chroma."""
    assert rgb_to_yuv(np.array([255, 255, 255], dtype=np.uint8)) == (235, 128, 128)
    assert rgb_to_yuv(np.array([255, 255, 255], dtype=np.uint8), full_range=True) == (255, 128, 128)
    assert rgb_to_yuv(np.array([0, 0, 0], dtype=np.uint8)) == (16, 128, 128)
