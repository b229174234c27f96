"""Fit a frame into the model's square input without distorting it."""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Letterbox:
    """How a source frame maps into a ``size``×``size`` model input."""

    size: int
    source_width: int
    source_height: int

    @property
    def scale(self) -> float:
        return min(self.size / self.source_width, self.size / self.source_height)

    @property
    def inner(self) -> tuple[int, int]:
        return (
            max(1, round(self.source_width * self.scale)),
            max(1, round(self.source_height * self.scale)),
        )

    @property
    def pad(self) -> tuple[int, int]:
        width, height = self.inner
        return (self.size - width) // 2, (self.size - height) // 2

    def apply(self, frame: av.VideoFrame, out: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.uint8]:
        """Resize with swscale (area filter) and pad with black to size×size RGB.

        ``out``: a black size×size×3 array to draw into (one frame of a batch that the
        caller allocated with ``np.zeros``), so a GOP's frames land in one tensor
        without a stacking copy; only the picture area is written.
        """
        canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8) if out is None else out
        pad_x, pad_y = self.pad
        width, height = self.inner
        self.picture(frame, out=canvas[pad_y : pad_y + height, pad_x : pad_x + width])
        return canvas

    def picture(
        self, frame: av.VideoFrame, out: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint8]:
        """The picture area alone: the frame resized to :attr:`inner` (height × width × 3 RGB),
        written into ``out`` when given (a row of a batch of pictures)."""
        width, height = self.inner
        resized = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
        out = np.empty((height, width, 3), dtype=np.uint8) if out is None else out
        out[...] = resized.to_ndarray()
        return out

    def apply_array(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Same as :meth:`apply` for an RGB array (tests, still images)."""
        return self.apply(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))

    def to_source(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Model-input pixels → source pixels, clipped to the frame."""
        pad_x, pad_y = self.pad
        s = self.scale
        x1 = min(max((box[0] - pad_x) / s, 0.0), float(self.source_width))
        y1 = min(max((box[1] - pad_y) / s, 0.0), float(self.source_height))
        x2 = min(max((box[2] - pad_x) / s, 0.0), float(self.source_width))
        y2 = min(max((box[3] - pad_y) / s, 0.0), float(self.source_height))
        return x1, y1, x2, y2


def place(pictures: npt.NDArray[np.uint8], size: int, pad: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """A batch of pictures (n × height × width × 3) padded with black into the n × size × size × 3
    model input, the picture's top-left corner at ``pad`` (x, y): what :meth:`Letterbox.apply`
    makes of each frame, from :meth:`Letterbox.picture`'s output."""
    n, height, width, _ = pictures.shape
    pad_x, pad_y = pad
    canvas = np.zeros((n, size, size, 3), dtype=np.uint8)
    canvas[:, pad_y : pad_y + height, pad_x : pad_x + width] = pictures
    return canvas
