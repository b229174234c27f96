"""Recordings survive restarts: a camera's output folder is kept, and the next run goes on from it.

The local JetStream store is a transit buffer, started empty by every ``framepipe run``; the
recording is the camera's output folder (playlist, segments, ``detections.jsonl``,
``events.jsonl``, and the sink's ``.state/progress.json``). A gateway numbers its GOPs from
the camera's source state in the SOURCES bucket, which a new store does not have, so it
would start again at GOP 0 and overwrite the kept segments. Before a camera's gateway starts,
:func:`seed_source_state` writes the recording's resume point (next GOP, next frame) into
the bucket: the gateway goes on from there and marks its first GOP a discontinuity, which
the sink turns into ``#EXT-X-DISCONTINUITY`` in the same playlist.

``--fresh`` (:func:`remove_recording`) deletes the camera's recording first instead.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from framepipe.core import bus
from framepipe.core.errors import ConfigError
from framepipe.core.settings import Settings
from framepipe.core.sources import SourceState, read_source_state
from framepipe.core.topology import Names
from framepipe.local.progress import read_progress

#: the sink's state folder inside a camera's output (stages.camera_output.STATE_DIR; the sink is a
#: stage, which the local layer does not import).
SINK_STATE = ".state"


@dataclass(frozen=True)
class ResumePoint:
    """Where a kept recording ends: the next GOP and frame numbers, and what it holds."""

    next_gop: int
    next_frame: int
    segments: int


def recording_dir(output_dir: Path, camera: str) -> Path:
    """The camera's output folder, refused in one line if framepipe did not write it."""
    target = output_dir / camera
    if target.exists() and not (target / SINK_STATE).is_dir():
        raise ConfigError(f"{target} exists and was not written by framepipe; choose another --output")
    return target


def resume_point(output_dir: Path, camera: str) -> ResumePoint | None:
    """The kept recording's end, or None when there is none (no segment written yet)."""
    progress = read_progress(output_dir, camera)
    if not progress:
        return None
    next_gop = progress.get("next_gop")
    entries = progress.get("entries")
    if not isinstance(next_gop, int) or next_gop <= 0:
        return None
    segments = len(entries) if isinstance(entries, list) else 0
    return ResumePoint(next_gop, _next_frame(output_dir / camera / SINK_STATE, next_gop), segments)


def _next_frame(state_dir: Path, next_gop: int) -> int:
    """One past the highest frame number of the last GOPs written (a gap has no frames)."""
    for gop in range(next_gop - 1, max(-1, next_gop - 50), -1):
        try:
            meta = json.loads((state_dir / f"{gop:06d}.json").read_text())
        except (OSError, ValueError):
            continue
        frames = [f.get("frame") for f in meta.get("frames", []) if isinstance(f, dict)]
        numbers = [n for n in frames if isinstance(n, int)]
        if numbers:
            return max(numbers) + 1
    return 0


def remove_recording(output_dir: Path, camera: str) -> ResumePoint | None:
    """``--fresh``: delete the camera's recording; return what it held (None if nothing)."""
    target = recording_dir(output_dir, camera)
    if not target.exists():
        return None
    kept = resume_point(output_dir, camera) or ResumePoint(0, 0, 0)
    shutil.rmtree(target)
    return kept


async def _seed(settings: Settings, camera: str, point: ResumePoint) -> bool:
    nc = await bus.connect(settings, "framepipe-supervisor-resume")
    try:
        js = nc.jetstream(timeout=10.0)
        current = await read_source_state(js, camera)
        if current is not None and current.next_gop >= point.next_gop:
            return False  # this system's own numbering is already past the recording
        kv = await js.key_value(Names.SOURCES_BUCKET)
        state = SourceState(camera, "", state="stopped", next_gop=point.next_gop, next_frame=point.next_frame)
        state.first_gop = point.next_gop
        await bus.kv_put(kv, camera, state.to_json())
        return True
    finally:
        await nc.close()


def seed_source_state(settings: Settings, camera: str) -> ResumePoint | None:
    """Make the camera's next gateway go on after its kept recording; the point, if seeded."""
    point = resume_point(Path(settings.sink.output_dir), camera)
    if point is None:
        return None
    return point if asyncio.run(_seed(settings, camera, point)) else None
