"""An in-memory index of the OUTPUT stream: per camera, which GOP is at which sequence.

Segments arrive in any order (several encoder replicas). The playlist walks
GOP numbers upwards from the camera's first GOP; a GOP that was dead-lettered
(seen on the DLQ) or that stays missing while later GOPs keep arriving for
``hole_timeout_s`` is skipped with ``#EXT-X-DISCONTINUITY``, so a live player
never stalls on a lost GOP. Only the index lives here; segment bytes are read
from the stream on request (no shared filesystem between encoder replicas).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def segment_uri(gop: int) -> str:
    return f"seg_{gop:06d}.ts"


@dataclass(frozen=True)
class Segment:
    gop: int
    seq: int
    duration: float
    discontinuity: bool
    frames: int
    faces: int
    stored_at: float
    arrived: float = 0.0


@dataclass(frozen=True)
class Entry:
    gop: int
    duration: float
    discontinuity: bool


@dataclass
class CameraIndex:
    camera: str
    segments: dict[int, Segment] = field(default_factory=dict)
    gaps: set[int] = field(default_factory=set)
    first_gop: int | None = None
    ended_at_gop: int | None = None

    def entries(self, now: float, hole_timeout_s: float) -> list[Entry]:
        """GOP-ordered segments from the first GOP; holes end the list unless skippable."""
        if not self.segments:
            return []
        gop = self.first_gop if self.first_gop is not None else min(self.segments)
        last = max(self.segments)
        out: list[Entry] = []
        pending_discontinuity = False
        while gop <= last:
            seg = self.segments.get(gop)
            if seg is not None:
                out.append(Entry(gop, seg.duration, seg.discontinuity or pending_discontinuity))
                pending_discontinuity = False
            elif gop in self.gaps or self._stale_hole(gop, now, hole_timeout_s):
                pending_discontinuity = True
            else:
                break
            gop += 1
        return out

    def _stale_hole(self, gop: int, now: float, hole_timeout_s: float) -> bool:
        later = [s.arrived for g, s in self.segments.items() if g > gop]
        return bool(later) and now - min(later) > hole_timeout_s

    def complete(self, entries: list[Entry]) -> bool:
        if self.ended_at_gop is None:
            return False
        covered = entries[-1].gop + 1 if entries else (self.first_gop or 0)
        missing = [g for g in range(covered, self.ended_at_gop) if g not in self.gaps]
        return not missing


def live_segment_uri(gop: int) -> str:
    return f"live_{gop:06d}.ts"


def render_playlist(
    entries: list[Entry], window: int, ended: bool, uri: Callable[[int], str] = segment_uri
) -> str:
    """An HLS media playlist: the whole list once ended, else the live window."""
    shown = entries if ended or not window else entries[-window:]
    skipped = len(entries) - len(shown)
    discontinuities_before = sum(1 for e in entries[:skipped] if e.discontinuity)
    target = max((math.ceil(e.duration) for e in shown), default=1)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{max(1, target)}",
        f"#EXT-X-MEDIA-SEQUENCE:{skipped}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities_before}",
    ]
    if ended:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    for entry in shown:
        if entry.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXTINF:{entry.duration:.6f},")
        lines.append(uri(entry.gop))
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


class OutputIndex:
    """Thread-safe: NATS callbacks write, HTTP handler threads read."""

    #: the segments' names in the playlist (relative to ``/<camera>/``).
    uri: Callable[[int], str] = staticmethod(segment_uri)

    def __init__(self, window: int = 6, hole_timeout_s: float = 10.0) -> None:
        self.window = window
        self.hole_timeout_s = hole_timeout_s
        self._cameras: dict[str, CameraIndex] = {}
        self._lock = threading.Lock()

    def _camera(self, camera: str) -> CameraIndex:
        if camera not in self._cameras:
            self._cameras[camera] = CameraIndex(camera)
        return self._cameras[camera]

    def add_segment(self, camera: str, segment: Segment) -> None:
        with self._lock:
            cam = self._camera(camera)
            if segment.gop not in cam.segments:
                cam.segments[segment.gop] = segment

    def add_gap(self, camera: str, gop: int) -> None:
        with self._lock:
            self._camera(camera).gaps.add(gop)

    def set_source(self, camera: str, first_gop: int, ended_at_gop: int | None) -> None:
        with self._lock:
            cam = self._camera(camera)
            cam.first_gop = first_gop
            cam.ended_at_gop = ended_at_gop

    def cameras(self) -> list[str]:
        with self._lock:
            return sorted(c for c, idx in self._cameras.items() if idx.segments)

    def segment(self, camera: str, gop: int) -> Segment | None:
        with self._lock:
            cam = self._cameras.get(camera)
            return cam.segments.get(gop) if cam else None

    def playlist(self, camera: str, now: float | None = None) -> str | None:
        with self._lock:
            cam = self._cameras.get(camera)
            if cam is None or not cam.segments:
                return None
            entries = cam.entries(time.time() if now is None else now, self.hole_timeout_s)
            return render_playlist(entries, self.window, cam.complete(entries), self.uri)

    def summary(self) -> list[dict[str, object]]:
        """Per camera: segments, latest GOP, faces in the latest segments (for the console)."""
        now = time.time()
        out: list[dict[str, object]] = []
        with self._lock:
            for name in sorted(self._cameras):
                cam = self._cameras[name]
                if not cam.segments:
                    continue
                latest = sorted(cam.segments.values(), key=lambda s: s.gop)[-5:]
                entries = cam.entries(now, self.hole_timeout_s)
                out.append(
                    {
                        "camera": name,
                        "segments": len(cam.segments),
                        "last_gop": latest[-1].gop,
                        "gaps": sorted(cam.gaps),
                        "ended": cam.complete(entries),
                        "frames_with_faces": sum(s.faces for s in latest),
                        "frames": sum(s.frames for s in latest),
                        "detections_total": sum(s.faces for s in cam.segments.values()),
                        "last_segment_at": latest[-1].stored_at,
                    }
                )
        return out


class LiveIndex(OutputIndex):
    """On-demand cameras' burn-in segments (``rendition="live"``): they exist only while
    watched. A run whose newest segment is older than ``stale_after`` is over (its playlist is
    empty again), and a GOP after a gap in a finished run, or far past it, starts a new run (a
    playlist never waits on the hole between two viewers)."""

    uri = staticmethod(live_segment_uri)

    @staticmethod
    def stale_after(newest: Segment) -> float:
        """Seconds without a new live segment after which the watch is over (3 GOPs, >= 6 s)."""
        return max(6.0, 3 * newest.duration)

    def _over(self, cam: CameraIndex, now: float) -> bool:
        newest = cam.segments[max(cam.segments)]
        return now - newest.arrived > self.stale_after(newest)

    def add_segment(self, camera: str, segment: Segment) -> None:
        with self._lock:
            cam = self._camera(camera)
            if cam.segments and segment.gop > max(cam.segments) + 1:
                far = segment.gop > max(cam.segments) + max(self.window, 1)
                if far or self._over(cam, segment.arrived or time.time()):
                    cam.segments.clear()
            if segment.gop not in cam.segments:
                cam.segments[segment.gop] = segment

    def playlist(self, camera: str, now: float | None = None) -> str | None:
        now = time.time() if now is None else now
        with self._lock:
            cam = self._cameras.get(camera)
            if cam is None or not cam.segments or self._over(cam, now):
                return None
        return super().playlist(camera, now)

    def empty_playlist(self) -> str:
        """A live playlist with no segment yet: players reload it until the first arrives."""
        return render_playlist([], self.window, False, self.uri)
