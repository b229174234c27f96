"""One camera's recording on disk: the segments, the playlist over their contiguous
prefix, detections.jsonl, events.jsonl and the sink's own progress (``.state/``).

The sink (:mod:`framepipe.stages.sink`) writes each segment as it arrives, in any
order, and calls :meth:`CameraOutput.advance` to append what has become contiguous;
everything is in files, so a restarted sink resumes where it left off.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framepipe.core.messages import SegmentMessage
from framepipe.core.recording import PROGRESS_FILE, EntriesJournal, write_atomic
from framepipe.core.settings import AnalysisSettings, Settings
from framepipe.media.overlay import segment_metadata, sidecar_name
from framepipe.stages import retention
from framepipe.stages.tracking import EVENTS_FILE, CameraTracker, face_record

PLAYLIST = "index.m3u8"
DETECTIONS = "detections.jsonl"
STATE_DIR = ".state"


def segment_name(gop: int) -> str:
    return f"seg_{gop:06d}.ts"


@dataclass
class CameraProgress:
    """What has been appended to the playlist so far (``progress.json``; the entries are
    journaled beside it, :mod:`framepipe.core.recording`)."""

    next_gop: int
    entries: list[dict[str, Any]] = field(default_factory=list)
    #: how many of the journal's newest entries (below next_gop) are the playlist's.
    entries_kept: int = 0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    detections_bytes: int = 0
    ended: bool = False
    discontinuity_pending: bool = False
    #: frames the gateway found missing from a damaged input (its source state), once ended.
    lost_frames: int = 0
    #: the camera's tracks (CameraTracker.state), events.jsonl's length, events not yet acked.
    tracks: dict[str, Any] = field(default_factory=dict)
    events_bytes: int = 0
    outbox: list[dict[str, Any]] = field(default_factory=list)
    #: retention (stages/retention.py): the first entry's media sequence number, the
    #: discontinuity sequence, and how many segments were pruned so far.
    media_sequence: int | None = None
    discontinuity_sequence: int = 0
    pruned_segments: int = 0


class CameraOutput:
    def __init__(
        self,
        root: Path,
        camera: str,
        first_gop: int,
        window: int,
        analysis: AnalysisSettings | None = None,
        settings: Settings | None = None,
        policy: retention.RetentionPolicy = retention.KEEP_ALL,
    ) -> None:
        self.dir = root / camera
        self.state_dir = self.dir / STATE_DIR
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.camera = camera
        self.window = window
        self.policy = policy
        self._swept = False  # files a pruning pass killed mid-way left (once per load)
        #: time.monotonic() of the camera's last segment (the sink's watch skips busy cameras).
        self.last_segment_at = 0.0
        self.journal = EntriesJournal(self.state_dir)
        progress_file = self.state_dir / PROGRESS_FILE
        if progress_file.is_file():
            saved = json.loads(progress_file.read_text())
            entries = self.journal.load(saved)
            self.progress = CameraProgress(**saved, entries=entries)
        else:
            self.progress = CameraProgress(next_gop=first_gop)
        #: the entries' playlist lines as last written (an entry does not change once appended).
        self._playlist_lines = retention.RenderedEntries()
        detections = self.dir / DETECTIONS
        # Lines appended after the last saved progress are re-appended on replay.
        with open(detections, "ab") as handle:
            handle.truncate(self.progress.detections_bytes)
        with open(self.dir / EVENTS_FILE, "ab") as handle:
            handle.truncate(self.progress.events_bytes)
        self.tracker = CameraTracker(camera, analysis or AnalysisSettings(), self.progress.tracks, settings)

    def add_segment(self, segment: SegmentMessage) -> None:
        write_atomic(self.dir / segment_name(segment.gop), segment.data)
        write_atomic(self.dir / sidecar_name(segment.gop), json.dumps(segment_metadata(segment)).encode())
        meta = {
            "duration": segment.duration_s,
            "discontinuity": segment.discontinuity,
            "frames": [f.to_wire() for f in segment.frames],
            "faces": [face_record(self.dir, segment.gop, f) for f in segment.faces],
            "video_seq": segment.video_seq,  # an event clip asks the encoder for the GOP again
        }
        write_atomic(self.state_dir / f"{segment.gop:06d}.json", json.dumps(meta).encode())

    def add_gap(self, gop: int, stage: str, reason: str) -> None:
        if gop < self.progress.next_gop or (self.state_dir / f"{gop:06d}.json").exists():
            return
        info = {"gop": gop, "stage": stage, "reason": reason}
        write_atomic(self.state_dir / f"{gop:06d}.gap", json.dumps(info).encode())

    def advance(self) -> int:
        """Append every contiguous GOP; return how many were appended."""
        p = self.progress
        appended = 0
        lines: list[str] = []
        new_events: list[dict[str, Any]] = []
        while True:
            meta_file = self.state_dir / f"{p.next_gop:06d}.json"
            gap_file = self.state_dir / f"{p.next_gop:06d}.gap"
            if meta_file.is_file():
                meta = json.loads(meta_file.read_text())
                p.entries.append(
                    {
                        "gop": p.next_gop,
                        "uri": segment_name(p.next_gop),
                        "duration": meta["duration"],
                        "discontinuity": bool(meta["discontinuity"] or p.discontinuity_pending),
                        **retention.recorded(self.dir, p.next_gop),
                    }
                )
                p.discontinuity_pending = False
                faces = meta.get("faces", [])
                snapshots = {f["local"]: f["snapshot_file"] for f in faces if f.get("snapshot_file")}
                tracks, found = self.tracker.update(p.next_gop, faces, snapshots)
                new_events += found
                for frame in meta["frames"]:
                    for det in frame["detections"]:
                        if "track" in det:  # the GOP's tracklet → the camera's track id
                            det["track"] = tracks.get(det["track"], -1)
                    lines.append(json.dumps({"camera": self.camera, "gop": p.next_gop, **frame}))
            elif gap_file.is_file():
                p.gaps.append(json.loads(gap_file.read_text()))
                p.discontinuity_pending = True
                new_events += self.tracker.update(p.next_gop, [])[1]
            else:
                break
            p.next_gop += 1
            appended += 1
        if appended and p.ended:  # a kept recording goes on (local.resume): it is open again
            p.ended, p.lost_frames = False, 0
        if appended:
            with open(self.dir / DETECTIONS, "a", encoding="utf-8") as handle:
                handle.write("".join(line + "\n" for line in lines))
            p.detections_bytes = (self.dir / DETECTIONS).stat().st_size
            self._add_events(new_events)
            self._save()
        return appended

    def _add_events(self, found: list[dict[str, Any]]) -> None:
        if found:
            with open(self.dir / EVENTS_FILE, "a", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(e) + "\n" for e in found))
            self.progress.outbox.extend(found)
        self.progress.events_bytes = (self.dir / EVENTS_FILE).stat().st_size

    def finish_if_complete(self, source_state: str, source_next_gop: int, lost_frames: int = 0) -> bool:
        p = self.progress
        if not p.ended and source_state == "ended" and p.next_gop >= source_next_gop:
            p.ended, p.lost_frames = True, lost_frames
            self._add_events(self.tracker.finish(p.next_gop - 1))
            self._save()
        return p.ended

    def _save(self) -> None:
        p = self.progress
        p.tracks = self.tracker.state()
        self._write_playlist()
        self.journal.append(p.entries)
        p.entries_kept = len(p.entries)
        saved = {key: value for key, value in p.__dict__.items() if key != "entries"}
        write_atomic(self.state_dir / PROGRESS_FILE, json.dumps(saved).encode())
        self.journal.compact(p.entries)

    def _write_playlist(self) -> None:
        text = retention.playlist_text(self.progress, self.window, self.policy.enabled, self._playlist_lines)
        write_atomic(self.dir / PLAYLIST, text.encode())

    def prune(self, now: float | None = None) -> retention.Pruned | None:
        """Apply retention: the progress and playlist first, then the files."""
        now = time.time() if now is None else now
        pruned = retention.prune(self.dir, self.progress, self.policy, now, self._save, sweep=not self._swept)
        self._swept = True
        return pruned
