"""Recording retention: the sink drops a camera's oldest segments by age or size.

``[sink] retain_hours`` and ``retain_max_gb`` (0 keeps all) apply to each camera's
recording on its own, like a recorder's retention days. A pruning pass removes entries
from the head of the camera's playlist (never the newest one) while the oldest is older
than ``retain_hours`` or the recording is larger than ``retain_max_gb``, then deletes
their files: the segment, its overlay sidecar (``seg_<gop>.json``), the face snapshots
of that GOP and the sink's per-GOP state. ``detections.jsonl`` and ``events.jsonl`` are
kept whole (they are the product logs; trimming them would break the sink's
crash-recovery lengths).

The playlist stays valid as the HLS spec (RFC 8216 6.2.2) asks: ``EXT-X-MEDIA-SEQUENCE``
advances by the number of segments removed and ``EXT-X-DISCONTINUITY-SEQUENCE`` by the
removed segments that carried ``EXT-X-DISCONTINUITY``; a playlist that loses segments is
not of ``PLAYLIST-TYPE:EVENT``. The progress file is written before any file is deleted,
so a sink killed mid-pass leaves files the playlist no longer names (the next pass after a
restart deletes them), never a playlist naming a deleted file.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from framepipe.core.settings import SinkSettings
from framepipe.media.overlay import sidecar_name

SNAPSHOTS = "snapshots"  # tracking.SNAPSHOTS: the sink's face crops, one per tracklet


class Recording(Protocol):
    """What a pass reads and changes of a camera's progress (stages.camera_output.CameraProgress)."""

    next_gop: int
    entries: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    ended: bool
    media_sequence: int | None
    discontinuity_sequence: int
    pruned_segments: int


@dataclass(frozen=True)
class RetentionPolicy:
    max_age_s: float = 0.0
    max_bytes: int = 0

    @classmethod
    def from_settings(cls, sink: SinkSettings) -> RetentionPolicy:
        return cls(sink.retain_hours * 3600.0, round(sink.retain_max_gb * 1e9))

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0 or self.max_bytes > 0


KEEP_ALL = RetentionPolicy()


@dataclass(frozen=True)
class Pruned:
    """What one pass removed from one camera's recording."""

    gops: tuple[int, ...]
    bytes: int
    reasons: tuple[str, ...]
    kept_segments: int
    kept_bytes: int

    def log_fields(self) -> dict[str, Any]:
        return {
            "segments": len(self.gops),
            "gops": f"{self.gops[0]}..{self.gops[-1]}",
            "bytes": self.bytes,
            "reasons": list(self.reasons),
            "kept_segments": self.kept_segments,
            "kept_bytes": self.kept_bytes,
        }


def gop_files(camera_dir: Path, gop: int) -> list[Path]:
    """Every file of one appended GOP that exists: segment, sidecar, snapshots, sink state."""
    state = camera_dir / ".state"
    files = [camera_dir / f"seg_{gop:06d}.ts", camera_dir / sidecar_name(gop)]
    files += [state / f"{gop:06d}.json", state / f"{gop:06d}.gap"]
    if (camera_dir / SNAPSHOTS).is_dir():
        files += (camera_dir / SNAPSHOTS).glob(f"{gop:06d}_*.jpg")
    return [path for path in files if path.exists()]


def recorded(camera_dir: Path, gop: int, now: float | None = None) -> dict[str, Any]:
    """The fields a playlist entry keeps for retention: when it was appended and its bytes."""
    size = sum(p.stat().st_size for p in gop_files(camera_dir, gop) if p.parent.name != ".state")
    return {"at": round(time.time() if now is None else now, 3), "bytes": size}


def _fill_in(camera_dir: Path, entry: dict[str, Any]) -> None:
    """Entries appended before retention existed: the segment file's time and size."""
    if "at" not in entry or "bytes" not in entry:
        segment = camera_dir / entry["uri"]
        at = segment.stat().st_mtime if segment.exists() else 0.0
        entry.setdefault("bytes", recorded(camera_dir, entry["gop"])["bytes"])
        entry.setdefault("at", at)


def prune_head(camera_dir: Path, progress: Recording, policy: RetentionPolicy, now: float) -> Pruned | None:
    """Remove the entries retention no longer keeps from ``progress`` (files untouched)."""
    entries = progress.entries
    if not policy.enabled or len(entries) < 2:
        return None
    for entry in entries:
        _fill_in(camera_dir, entry)
    total = sum(int(e["bytes"]) for e in entries)
    count, removed_bytes, reasons = 0, 0, set()
    while len(entries) - count > 1:  # the newest segment always stays
        head = entries[count]
        if policy.max_age_s and now - float(head["at"]) > policy.max_age_s:
            reasons.add("age")
        elif policy.max_bytes and total - removed_bytes > policy.max_bytes:
            reasons.add("size")
        else:
            break
        removed_bytes += int(head["bytes"])
        count += 1
    if not count:
        return None
    if progress.media_sequence is None:
        progress.media_sequence = entries[0]["gop"]
    removed = entries[:count]
    progress.media_sequence += count
    progress.discontinuity_sequence += sum(1 for e in removed if e["discontinuity"])
    progress.pruned_segments += count
    del entries[:count]
    first_kept = entries[0]["gop"]
    progress.gaps[:] = [g for g in progress.gaps if g["gop"] >= first_kept]
    return Pruned(
        tuple(e["gop"] for e in removed),
        removed_bytes,
        tuple(sorted(reasons)),
        len(entries),
        total - removed_bytes,
    )


