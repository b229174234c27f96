"""The annotated view's catch-up: segments that waited in the feed play faster until the wait is gone.

Real H.264 segments (``tests/web/test_whep.py``'s) through the real :class:`CameraFeed`
onto a real :class:`PacketTrack`; what is checked is the RTP clock the browser plays by
(the step between frames) and the frames themselves, never a wall-clock duration.
"""

from __future__ import annotations

import asyncio
from itertools import pairwise

import av
import pytest

from framepipe.core.errors import ConfigError
from framepipe.core.settings import Settings
from framepipe.media.stamp import read_stamp
from framepipe.web.packet_track import RTP_CLOCK, PacketTrack
from framepipe.web.whep_feed import CameraFeed
from tests.web.test_whep import SEGMENT_SPEC, _segment

FRAMES = SEGMENT_SPEC.gop
#: one frame at 25 fps on the 90 kHz RTP clock.
STEP = RTP_CLOCK // SEGMENT_SPEC.fps


async def _play(feed: CameraFeed, gops: int, *, queue_at_once: bool) -> list[int]:
    """Segments 0..gops-1 through ``feed``; the RTP ticks of every frame. ``queue_at_once``: the
    later segments arrive right after the first frame went out (they wait here about a GOP
    and more), else each one when the previous one's last frame went out (just in time)."""
    segments = [_segment(gop) for gop in range(gops)]  # encoded before the clock starts
    track = PacketTrack()
    feed.tracks.add(track)
    received = []
    try:
        feed.add_segment(0, segments[0])
        received.append(await asyncio.wait_for(track.recv(), 5))
        if queue_at_once:
            for gop in range(1, gops):
                feed.add_segment(gop, segments[gop])
        for gop in range(gops):
            for _ in range(FRAMES - (gop == 0)):
                received.append(await asyncio.wait_for(track.recv(), 5))
            if not queue_at_once and gop + 1 < gops:
                feed.add_segment(gop + 1, segments[gop + 1])
    finally:
        await feed.close()
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for p in received for f in decoder.decode(p)]
    assert [read_stamp(f.to_ndarray(format="rgb24")) for f in frames] == list(range(gops * FRAMES))
    return [int(p.pts) for p in received]


def _all_about(steps: list[int], value: int) -> bool:
    """Every step is ``value`` ticks, give or take the tick rounding."""
    return all(abs(s - value) <= 1 for s in steps)


def _steps_within_segments(ticks: list[int]) -> list[list[int]]:
    """Per segment, the RTP steps between its consecutive frames."""
    return [[b - a for a, b in pairwise(ticks[g : g + FRAMES])] for g in range(0, len(ticks), FRAMES)]


class TestCatchUp:
    async def test_segments_that_waited_play_faster_and_every_frame_still_goes_out(self) -> None:
        """A segment queued a GOP ahead goes out 1.25× faster on the RTP clock (0.032 s a frame),
        timestamps still rise, and every frame is sent in order; the first one plays in real time."""
        feed = CameraFeed("door", catch_up_speed=1.25, catch_up_above_s=0.25)
        ticks = await _play(feed, 2, queue_at_once=True)
        assert all(b > a for a, b in pairwise(ticks)), "RTP timestamps must rise"
        first, *later = _steps_within_segments(ticks)
        assert _all_about(first, STEP), first
        for steps in later:
            assert _all_about(steps, round(STEP / 1.25)), steps
        assert abs(feed.caught_up_s - (FRAMES - 1) * 0.04 * (1 - 1 / 1.25)) < 1e-6

    async def test_off_keeps_real_time_and_just_in_time_segments_are_not_hurried(self) -> None:
        """catch_up_speed 1.0 plays queued segments in real time; with catch-up on, segments that
        arrive within catch_up_above_s of their time are played in real time too."""
        off = CameraFeed("door", catch_up_speed=1.0)
        steps = _steps_within_segments(await _play(off, 2, queue_at_once=True))
        assert _all_about([s for segment in steps for s in segment], STEP)
        assert off.caught_up_s == 0.0
        on = CameraFeed("door", catch_up_speed=1.25, catch_up_above_s=0.25)
        steps = _steps_within_segments(await _play(on, 2, queue_at_once=False))
        assert _all_about([s for segment in steps for s in segment], STEP)
        assert on.caught_up_s == 0.0

    async def test_a_late_segment_restarts_the_clock_so_timestamps_skip_its_lateness(self) -> None:
        """A segment 0.3 s late goes out on a clock restarted at now: the RTP step into it is at
        least its lateness (not one frame, which would put its frames behind their timestamps)."""
        segments = [_segment(0), _segment(1)]
        feed = CameraFeed("door", catch_up_speed=1.25)
        track = PacketTrack()
        feed.tracks.add(track)
        try:
            feed.add_segment(0, segments[0])
            ticks = [int((await asyncio.wait_for(track.recv(), 5)).pts) for _ in range(FRAMES)]
            await asyncio.sleep(0.3)
            feed.add_segment(1, segments[1])
            ticks += [int((await asyncio.wait_for(track.recv(), 5)).pts) for _ in range(FRAMES)]
        finally:
            await feed.close()
        assert ticks[FRAMES] - ticks[FRAMES - 1] >= 0.3 * RTP_CLOCK
        assert _all_about([b - a for a, b in pairwise(ticks[FRAMES:])], STEP)


class TestCatchUpSettings:
    def test_out_of_range_values_are_refused_with_their_name(self) -> None:
        """catch_up_speed outside 1.0..2.0 and a negative catch_up_above_s are one-line ConfigErrors."""
        for values, name in (
            ({"catch_up_speed": 0.5}, "webrtc.catch_up_speed"),
            ({"catch_up_speed": 3.0}, "webrtc.catch_up_speed"),
            ({"catch_up_above_s": -0.1}, "webrtc.catch_up_above_s"),
        ):
            with pytest.raises(ConfigError, match=name):
                Settings().replace(webrtc=values)
        assert Settings().webrtc.catch_up_speed == 1.25
