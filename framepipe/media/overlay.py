"""Timed metadata of a segment: its detections per frame, as a sidecar JSON file.

An overlay segment is the camera's own video, so its boxes travel beside it:
``seg_<gop>.json`` next to ``seg_<gop>.ts`` (written by the sink, served by the web
server) holds every frame's pts and detections in source pixels. ``t`` is the frame's
time from the segment's first presentation time, which is what a player knows about a
segment (hls.js: the fragment's start on ``video.currentTime``'s timeline), so the console
draws the boxes of the frame on screen whatever offset the player put on the timeline.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from framepipe.core.messages import SegmentMessage

SIDECAR_VERSION = 1


def sidecar_name(gop: int) -> str:
    return f"seg_{gop:06d}.json"


def segment_metadata(segment: SegmentMessage) -> dict[str, Any]:
    """The sidecar of one segment (JSON-ready)."""
    pts = [f.pts for f in segment.frames]
    start = min(pts) if pts else 0
    tb = Fraction(*segment.time_base) if segment.time_base != (0, 1) else None
    frames = []
    for f in sorted(segment.frames, key=lambda f: f.pts):
        entry: dict[str, Any] = {
            "frame": f.frame,
            "pts": f.pts,
            "detections": [d.to_wire() for d in f.detections],
        }
        if tb is not None:
            entry["t"] = round(float((f.pts - start) * tb), 6)
        frames.append(entry)
    return {
        "version": SIDECAR_VERSION,
        "camera": segment.camera,
        "gop": segment.gop,
        "mode": segment.mode,
        "time_base": list(segment.time_base),
        "start_pts": start,
        "duration": segment.duration_s,
        "frames": frames,
    }