def delete_files(camera_dir: Path, gops: Iterable[int]) -> None:
    for gop in gops:
        for path in gop_files(camera_dir, gop):
            path.unlink(missing_ok=True)


def leftover_gops(camera_dir: Path, progress: Recording) -> list[int]:
    """GOPs below the first kept one whose files a pass killed mid-way left behind."""
    if not progress.pruned_segments or not progress.entries:
        return []
    first = progress.entries[0]["gop"]
    found = set()
    for path in (*camera_dir.glob("seg_*.ts"), *(camera_dir / ".state").glob("[0-9]*.*")):
        digits = path.stem.removeprefix("seg_")
        if digits.isdigit() and int(digits) < first:
            found.add(int(digits))
    return sorted(found)


def prune(
    camera_dir: Path,
    progress: Recording,
    policy: RetentionPolicy,
    now: float,
    save: Callable[[], None],
    *,
    sweep: bool = False,
) -> Pruned | None:
    """One pass: ``save`` the pruned progress (and playlist), then delete the files; with
    ``sweep`` also those a pass killed mid-way left behind."""
    leftovers = leftover_gops(camera_dir, progress) if sweep else []
    pruned = prune_head(camera_dir, progress, policy, now)
    if pruned is not None:
        save()
    delete_files(camera_dir, [*leftovers, *(pruned.gops if pruned else ())])
    return pruned


def entry_lines(entry: dict[str, Any]) -> str:
    """One entry's lines in the playlist."""
    mark = "#EXT-X-DISCONTINUITY\n" if entry["discontinuity"] else ""
    return f"{mark}#EXTINF:{entry['duration']:.6f},\n{entry['uri']}\n"


@dataclass
class RenderedEntries:
    """The entries' playlist lines as last rendered, so that the next render of a growing
    recording adds only its new entries and drops only its pruned head: a day's recording
    is 86,400 entries, and rendering them all cost the sink 78 ms per GOP."""

    gops: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    #: each entry's duration in whole seconds, and how many entries have each (the target
    #: duration is the largest).
    seconds: list[int] = field(default_factory=list)
    counts: Counter[int] = field(default_factory=Counter)
    text: str = ""

    def render(self, shown: list[dict[str, Any]]) -> tuple[str, int]:
        """The lines of ``shown`` and their target duration."""
        if shown and self.gops:
            at = bisect.bisect_left(self.gops, shown[0]["gop"])
            if at < len(self.gops) and self.gops[at] == shown[0]["gop"]:
                self._drop_head(at)
            else:
                self._reset()
        cached = len(self.gops)
        # Entries are only appended and pruned from the head, and their GOPs only rise: when
        # both ends match, the cached entries are these.
        if not shown or cached > len(shown) or (cached and shown[cached - 1]["gop"] != self.gops[-1]):
            self._reset()  # not the cached entries and more: render them all
        new = shown[len(self.gops) :]
        if new:
            lines = [entry_lines(e) for e in new]
            seconds = [math.ceil(e["duration"]) for e in new]
            self.gops += [e["gop"] for e in new]
            self.lengths += [len(line) for line in lines]
            self.seconds += seconds
            self.counts.update(seconds)
            self.text += "".join(lines)
        return self.text, max((s for s, n in self.counts.items() if n > 0), default=1)

    def _drop_head(self, count: int) -> None:
        if count:
            self.text = self.text[sum(self.lengths[:count]) :]
            self.counts.subtract(self.seconds[:count])
            del self.gops[:count], self.lengths[:count], self.seconds[:count]

    def _reset(self) -> None:
        self.gops, self.lengths, self.seconds, self.counts, self.text = [], [], [], Counter(), ""


def playlist_text(
    progress: Recording, window: int, retained: bool, rendered: RenderedEntries | None = None
) -> str:
    """The camera's ``index.m3u8``: the recording (or its last ``window`` entries). ``rendered``
    keeps the entries' lines from the last call (the sink keeps one per camera)."""
    entries = progress.entries
    if progress.media_sequence is None and entries:
        progress.media_sequence = entries[0]["gop"]  # fixed from the first entry on
    shown = entries[-window:] if window else entries
    skipped = len(entries) - len(shown)
    first = progress.media_sequence if progress.media_sequence is not None else progress.next_gop
    sequence = first + skipped
    out_of_window = sum(1 for e in entries[:skipped] if e["discontinuity"])
    discontinuities = progress.discontinuity_sequence + out_of_window
    body, target = (rendered or RenderedEntries()).render(shown)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{max(1, target)}",
        f"#EXT-X-MEDIA-SEQUENCE:{sequence}",
    ]
    if discontinuities:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities}")
    if not window and not retained and not progress.pruned_segments:
        lines.append("#EXT-X-PLAYLIST-TYPE:EVENT")  # segments are only ever added
    end = "#EXT-X-ENDLIST\n" if progress.ended else ""
    return "\n".join(lines) + "\n" + body + end
