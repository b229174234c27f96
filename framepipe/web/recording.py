"""A camera's recording on disk, as ``framepipe export`` reads it when no system runs.

The sink keeps each camera's recording in ``<sink.output_dir>/<camera>/``: the segments
its playlist lists (``.state/``'s entries, in GOP order: :mod:`framepipe.core.recording`) and each segment's
sidecar (``seg_<gop>.json``: mode, time base and every frame's detections, what
``--burn-in`` draws). A segment's time is when the sink appended it (``at``; the segment
file's modification time for recordings from before that was kept), which is within a
second of the time the OUTPUT stream stored it, so ``--since``/``--until`` mean the same
thing on both paths.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framepipe.core.errors import ConfigError, SchemaError
from framepipe.core.messages import FrameDetections, SegmentMessage
from framepipe.core.recording import read_progress
from framepipe.media.overlay import sidecar_name


@dataclass(frozen=True)
class RecordedSegment:
    gop: int
    at: float
    file: Path
    duration_s: float
    discontinuity: bool


def recorded_segments(camera_dir: Path) -> list[RecordedSegment]:
    """Every segment the camera's playlist lists, oldest first ([] without a recording)."""
    try:
        progress = read_progress(camera_dir / ".state")
    except (OSError, ValueError):
        return []
    found = []
    for entry in progress.get("entries", []):
        file = camera_dir / str(entry["uri"])
        at = entry.get("at")
        if at is None:
            try:
                at = file.stat().st_mtime
            except OSError:
                continue  # listed but gone (removed by hand): nothing to export of it
        found.append(
            RecordedSegment(
                int(entry["gop"]), float(at), file, float(entry["duration"]), bool(entry["discontinuity"])
            )
        )
    return found


def load_segment(camera: str, segment: RecordedSegment) -> SegmentMessage:
    """The segment as the OUTPUT stream carried it: its bytes, and its sidecar's detections."""
    sidecar: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):  # none: a burn-in segment, nothing to draw
        sidecar = json.loads((segment.file.parent / sidecar_name(segment.gop)).read_text())
    try:
        frames = tuple(FrameDetections.from_wire(f) for f in sidecar.get("frames", []))
    except SchemaError:
        frames = ()
    time_base = sidecar.get("time_base", [0, 1])
    return SegmentMessage(
        camera=camera,
        gop=segment.gop,
        container="mpegts",
        duration_s=segment.duration_s,
        frames=frames,
        data=segment.file.read_bytes(),
        discontinuity=segment.discontinuity,
        mode=str(sidecar.get("mode", "burn-in")),
        time_base=(int(time_base[0]), int(time_base[1])),
    )


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def segments_on_disk(
    camera_dir: Path, camera: str, since: float, until: float, stream: str = ""
) -> dict[int, SegmentMessage]:
    """The recording's segments appended between ``since`` and ``until``, by GOP; a one-line
    ConfigError when there is no recording or none in that range (saying what there is).
    ``stream``: where the OUTPUT stream was read first, for the message ("": no system ran)."""
    recorded = recorded_segments(camera_dir)
    if not recorded:
        where = (
            f"nothing in the OUTPUT stream at {stream} either" if stream else "no framepipe system is running"
        )
        raise ConfigError(
            f"no recording of {camera} in {camera_dir} ({where}): check --camera, and "
            "--output-dir if `run --output` was used"
        )
    chosen = [s for s in recorded if since <= s.at <= until]
    if not chosen:
        raise ConfigError(
            f"the recording of {camera} in {camera_dir} has nothing between {_when(since)} and "
            f"{_when(until)}: it holds {_when(recorded[0].at)} to {_when(recorded[-1].at)} "
            f"({len(recorded)} segments); choose --since/--until within that"
        )
    return {s.gop: load_segment(camera, s) for s in chosen}
