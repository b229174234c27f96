"""A camera's measured profile: the GOPs a second it really sends, from its own timestamps.

Feed-forward scaling (:mod:`framepipe.scaling.demand`) sizes each stage from the
cameras' GOP rate, ``fps / gop_frames``. A camera's configuration may say 30 fps
in 1 s GOPs while it sends 15 fps in 2 s GOPs, so the gateway measures it: the
time between the first (lowest) presentation timestamps of consecutive GOPs,
smoothed, is stored with the camera's source state (``FP_SOURCES``) for the
autoscaler to read.
"""

from __future__ import annotations

from fractions import Fraction

from framepipe.media.gop import Gop

#: weight of the newest GOP in the running average (about the last five GOPs count).
SMOOTHING = 0.2


class GopRate:
    """Feed it every GOP the gateway cuts; :attr:`gops_per_s` and :attr:`fps` follow the stream."""

    def __init__(self, smoothing: float = SMOOTHING) -> None:
        self.smoothing = smoothing
        self.gops_per_s = 0.0
        self.fps = 0.0
        self._last_start: int | None = None
        self._last_frames = 0

    def add(self, gop: Gop, time_base: Fraction) -> None:
        if not gop.packets:
            return
        pts = [p.pts for p in gop.packets]
        start = min(pts)
        if gop.discontinuity or self._last_start is None or start <= self._last_start:
            # No previous GOP of the same timeline: this GOP's own span stands in, if it has one.
            self._last_start, self._last_frames = start, len(pts)
            frames = len(pts)
            if self.gops_per_s == 0 and frames > 1 and max(pts) > start:
                interval = float((max(pts) - start) * time_base) * frames / (frames - 1)
                self._blend(1.0 / interval, frames / interval, first=True)
            return
        interval = float((start - self._last_start) * time_base)
        frames = self._last_frames
        self._last_start, self._last_frames = start, len(pts)
        if interval > 0:
            self._blend(1.0 / interval, frames / interval, first=self.gops_per_s == 0)

    def _blend(self, gops_per_s: float, fps: float, *, first: bool) -> None:
        if first:
            self.gops_per_s, self.fps = gops_per_s, fps
            return
        a = self.smoothing
        self.gops_per_s = a * gops_per_s + (1 - a) * self.gops_per_s
        self.fps = a * fps + (1 - a) * self.fps
