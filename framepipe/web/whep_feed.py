"""The annotated live view's feed: one camera's OUTPUT segments, in GOP order, on the wall clock.

Nothing is re-encoded: each segment's access units (demuxed, Annex B) go to the
viewers' encoded-frame tracks at the segments' own frame times, so latency is one
GOP (the encoder works per GOP) plus processing. Segments are played in GOP order
(one that arrives out of order is waited for :data:`REORDER_WAIT_S`); a lost GOP or a
camera that restarts re-anchors the clock, so RTP timestamps only rise. The clock is
anchored at the first frame sent and a late segment moves it later, so without more the
view would keep the worst delay it ever saw; a segment that arrives well before its
frames' times (it waited more than ``catch_up_above_s`` here) is played ``catch_up_speed``
times faster until that excess is gone, so the delay follows the pipeline's again. Every
frame is still sent (a WHEP viewer gets every frame, in order; only a feed over
:data:`MAX_QUEUED_SEGMENTS` behind drops GOPs). In overlay
mode (the camera's own video) each frame's boxes go on the viewers' boxes channels
with that frame's timestamp, as the instant view's do (``web/instant.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog

from framepipe.core.errors import CorruptMediaError
from framepipe.media.passthrough import AccessUnit, demux_h264
from framepipe.web.packet_track import RTP_CLOCK, PacketTrack

log = structlog.get_logger("framepipe.web.whep")
#: a segment that arrives out of GOP order is waited for this long before it is skipped
#: (about one GOP: encoder replicas finish neighbouring GOPs up to a GOP apart).
REORDER_WAIT_S = 1.0
#: segments queued beyond this are dropped, oldest first: a live view never falls behind.
MAX_QUEUED_SEGMENTS = 4
#: sending fell this far behind the wall clock (a late segment): restart the clock at now, so
#: the RTP timestamps skip as far as the frames were late. (Sending the late frames at once on
#: the old clock instead makes them arrive in a burst behind their timestamps: the browser's
#: jitter buffer reads that as network jitter and adds its own delay, ~0.7 s in the bench.)
#: The catch-up takes the added delay out again once segments are early.
RESYNC_AFTER_S = 0.1


@dataclass
class _Pending:
    gop: int
    data: bytes
    arrived: float
    #: overlay mode: each frame's detections (wire form) in pts order, sent on the boxes channel.
    frames: list[dict[str, Any]] | None = None


class CameraFeed:
    """One camera's annotated segments, in GOP order and on the wall clock, to its viewers' tracks."""

    def __init__(self, camera: str, catch_up_speed: float = 1.0, catch_up_above_s: float = 0.25) -> None:
        self.camera = camera
        #: 1.0: never play faster; see the module's docstring and webrtc.catch_up_speed.
        self.catch_up_speed = catch_up_speed
        self.catch_up_above_s = catch_up_above_s
        #: seconds of delay taken out by playing faster, in all.
        self.caught_up_s = 0.0
        self.tracks: set[PacketTrack] = set()
        self._pending: dict[int, _Pending] = {}
        self._next_gop: int | None = None
        self._wake = asyncio.Event()
        self._anchor: tuple[float, float] | None = None  # (wall clock, dts) of the clock's start
        self._epoch = time.time()
        self.sent = 0
        self.skipped: list[int] = []
        self.delays: deque[float] = deque(maxlen=100)
        self.captured: dict[int, float] = {}
        self.task = asyncio.ensure_future(self._run())

    def add_segment(self, gop: int, data: bytes, frames: list[dict[str, Any]] | None = None) -> None:
        if self._next_gop is not None and gop < self._next_gop:
            self._skip(gop, "late")  # arrived after a later GOP was sent: a live view skips it
            return
        self._pending[gop] = _Pending(gop, data, time.monotonic(), frames)
        while len(self._pending) > MAX_QUEUED_SEGMENTS:
            self._skip(min(self._pending), "behind")
            del self._pending[min(self._pending)]
        self._wake.set()

    def _skip(self, gop: int, reason: str) -> None:
        self.skipped.append(gop)
        log.warning("whep.gop_skipped", camera=self.camera, gop=gop, reason=reason)

    def add_capture(self, gop: int, stored_at: float) -> None:
        """When the camera's GOP reached VIDEO (≈ when its last frame was captured)."""
        self.captured[gop] = stored_at
        while len(self.captured) > 64:
            del self.captured[min(self.captured)]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def _ready(self) -> _Pending | float | None:
        """The next segment to send, else seconds until the head-of-line wait ends, else None."""
        if not self._pending:
            return None
        first = self._pending[min(self._pending)]
        if self._next_gop is None or first.gop == self._next_gop:
            return self._pending.pop(first.gop)
        waited = time.monotonic() - first.arrived
        if waited >= REORDER_WAIT_S:
            for gop in range(self._next_gop, first.gop):
                self._skip(gop, "missing")  # lost (dead-lettered) or very late
            return self._pending.pop(first.gop)
        return REORDER_WAIT_S - waited

    async def _run(self) -> None:
        while True:
            ready = self._ready()
            if not isinstance(ready, _Pending):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), ready)
                continue
            self._next_gop = ready.gop + 1
            try:
                units = demux_h264(ready.data)
            except CorruptMediaError as exc:
                log.warning("whep.bad_segment", camera=self.camera, gop=ready.gop, error=str(exc))
                continue
            await self._send(ready.gop, units, ready.frames, ready.arrived)

    async def _send(
        self,
        gop: int,
        units: list[AccessUnit],
        frames: list[dict[str, Any]] | None = None,
        arrived: float | None = None,
    ) -> None:
        if not units:
            return
        excess = 0.0  # seconds of this segment's wait here still to take out by playing faster
        last_pts = max(u.pts_s for u in units)
        # Overlay mode: the k-th picture in presentation order is the k-th frame with boxes.
        boxes = dict(zip(sorted(u.pts_s for u in units), frames or [], strict=False))
        for index, unit in enumerate(units):
            now = time.time()
            if self._anchor is None:
                self._anchor = (now, unit.dts_s)
            due = self._anchor[0] + unit.dts_s - self._anchor[1]
            if due < now - RESYNC_AFTER_S or due > now + 5.0:
                self._anchor = (now, unit.dts_s)  # a late segment or a timestamp jump
                due = now
            if index == 0 and arrived is not None and self.catch_up_speed > 1.0:
                held = due - now + time.monotonic() - arrived  # this segment's whole wait here
                excess = max(0.0, held - self.catch_up_above_s)
            if due > now:
                await asyncio.sleep(due - now)
            shown = self._anchor[0] + unit.pts_s - self._anchor[1]
            ticks = round((shown - self._epoch) * RTP_CLOCK)
            for track in list(self.tracks):
                track.offer(unit, ticks)
                if unit.pts_s in boxes:
                    track.send_boxes([boxes[unit.pts_s]], [ticks])
            self.sent += 1
            if excess > 0.0 and index + 1 < len(units):
                # the next frame comes sooner by this much: the clock's anchor moves earlier
                step = max(0.0, units[index + 1].dts_s - unit.dts_s)
                shift = min(excess, step * (1.0 - 1.0 / self.catch_up_speed))
                self._anchor = (self._anchor[0] - shift, self._anchor[1])
                excess -= shift
                self.caught_up_s += shift
            if gop in self.captured:
                self.delays.append(time.time() - (self.captured[gop] - (last_pts - unit.pts_s)))

    def delay_s(self) -> float | None:
        """Median capture-to-send delay of the recent frames (needs the VIDEO timestamps)."""
        return round(statistics.median(self.delays), 3) if self.delays else None
