"""The console's events timeline and enrol-from-snapshot, through a real server over HTTP.

The snapshot is what the analysis stage keeps (dlib's aligned chip of a real face, as
JPEG) and the events are made by the real event constructor, in the sink's layout.
"""

from __future__ import annotations

import asyncio
import io
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from framepipe.cli.viewing import chip_describer
from framepipe.core import bus, gallery
from framepipe.core.events import APPEARED, make_event
from framepipe.core.gallery import FileGallery
from framepipe.core.settings import Settings
from framepipe.media.sample import ASTRONAUT_FACE
from framepipe.stages.analysis.embedder import FaceEmbedder, read_image
from framepipe.stages.tracking import EVENTS_FILE
from framepipe.web.server import WebServer
from tests.helpers import face_photo

pytest.importorskip("dlib")
TOKEN = "events-console-token"


def _request(url: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _write_track(settings: Settings, camera: str, track: int, chip: np.ndarray[Any, Any]) -> None:
    """What the sink leaves for one track: its snapshot JPEG and its appeared event."""
    camera_dir = Path(settings.sink.output_dir) / camera
    (camera_dir / "snapshots").mkdir(parents=True)
    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, format="JPEG", quality=85)
    (camera_dir / "snapshots" / "000003_0.jpg").write_bytes(buffer.getvalue())
    snapshot = {"gop": 3, "frame": 7, "box": list(ASTRONAUT_FACE), "segment": "seg_000003.ts"}
    events = [
        make_event(APPEARED, camera, track, identity="unknown", distance=0.71, first_seen=1.0,
                   last_seen=2.0, gop=3, snapshot=dict(snapshot, file="snapshots/000003_0.jpg")),
        make_event(APPEARED, camera, track + 1, identity="unknown", distance=None, first_seen=3.0,
                   last_seen=3.0, gop=4, snapshot=dict(snapshot, file=None)),
    ]  # fmt: skip
    (camera_dir / EVENTS_FILE).write_text("".join(json.dumps(e) + "\n" for e in events) + '{"torn')


@pytest.fixture
def server(nats_settings: Settings, tmp_path: Path) -> Any:
    asyncio.run(bus.setup_topology(nats_settings))
    settings = nats_settings.replace(
        analysis={"keep_snapshots": True, "gallery_dir": str(tmp_path / "gallery")},
        web={"require_token": "always", "token": TOKEN},
    )
    embedder = FaceEmbedder()
    photo = read_image(face_photo("obama2.jpg"))
    (box,) = embedder.detect(photo)
    chip = embedder.crop(photo, box).chip
    _write_track(settings, "lobby", 5, chip)
    web = WebServer(settings, port=0, describe=chip_describer()).start()
    try:
        yield web, settings, embedder
    finally:
        web.stop()


class TestEventsConsole:
    """/api/events/<camera> and POST /api/faces/enroll on a real WebServer."""

    def test_timeline_lists_events_with_snapshot_urls_under_the_token(self, server: Any) -> None:
        """The timeline returns the camera's events in order (a torn last line skipped), the kept
        snapshot's URL serves the JPEG; without the token both are 401."""
        web, _, _ = server
        assert _request(web.url + "api/events/lobby", token=None)[0] == 401
        status, body = _request(web.url + "api/events/lobby")
        assert status == 200
        doc = json.loads(body)
        assert [(e["track"], e["type"]) for e in doc["events"]] == [(5, APPEARED), (6, APPEARED)]
        assert doc["events"][0]["snapshot"]["url"] == "/api/events/lobby/snapshots/000003_0.jpg"
        assert "url" not in doc["events"][1]["snapshot"]
        url = web.url + doc["events"][0]["snapshot"]["url"].lstrip("/")
        assert _request(url, token=None)[0] == 401
        status, jpeg = _request(url)
        assert status == 200
        assert jpeg[:2] == b"\xff\xd8"
        assert json.loads(_request(web.url + "api/events/nobody")[1])["events"] == []
        assert b'<script src="/events.js">' in _request(web.url)[1]
        assert b"/api/faces/enroll" in _request(web.url + "events.js")[1]

    def test_enrol_from_a_track_writes_the_gallery_and_the_bucket(
        self, server: Any, nats_settings: Settings
    ) -> None:
        """The enrolled descriptor (from the track's kept chip) matches another photo of the same
        person within dlib's 0.6 and not another man; the file gallery and FP_FACES both hold it."""
        web, settings, embedder = server
        enrol = {"camera": "lobby", "track": 5, "name": "barack"}
        status, body = _request(web.url + "api/faces/enroll", enrol)
        assert status == 200, body
        assert json.loads(body)["photos"] == 1
        (person,) = FileGallery(settings.analysis.gallery_path(settings.local.state_dir)).people()
        assert person.name == "barack"
        assert person.sources == ("lobby/track-5/000003_0.jpg",)

        async def from_bucket() -> gallery.Person | None:
            nc = await bus.connect(nats_settings, "test", retry_initial=False)
            try:
                return await gallery.kv_get(nc.jetstream(), "barack")
            finally:
                await nc.close()

        live = asyncio.run(from_bucket())
        assert live is not None
        np.testing.assert_allclose(live.embeddings, person.embeddings)
        # Another photo of the same man, and another man.
        obama = embedder.enrol(face_photo("obama.jpg"), 40)
        biden = embedder.enrol(face_photo("biden.jpg"), 40)
        index = gallery.GalleryIndex([person], threshold=0.6)
        (same,), (other,) = index.match(obama[None]), index.match(biden[None])
        assert same.known, same
        assert not other.known, other

    def test_enrol_refusals_are_one_line(self, server: Any, nats_settings: Settings, tmp_path: Path) -> None:
        """No snapshot for the track: 404; bad JSON or name: 400; snapshots off: 409 saying how."""
        web, _, _ = server
        cases = [
            ({"camera": "lobby", "track": 6, "name": "x"}, 404, "no kept snapshot"),
            ({"camera": "lobby", "track": 5}, 400, '{"camera"'),
            ({"camera": "lobby", "track": 5, "name": "no spaces"}, 400, "name"),
        ]
        for body, status, text in cases:
            got, reply = _request(web.url + "api/faces/enroll", body)
            assert (got, reply.count(b"\n")) == (status, 1), reply
            assert text in reply.decode()
        off = WebServer(nats_settings.replace(analysis={"gallery_dir": str(tmp_path / "g2")}), port=0).start()
        try:
            got, reply = _request(off.url + "api/faces/enroll", {"camera": "lobby", "track": 5, "name": "x"})
        finally:
            off.stop()
        assert got == 409
        assert reply.count(b"\n") == 1
        assert b"analysis.keep_snapshots = true" in reply
        assert not (tmp_path / "g2").exists()
