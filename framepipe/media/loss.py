"""Frames missing from an input: a hole in the decode timestamps of a damaged file or stream.

Garbage in the middle of an MPEG-TS makes the demuxer skip to the next packet it can
read: the frames in between are gone, and nothing in FFmpeg says so. Their trace is a
step in the decode timestamps several frame durations long. :class:`FrameLossDetector`
learns the stream's frame step and reports how many frames each such hole lost, so the
gateway can log it, count it and start a new GOP marked as a discontinuity.
"""

from __future__ import annotations

from collections import Counter

#: a step this many frame durations long (or more) is a hole, not timing jitter.
HOLE_FACTOR = 2.5
#: steps seen before the frame step is trusted.
LEARN_STEPS = 8


class FrameLossDetector:
    """Feed decode timestamps in decode order; :meth:`push` returns the frames lost before each."""

    def __init__(self) -> None:
        self.steps: Counter[int] = Counter()
        self.last: int | None = None
        self.lost = 0

    @property
    def frame_step(self) -> int | None:
        """The most common step so far; None until ``LEARN_STEPS`` steps were seen."""
        if sum(self.steps.values()) < LEARN_STEPS:
            return None
        return self.steps.most_common(1)[0][0]

    def restart(self) -> None:
        """The timeline restarts (reconnect, timestamp jump): the next step is no hole."""
        self.last = None

    def push(self, dts: int) -> int:
        last, self.last = self.last, dts
        if last is None or dts <= last:
            return 0
        step = dts - last
        frame = self.frame_step
        if frame is not None and step >= HOLE_FACTOR * frame:
            missing = round(step / frame) - 1
            self.lost += missing
            return missing
        self.steps[step] += 1
        return 0
