"""The console's events timeline and enrol-from-snapshot (``/api/events/…``, ``/api/faces/enroll``).

The timeline reads ``<sink.output_dir>/<camera>/events.jsonl``, the sink's copy of the
EVENTS stream (one event per line, in the order the sink emitted them), so it needs the
sink's output directory: the local system's, or the output volume in a cluster. Each
event's ``snapshot`` (GOP, frame, box, segment) gains ``url`` when the sink kept a JPEG
of the track's best crop (``analysis.keep_snapshots``).

Enrolling from a track takes the JPEG of that track's latest event that has one: the
JPEG is dlib's aligned 150×150 chip, so its descriptor is the network's output on it,
the same computation the analysis stage does (``describe``, injected by whoever starts
the server: the web layer knows no stage). The record goes to the file gallery and to
``FP_FACES`` like ``framepipe faces enroll``.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from framepipe.core import gallery
from framepipe.core.errors import ConfigError
from framepipe.core.gallery import FileGallery, Person
from framepipe.core.settings import Settings
from framepipe.core.topology import CAMERA_NAME

EVENTS_PATH = re.compile(r"^/api/events/([A-Za-z0-9_-]{1,64})$")
SNAPSHOT_PATH = re.compile(r"^/api/events/([A-Za-z0-9_-]{1,64})/(snapshots/\d{1,12}_\d{1,6}\.jpg)$")
ENROLL_PATH = "/api/faces/enroll"
#: the newest events the timeline returns per camera.
TIMELINE_LIMIT = 200
#: an RGB chip in, its 128-D descriptor out (the analysis stage's network).
Describe = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    @classmethod
    def text(cls, status: int, line: str) -> Reply:
        return cls(status, "text/plain", (line + "\n").encode())

    @classmethod
    def json(cls, status: int, document: Any) -> Reply:
        return cls(status, "application/json", json.dumps(document).encode())


def camera_dir(settings: Settings, camera: str) -> Path:
    return Path(settings.sink.output_dir) / camera


def read_events(settings: Settings, camera: str) -> list[dict[str, Any]]:
    """Every event of ``camera`` the sink wrote, oldest first (a torn last line is skipped)."""
    path = camera_dir(settings, camera) / "events.jsonl"
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # the line the sink is writing right now
        if isinstance(event, dict):
            events.append(event)
    return events


def timeline(settings: Settings, camera: str, limit: int = TIMELINE_LIMIT) -> Reply:
    """``GET /api/events/<camera>``: the newest ``limit`` events, oldest first."""
    events = read_events(settings, camera)[-limit:]
    for event in events:
        snapshot = event.get("snapshot")
        file = snapshot.get("file") if isinstance(snapshot, dict) else None
        if file and isinstance(snapshot, dict) and (camera_dir(settings, camera) / str(file)).is_file():
            snapshot["url"] = f"/api/events/{camera}/{file}"
    return Reply.json(
        200, {"camera": camera, "events": events, "snapshots": settings.analysis.keep_snapshots}
    )


def snapshot(settings: Settings, camera: str, relative: str) -> Reply:
    """``GET /api/events/<camera>/snapshots/<gop>_<n>.jpg`` (the name is checked by the route)."""
    path = camera_dir(settings, camera) / relative
    if not path.is_file():
        return Reply.text(404, "no such snapshot (the sink keeps them only with analysis.keep_snapshots)")
    return Reply(200, "image/jpeg", path.read_bytes())


def track_snapshot(settings: Settings, camera: str, track: int) -> Path | None:
    """The JPEG of ``track``'s latest event that has one."""
    for event in reversed(read_events(settings, camera)):
        file = (event.get("snapshot") or {}).get("file")
        if event.get("track") == track and file:
            path = camera_dir(settings, camera) / str(file)
            if path.is_file():
                return path
    return None


def parse_enrolment(body: bytes) -> tuple[str, int, str]:
    """``{"camera": C, "track": N, "name": P}`` → (camera, track, name); ConfigError otherwise."""
    try:
        data = json.loads(body or b"{}")
        camera, track, name = str(data["camera"]), int(data["track"]), str(data["name"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            'send JSON {"camera": "<camera>", "track": <track id>, "name": "<person>"}'
        ) from None
    if not CAMERA_NAME.match(camera):
        raise ConfigError(f"camera {camera!r}: use letters, digits, '_' and '-' (at most 64)")
    return camera, track, gallery.validate_person_name(name)


def enrol_person(
    settings: Settings, body: bytes, describe: Describe | None, live: Callable[[str], Person | None]
) -> tuple[Reply, Person | None]:
    """``POST /api/faces/enroll``: the person (``live``'s record of the name, else the file
    gallery's) with this track's descriptor added, written to the file gallery (the caller
    puts it in ``FP_FACES``), or a one-line refusal."""
    if not settings.analysis.keep_snapshots:
        return Reply.text(
            409,
            "no snapshots are kept, so a track has no crop to enrol from: set analysis.keep_snapshots "
            "= true (FRAMEPIPE_ANALYSIS__KEEP_SNAPSHOTS=true) and restart, or use `framepipe faces enroll`",
        ), None
    try:
        camera, track, name = parse_enrolment(body)
    except ConfigError as exc:
        return Reply.text(400, str(exc)), None
    path = track_snapshot(settings, camera, track)
    if path is None:
        return Reply.text(
            404, f"track {track} of {camera} has no kept snapshot (yet): pick a track from the timeline"
        ), None
    if describe is None:
        return Reply.text(
            503, "this server cannot compute face descriptors: start it with `framepipe web`"
        ), None
    from PIL import Image

    with Image.open(io.BytesIO(path.read_bytes())) as image:
        chip = np.asarray(image.convert("RGB"))
    descriptor = describe(chip)
    source = f"{camera}/track-{track}/{path.name}"
    person = Person(name, descriptor.reshape(1, -1).astype(np.float32), (source,))
    files = FileGallery(settings.analysis.gallery_path(settings.local.state_dir))
    existing = live(name) or next((p for p in files.people() if p.name == name), None)
    merged = gallery.merge(person, existing)
    files.put(merged)
    reply = {
        "name": name,
        "camera": camera,
        "track": track,
        "photos": len(merged.embeddings),
        "source": source,
    }
    return Reply.json(200, reply), merged
