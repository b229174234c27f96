"""Real-time pacing: a file source played as if it were a live camera (``pacing = "realtime"``)."""

from __future__ import annotations

import time
from fractions import Fraction

from framepipe.media.gop import Gop


class RealtimePacer:
    """How long to hold each GOP so it goes out when its last frame is due on the wall clock.

    The clock is anchored at the first GOP after :meth:`restart` (a new input) and
    re-anchored after a discontinuity or when a GOP would be due more than
    ``resync_after_s`` from now (a timestamp jump), so one jump never stalls the source.
    """

    def __init__(self, resync_after_s: float) -> None:
        self.resync_after_s = resync_after_s
        self._clock_start: float | None = None
        self._pts_start: int | None = None

    def restart(self) -> None:
        """A new input: anchor the clock at its first GOP."""
        self._clock_start = self._pts_start = None

    def delay(self, gop: Gop, time_base: Fraction) -> float:
        """Seconds to wait before publishing ``gop`` (never negative)."""
        first_pts, last_pts = min(p.pts for p in gop.packets), max(p.pts for p in gop.packets)
        if self._clock_start is None or self._pts_start is None:
            self._clock_start, self._pts_start = time.monotonic(), first_pts
        due = self._clock_start + float((last_pts - self._pts_start) * time_base)
        wait = due - time.monotonic()
        if wait > self.resync_after_s or gop.discontinuity:
            self._clock_start, self._pts_start = time.monotonic(), first_pts
            wait = float((last_pts - first_pts) * time_base)
        return max(0.0, wait)
