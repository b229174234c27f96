"""B-frames, seen from the packets: presentation order differs from decode order.

The instant live view sends a camera's packets as they are read (no re-encode), and browsers'
WebRTC H.264 decoders expect no reordering (WebRTC's H.264 is Constrained Baseline: no
B-frames), so a camera that sends B-frames plays badly there: frames shown out of order,
stutter, or nothing. A packet whose pts is lower than one already read (in decode order) is
the sign; a constant pts/dts offset alone (an edit list) is not. The comparison starts afresh
at every keyframe, so a jump back in pts at a reconnect or a looped file (which starts at a
keyframe) is no false alarm, while the B-frames of any GOP, leading ones included, are seen.
"""

from __future__ import annotations

#: what the operator changes on the camera (one line, shown in the gateway's log and the console).
BFRAMES_ADVICE = (
    "the instant view needs a camera stream without B-frames: in the camera's video/encoder "
    "settings set the H.264 profile to Baseline, or B-frames to 0 (GOP structure 'IP'); "
    "the annotated view and the recording are not affected"
)


class ReorderDetector:
    """Feed it each packet's pts in decode order; :attr:`reordered` turns True at the first B-frame."""

    def __init__(self) -> None:
        self.reordered = False
        self._highest: int | None = None

    def see(self, pts: int, keyframe: bool = False) -> bool:
        """True only for the packet that first shows reordering (so a caller can say it once)."""
        if keyframe:
            self._highest = None
        if self._highest is not None and pts < self._highest and not self.reordered:
            self.reordered = True
            return True
        if self._highest is None or pts > self._highest:
            self._highest = pts
        return False
