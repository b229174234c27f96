"""How far a camera's file source got: the sink's ``progress.json``, and when it is done."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from framepipe.core import recording
from framepipe.local.processes import Managed


@dataclass
class CameraResult:
    camera: str
    complete: bool
    segments: int
    gaps: list[dict[str, object]] = field(default_factory=list)
    playlist: Path | None = None
    reason: str = ""


def read_progress(output_dir: Path, camera: str) -> dict[str, object] | None:
    """The sink's progress file of ``camera`` (None until its first segment)."""
    try:
        data: dict[str, object] = recording.read_progress(output_dir / camera / ".state")
        return data
    except (FileNotFoundError, ValueError):
        return None


def last_error(log_file: Path) -> str:
    """The reason a process gave for failing: its last ``error: ...`` line (the CLI error
    boundary's), else the ``error`` of its last JSON log line that has one; "" if none."""
    try:
        with open(log_file, "rb") as handle:
            handle.seek(max(0, handle.seek(0, 2) - 65536))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ").strip()
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        error = event.get("error") if isinstance(event, dict) else None
        if isinstance(error, str):
            return error
    return ""


class ProgressWatch:
    """Follows one camera until its playlist is closed, its gateway fails, or it stalls."""

    def __init__(self, output_dir: Path, camera: str, stall_timeout: float, first_gop: int = 0) -> None:
        self.output_dir, self.camera, self.stall_timeout = output_dir, camera, stall_timeout
        #: this run's first GOP: a kept recording's earlier GOPs (and its end) are not this run's.
        self.first_gop = first_gop
        self.playlist = output_dir / camera / "index.m3u8"
        self.last_count, self.last_change = -1, time.monotonic()

    def poll(
        self, gateway: Managed, logs: Path, on_progress: Callable[[int], None] | None = None
    ) -> CameraResult | None:
        """The result once there is one; None while the camera is still making progress."""
        camera = self.camera
        progress = read_progress(self.output_dir, camera) or {}
        entries = progress.get("entries", [])
        gaps = progress.get("gaps", [])
        entries = [e for e in entries if e["gop"] >= self.first_gop] if isinstance(entries, list) else []
        gaps_list = [g for g in gaps if g["gop"] >= self.first_gop] if isinstance(gaps, list) else []
        count = len(entries) + len(gaps_list)
        next_gop = progress.get("next_gop")
        ran = self.first_gop == 0 or (isinstance(next_gop, int) and next_gop > self.first_gop)
        this_run_ended = ran and bool(progress.get("ended"))
        if on_progress:
            on_progress(count)
        if count != self.last_count:
            self.last_count, self.last_change = count, time.monotonic()
        if this_run_ended:
            segments = len(entries)
            reason = ""
            if gaps_list:
                reason = (
                    f"GOPs {[g['gop'] for g in gaps_list]} were dead-lettered "
                    f"({', '.join(sorted({str(g['reason']) for g in gaps_list}))}); "
                    "inspect them with `framepipe dlq list` (and `framepipe dlq show SEQ`)"
                )
            lost = progress.get("lost_frames")
            if isinstance(lost, int) and lost > 0:
                reason = "; ".join(
                    filter(None, [reason, f"{lost} frames of the input were lost (damaged input; "
                                  f"gateway.frames_lost in {gateway.log_file})"])
                )  # fmt: skip
                return CameraResult(camera, False, segments, gaps_list, self.playlist, reason)
            return CameraResult(camera, not gaps_list, segments, gaps_list, self.playlist, reason)
        if gateway.process is not None and gateway.process.poll() not in (None, 0):
            return CameraResult(
                camera,
                False,
                max(count, 0),
                gaps_list,
                self.playlist,
                f"the gateway for {camera} failed (exit {gateway.process.returncode})"
                f"{': ' + why if (why := last_error(gateway.log_file)) else ''}; see {gateway.log_file}",
            )
        if time.monotonic() - self.last_change > self.stall_timeout:
            return CameraResult(
                camera,
                False,
                max(count, 0),
                gaps_list,
                self.playlist,
                f"no progress for {self.stall_timeout:.0f}s; see the logs in {logs}",
            )
        return None
