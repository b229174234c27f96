"""``framepipe export --burn-in``: an annotated MP4 from any recording, overlay included.

Overlay segments are the camera's own video; their boxes are in the segment's frames
(the sidecar's data). This decodes each segment, draws the boxes of each frame (matched by
presentation time: remuxing keeps the source's timestamps) with the encoder's own painter,
and encodes one MP4 with the ``[encoder]`` settings. Burn-in segments already show their
boxes and are re-encoded as they are.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av

from framepipe.core.messages import Detection, SegmentMessage
from framepipe.core.settings import EncoderSettings
from framepipe.media.annotate import draw_detections_yuv420
from framepipe.media.codec import output_size

#: MPEG-TS timestamps are in 1/90000 s.
TS_TIME_BASE = Fraction(1, 90000)


def _boxes_by_time(segment: SegmentMessage) -> dict[int, tuple[Detection, ...]]:
    """Detections per presentation time in 90 kHz ticks (empty unless boxes must be drawn)."""
    if segment.mode != "overlay" or segment.time_base == (0, 1):
        return {}
    tb = Fraction(*segment.time_base)
    return {round(f.pts * tb / TS_TIME_BASE): f.detections for f in segment.frames if f.detections}


def burn_in(segments: list[SegmentMessage], out: Path, encoder: EncoderSettings) -> float:
    """Segments in GOP order → one annotated H.264 MP4; returns its duration in seconds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if encoder.codec == "auto" else encoder.codec
    first: int | None = None
    last = 0
    with av.open(str(out), "w", format="mp4") as target:
        stream: av.VideoStream | None = None
        for segment in segments:
            boxes = _boxes_by_time(segment)
            with av.open(io.BytesIO(bytes(segment.data)), "r", format="mpegts") as source:
                for frame in source.decode(video=0):
                    if frame.pts is None:
                        continue
                    if stream is None:
                        added = target.add_stream(codec, rate=30)
                        assert isinstance(added, av.VideoStream)
                        stream = added
                        stream.width, stream.height = output_size(
                            frame.width, frame.height, encoder.output_height
                        )
                        stream.pix_fmt = "yuv420p"
                        stream.codec_context.time_base = TS_TIME_BASE
                        if codec == "libx264":
                            stream.options = {"preset": encoder.preset, "crf": str(encoder.crf)}
                    # A tick of slack either way: 90 kHz rounding of the source's time base.
                    found = next(
                        (boxes[t] for t in (frame.pts, frame.pts - 1, frame.pts + 1) if t in boxes), ()
                    )
                    pts = frame.pts
                    if found:
                        frame = draw_detections_yuv420(frame.reformat(format="yuv420p"), found)
                    frame = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
                    frame.pts, frame.time_base = pts, TS_TIME_BASE
                    first = pts if first is None else min(first, pts)
                    last = max(last, pts)
                    for packet in stream.encode(frame):
                        target.mux(packet)
        if stream is not None:
            for packet in stream.encode(None):
                target.mux(packet)
    return float((last - (first or 0)) * TS_TIME_BASE)
