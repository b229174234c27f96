"""A camera's tracks across GOPs, followed where per-camera order exists: the sink.

Analysis replicas each see one GOP, in any order; only the sink appends a camera's
GOPs strictly in order (its playlist's contiguous prefix). So the ordered state
lives here: :class:`CameraTracker` links each GOP's face tracklets to the tracks of
the GOPs before it (box overlap across the boundary, else descriptor distance),
keeps one id per person per camera, votes the track's identity over its recent
tracklets and emits the EVENTS. Its state is plain JSON saved in the camera's
``progress.json`` together with the playlist and the byte lengths of
detections.jsonl and events.jsonl, in one atomic write: a restarted sink resumes
with the same tracks, re-appends exactly what was not saved, and re-publishes the
unsent events with the same ids (de-duplicated by the stream).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nats.js import JetStreamContext

from framepipe.core import bus, events
from framepipe.core.errors import ConfigError
from framepipe.core.gallery import UNKNOWN
from framepipe.core.messages import FaceTracklet
from framepipe.core.settings import AnalysisSettings, Settings
from framepipe.core.topology import Names
from framepipe.stages.analysis.attributes import attribute_class
from framepipe.stages.analysis.attributes.base import NO_READING, FaceAttribute, Reading
from framepipe.stages.analysis.tracklets import box_iou

#: tracklets whose votes decide a track's identity: the last few GOPs (a few seconds).
VOTE_WINDOW = 5
EVENTS_FILE = "events.jsonl"
SNAPSHOTS = "snapshots"


def face_record(camera_dir: Path, gop: int, face: FaceTracklet) -> dict[str, Any]:
    """A tracklet as the sink keeps it until its GOP is appended (JSON; the JPEG to a file)."""
    record = face.to_wire()
    record["embedding"] = base64.b64encode(face.embedding).decode()
    record.pop("snapshot")
    if face.snapshot:
        name = f"{SNAPSHOTS}/{gop:06d}_{face.local}.jpg"
        path = camera_dir / name
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(face.snapshot)
        os.replace(tmp, path)
        record["snapshot_file"] = name
    return record


async def publish_events(js: JetStreamContext, camera: str, found: list[dict[str, Any]]) -> None:
    """``events.<camera>``, JSON, each with its event id as ``Nats-Msg-Id``."""
    subject = Names.subject(Names.EVENTS, camera)
    for event in found:
        headers = {"Content-Type": "application/json", "Framepipe-Event": event["type"]}
        await bus.publish(js, subject, json.dumps(event).encode(), headers, event["id"])


@dataclass
class Track:
    id: int
    first_seen: float
    last_seen: float
    first_gop: int
    last_gop: int
    last_frame: int
    last_box: list[float]
    embedding: list[float] | None = None
    recent: list[str] = field(default_factory=list)
    identity: str = UNKNOWN
    distance: float | None = None
    unknown_gops: int = 0
    alerted: bool = False
    named: list[str] = field(default_factory=list)
    snapshot: dict[str, Any] = field(default_factory=dict)
    #: each face attribute's state (``FaceAttribute.follow``) and the alerts already raised.
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)


class _KeptReading(FaceAttribute[None]):
    """How the sink follows an attribute this build does not know: the last reading."""

    name = ""

    def read(self, samples: Any, side: None) -> Reading:
        return NO_READING


def _embedding(face: dict[str, Any]) -> np.ndarray[Any, np.dtype[np.float32]] | None:
    raw = face.get("embedding") or ""
    if not raw:
        return None
    return np.frombuffer(base64.b64decode(raw), dtype="<f4")


class CameraTracker:
    def __init__(
        self,
        camera: str,
        cfg: AnalysisSettings,
        state: dict[str, Any] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.camera = camera
        self.cfg = cfg
        self.settings = settings or Settings(analysis=cfg)
        self._followers: dict[str, FaceAttribute[Any]] = {}
        state = state or {}
        self.next_id: int = int(state.get("next_id", 1))
        self.tracks: list[Track] = [Track(**t) for t in state.get("tracks", [])]

    def state(self) -> dict[str, Any]:
        return {"next_id": self.next_id, "tracks": [asdict(t) for t in self.tracks]}

    def _event(self, kind: str, track: Track, gop: int) -> dict[str, Any]:
        return events.make_event(
            kind,
            self.camera,
            track.id,
            identity=track.identity,
            distance=track.distance,
            first_seen=track.first_seen,
            last_seen=track.last_seen,
            gop=gop,
            snapshot=track.snapshot,
            attributes=self._current(track),
        )

    def _follower(self, name: str) -> FaceAttribute[Any]:
        if name not in self._followers:
            try:
                self._followers[name] = attribute_class(name)(self.settings)
            except ConfigError:
                self._followers[name] = _KeptReading(self.settings)
            self._followers[name].camera = self.camera
        return self._followers[name]

    def _current(self, track: Track) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, state in track.attributes.items():
            reading = self._follower(name).current(state)
            if reading.present:
                out[name] = {"value": reading.value, "confidence": round(reading.confidence, 4)}
        return out

    def _follow(self, track: Track, face: dict[str, Any], gop: int) -> list[dict[str, Any]]:
        """Fold the tracklet's attribute readings into the track; its alerts, once each."""
        readings = {
            r["name"]: Reading(r["value"], float(r.get("confidence", 0.0)))
            for r in face.get("attributes", [])
        }
        raised: list[str] = []
        for name in [*track.attributes, *(n for n in readings if n not in track.attributes)]:
            followed = self._follower(name).follow(
                track.attributes.get(name, {}), readings.get(name, NO_READING)
            )
            track.attributes[name] = dict(followed.state)
            if followed.alert and followed.alert not in track.alerts:
                track.alerts.append(followed.alert)
                raised.append(followed.alert)
        return [self._event(kind, track, gop) for kind in raised]

    def _candidate(self, face: dict[str, Any], gop: int, taken: set[int]) -> Track | None:
        emb = _embedding(face)
        best: tuple[float, Track] | None = None
        for track in self.tracks:
            if track.id in taken:
                continue
            overlap = 0.0
            adjacent = track.last_gop == gop - 1 or (
                track.last_gop == gop and track.last_frame < face["first_frame"]
            )
            if adjacent:
                overlap = box_iou(tuple(track.last_box), tuple(face["first_box"]))  # type: ignore[arg-type]
            score = overlap if overlap >= self.cfg.track_iou else 0.0
            if emb is not None and track.embedding is not None:
                distance = float(np.linalg.norm(emb - np.asarray(track.embedding, np.float32)))
                if distance <= self.cfg.track_reid_distance:
                    score += 1.0 + (self.cfg.track_reid_distance - distance)
            if score > 0 and (best is None or score > best[0]):
                best = (score, track)
        return best[1] if best else None

    def update(
        self, gop: int, faces: list[dict[str, Any]], snapshot_file: dict[int, str] | None = None
    ) -> tuple[dict[int, int], list[dict[str, Any]]]:
        """Link GOP ``gop``'s tracklets (in order); return local → track id and the new events."""
        out: list[dict[str, Any]] = []
        mapping: dict[int, int] = {}
        taken: set[int] = set()
        for face in sorted(faces, key=lambda f: (f["first_frame"], f["local"])):
            track = self._candidate(face, gop, taken)
            snapshot = {
                "gop": gop,
                "frame": int(face.get("best_frame", face["first_frame"])),
                "box": [round(v, 1) for v in face.get("best_box", face["first_box"])],
                "segment": f"seg_{gop:06d}.ts",
                "file": (snapshot_file or {}).get(int(face["local"])),
            }
            appeared = track is None
            if track is None:
                track = Track(
                    id=self.next_id,
                    first_seen=float(face["first_seen"]),
                    last_seen=float(face["last_seen"]),
                    first_gop=gop,
                    last_gop=gop,
                    last_frame=int(face["last_frame"]),
                    last_box=list(face["last_box"]),
                    snapshot=snapshot,
                )
                self.next_id += 1
                self.tracks.append(track)
            taken.add(track.id)
            mapping[int(face["local"])] = track.id
            track.last_seen = max(track.last_seen, float(face["last_seen"]))
            track.last_gop, track.last_frame = gop, int(face["last_frame"])
            track.last_box = list(face["last_box"])
            embedded = int(face.get("crops", 0)) > 0
            if embedded:
                emb = _embedding(face)
                if emb is not None:
                    track.embedding = [round(float(v), 5) for v in emb]
                track.recent = ([*track.recent, face.get("identity") or UNKNOWN])[-VOTE_WINDOW:]
            # The vote first, so that "appeared" already names a person known at once.
            decided = self._revote(track, face, gop, snapshot) if embedded else []
            alerts = self._follow(track, face, gop) if embedded else []
            if appeared:
                out.append(self._event(events.APPEARED, track, gop))
            out.extend(decided)
            out.extend(alerts)
        out.extend(self._expire(gop))
        return mapping, out

    def _revote(
        self, track: Track, face: dict[str, Any], gop: int, snapshot: dict[str, Any]
    ) -> list[dict[str, Any]]:
        known = [name for name in track.recent if name != UNKNOWN]
        unknown = len(track.recent) - len(known)
        out: list[dict[str, Any]] = []
        winner = max(set(known), key=known.count) if known else UNKNOWN
        if winner != UNKNOWN and known.count(winner) >= unknown:
            if face.get("identity") == winner:
                track.distance = float(face.get("distance", -1.0))
                track.snapshot = snapshot
            if winner != track.identity and winner not in track.named:
                track.identity = winner
                track.named.append(winner)
                out.append(self._event(events.IDENTIFIED, track, gop))
            track.identity = winner
            return out
        if track.identity == UNKNOWN:
            track.distance = float(face.get("distance", -1.0))
            track.unknown_gops += 1
            if track.unknown_gops >= self.cfg.unknown_alert_after_gops and not track.alerted:
                track.alerted = True
                out.append(self._event(events.UNKNOWN_ALERT, track, gop))
        return out

    def _expire(self, gop: int) -> list[dict[str, Any]]:
        gone = [t for t in self.tracks if t.last_gop < gop - self.cfg.track_max_gap_gops]
        self.tracks = [t for t in self.tracks if t not in gone]
        return [self._event(events.LEFT, t, gop) for t in gone]

    def finish(self, gop: int) -> list[dict[str, Any]]:
        """The camera ended: every track has left."""
        gone, self.tracks = self.tracks, []
        return [self._event(events.LEFT, t, gop) for t in gone]
