"""Faces within one GOP: link detections frame to frame, choose the crops worth embedding.

Everything here works on boxes alone, before any pixel is decoded, so a GOP without
faces is never read from VIDEO, and a GOP with faces only has the chosen frames
converted and embedded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framepipe.core.messages import Detection, FrameDetections

Box = tuple[float, float, float, float]


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def face_side(box: Box) -> float:
    return min(box[2] - box[0], box[3] - box[1])


@dataclass
class Sighting:
    """One detection of a tracklet: the frame (source index), its pts and the detection."""

    frame: int
    pts: int
    index: int  # position in that frame's detections
    detection: Detection


@dataclass
class Tracklet:
    local: int
    sightings: list[Sighting] = field(default_factory=list)

    @property
    def last(self) -> Sighting:
        return self.sightings[-1]


def link(frames: tuple[FrameDetections, ...], min_iou: float) -> list[Tracklet]:
    """Greedy frame-to-frame association by IoU, in frame order."""
    open_tracks: list[Tracklet] = []
    done: list[Tracklet] = []
    for frame in sorted(frames, key=lambda f: f.frame):
        pairs = sorted(
            (
                (box_iou(track.last.detection.box, det.box), t, d)
                for t, track in enumerate(open_tracks)
                for d, det in enumerate(frame.detections)
            ),
            reverse=True,
        )
        taken_tracks: set[int] = set()
        taken_dets: set[int] = set()
        for overlap, t, d in pairs:
            if overlap < min_iou or t in taken_tracks or d in taken_dets:
                continue
            taken_tracks.add(t)
            taken_dets.add(d)
            open_tracks[t].sightings.append(Sighting(frame.frame, frame.pts, d, frame.detections[d]))
        still_open = [track for t, track in enumerate(open_tracks) if t in taken_tracks]
        done.extend(track for t, track in enumerate(open_tracks) if t not in taken_tracks)
        for d, det in enumerate(frame.detections):
            if d not in taken_dets:
                still_open.append(Tracklet(-1, [Sighting(frame.frame, frame.pts, d, det)]))
        open_tracks = still_open
    tracks = sorted(done + open_tracks, key=lambda t: (t.sightings[0].frame, t.sightings[0].index))
    for local, track in enumerate(tracks):
        track.local = local
    return tracks


def choose_crops(track: Tracklet, count: int, min_side: float) -> list[Sighting]:
    """Up to ``count`` sightings to embed: the best (side × score) of each of ``count``
    equal stretches of the tracklet, so the crops are spread over the GOP; faces
    narrower than ``min_side`` are never chosen."""
    usable = [s for s in track.sightings if face_side(s.detection.box) >= min_side]
    if not usable:
        return []
    chosen: list[Sighting] = []
    stretch = max(1, -(-len(usable) // count))
    for start in range(0, len(usable), stretch):
        part = usable[start : start + stretch]
        chosen.append(max(part, key=lambda s: face_side(s.detection.box) * s.detection.score))
    return chosen[:count]
