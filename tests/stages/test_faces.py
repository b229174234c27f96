"""Face recognition parts on real photos: enrolment, the gallery, tracklets, tracks, events."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from PIL import Image
from typer.testing import CliRunner

from framepipe.cli.app import app
from framepipe.core import gallery
from framepipe.core.events import APPEARED, EVENT_SCHEMA, IDENTIFIED, LEFT, UNKNOWN_ALERT, check_event
from framepipe.core.gallery import FileGallery, GalleryIndex, Person
from framepipe.core.messages import Detection, FaceTracklet, FrameDetections
from framepipe.core.settings import AnalysisSettings, Settings
from framepipe.core.topology import Names
from framepipe.media.sample import astronaut
from framepipe.stages.analysis.embedder import EnrolmentError, FaceEmbedder
from framepipe.stages.analysis.stage import jpeg
from framepipe.stages.analysis.tracklets import choose_crops, link
from framepipe.stages.analysis.watch import GalleryWatch
from framepipe.stages.camera_output import CameraOutput
from framepipe.stages.sink import OutputWriter
from framepipe.stages.tracking import CameraTracker, face_record
from tests.helpers import PORTRAIT_CROPS, face_photo


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


@pytest.fixture(scope="module")
def descriptors(embedder: FaceEmbedder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    astro = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(astronaut()).save(astro)
    photos = {n: face_photo(f"{n}.jpg") for n in ("obama", "obama2", "biden")} | {"astronaut": astro}
    return {name: embedder.enrol(path, 40) for name, path in photos.items()}


class TestEnrolment:
    """One face per photo, or a one-line error saying what to do."""

    def test_same_person_in_two_photos_is_near_others_are_far(self, descriptors: dict[str, Any]) -> None:
        """dlib's descriptor: two photos of Obama < 0.6 apart; Biden and the astronaut > 0.6."""
        d = {k: np.asarray(v) for k, v in descriptors.items()}
        assert np.linalg.norm(d["obama"] - d["obama2"]) < 0.5
        for other in ("biden", "astronaut"):
            assert np.linalg.norm(d["obama"] - d[other]) > 0.7
            assert np.linalg.norm(d["obama2"] - d[other]) > 0.7

    def test_bad_photos_are_refused(self, embedder: FaceEmbedder, tmp_path: Path) -> None:
        """Corrupt file, no face (coffee cup), two faces (two portraits side by side), tiny face."""
        corrupt = tmp_path / "corrupt.jpg"
        corrupt.write_bytes(face_photo("obama.jpg").read_bytes()[:3000])
        faceless = tmp_path / "coffee.png"
        from skimage import data

        Image.fromarray(data.coffee()).save(faceless)  # type: ignore[no-untyped-call]
        two = tmp_path / "two.jpg"
        pair = Image.new("RGB", (800, 400))
        for i, name in enumerate(("obama2.jpg", "biden.jpg")):
            with Image.open(face_photo(name)) as photo:
                pair.paste(photo.convert("RGB").crop(PORTRAIT_CROPS[name]).resize((400, 400)), (400 * i, 0))
        pair.save(two)
        tiny = tmp_path / "tiny.png"
        Image.fromarray(astronaut()).resize((110, 110)).save(tiny)
        cases = {
            corrupt: "cannot read it as an image",
            faceless: "no face found",
            two: "2 faces found",
            tiny: "px wide, at least 40px",
            tmp_path / "missing.jpg": "no such file",
        }
        for path, message in cases.items():
            with pytest.raises(EnrolmentError, match=message):
                embedder.enrol(path, 40)

    def test_cli_enroll_list_remove_without_a_system(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`framepipe faces` with no system: the file store; bad input is one line, exit 2."""
        monkeypatch.setenv("FRAMEPIPE_LOCAL__STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("FRAMEPIPE_NATS__URL", "nats://127.0.0.1:9")  # nothing listens there
        runner = CliRunner()
        result = runner.invoke(app, ["faces", "enroll", "obama", str(face_photo("obama.jpg"))])
        assert result.exit_code == 0, result.output
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"not a photo")
        result = runner.invoke(app, ["faces", "enroll", "nobody", str(bad)])
        assert result.exit_code == 2
        assert len(result.output.strip().splitlines()) == 1
        assert "cannot read it" in result.output
        listed = runner.invoke(app, ["faces", "list"]).output
        assert listed.startswith("obama\t1\t")
        assert "file" in listed
        assert runner.invoke(app, ["faces", "remove", "obama"]).exit_code == 0
        assert runner.invoke(app, ["faces", "remove", "obama"]).exit_code == 2
        assert FileGallery(tmp_path / "state" / "faces").people() == []


class TestGalleryIndex:
    """One matmul + argmin gives dlib's Euclidean nearest person."""

    def test_matches_brute_force_on_10000_entries(self) -> None:
        """10 000 random people: the same nearest rows and distances as a Python loop."""
        rng = np.random.default_rng(7)
        people = [Person(f"p{i}", rng.normal(0, 0.09, (1, 128)).astype(np.float32)) for i in range(10_000)]
        index = GalleryIndex(people, threshold=0.6)
        queries = np.stack([people[5].embeddings[0] + 0.01, rng.normal(0, 0.09, 128)]).astype(np.float32)
        matches = index.match(queries)
        rows = np.concatenate([p.embeddings for p in index.people])
        for query, match in zip(queries, matches, strict=True):
            distances = np.linalg.norm(rows - query, axis=1)
            assert match.distance == pytest.approx(float(distances.min()), abs=1e-4)
        assert matches[0].name == "p5"
        assert matches[1].name == "unknown"  # random vectors are ~1.3 apart

    def test_real_faces_and_an_empty_gallery(self, descriptors: dict[str, Any]) -> None:
        """Obama's second photo finds him; Biden is unknown; nobody is enrolled: unknown."""
        index = GalleryIndex([Person("obama", descriptors["obama"][None, :])])
        near, far = index.match(np.stack([descriptors["obama2"], descriptors["biden"]]))
        assert (near.name, far.name) == ("obama", "unknown")
        assert near.distance < 0.6 < far.distance
        assert GalleryIndex([]).match(descriptors["obama"])[0].name == "unknown"

    def test_records_round_trip_and_names_are_checked(self, tmp_path: Path) -> None:
        """JSON records keep the float32 descriptors exactly; bad names are config errors."""
        person = Person("a.b-c_1", np.arange(256, dtype=np.float32).reshape(2, 128) / 256)
        again = Person.from_json(person.to_json())
        assert np.array_equal(again.embeddings, person.embeddings)
        files = FileGallery(tmp_path)
        files.put(person)
        assert [p.name for p in files.people()] == ["a.b-c_1"]
        for bad in ("unknown", "../x", "with space", ""):
            with pytest.raises(ValueError, match="person name"):
                gallery.validate_person_name(bad)


def _frame(index: int, *boxes: tuple[float, float, float, float]) -> FrameDetections:
    return FrameDetections(index, index, tuple(Detection(b, 0.9) for b in boxes))


class TestTracklets:
    """Within a GOP, detections link by IoU; crops are spread and large enough."""

    def test_two_faces_moving_are_two_tracklets(self) -> None:
        """Two faces drifting right stay apart; a face of 20 px is never chosen to embed."""
        frames = tuple(_frame(i, (10 + i, 10, 110 + i, 110), (300 + i, 50, 320 + i, 70)) for i in range(10))
        tracks = link(frames, 0.3)
        assert [len(t.sightings) for t in tracks] == [10, 10]
        assert [t.sightings[0].detection.box[0] for t in tracks] == [10, 300]
        crops = choose_crops(tracks[0], 2, 40)
        assert len(crops) == 2
        assert crops[0].frame < 5 <= crops[1].frame
        assert choose_crops(tracks[1], 2, 40) == []


def _face(
    local: int, first: int, last: int, box: list[float], identity: str = "", emb: float = 0.0
) -> dict[str, Any]:
    vector = np.full(128, emb, dtype="<f4")
    return {
        "local": local, "first_frame": first, "last_frame": last, "first_box": box, "last_box": box,
        "first_seen": float(first), "last_seen": float(last), "identity": identity, "distance": 0.4,
        "crops": 1, "embedding": base64.b64encode(vector.tobytes()).decode(),
        "best_frame": first, "best_box": box,
    }  # fmt: skip


class TestCameraTracker:
    """Tracks across GOPs in order: one id per person, events once, state survives a restart."""

    def test_identified_track_keeps_its_id_and_emits_once(self) -> None:
        """A face over 4 GOPs then gone: appeared + identified once, left after the gap."""
        tracker = CameraTracker("door", AnalysisSettings())
        found: list[dict[str, Any]] = []
        for gop in range(4):
            mapping, events = tracker.update(
                gop, [_face(0, gop * 10, gop * 10 + 9, [10.0 + gop, 10, 110, 110], "obama")]
            )
            assert mapping == {0: 1}
            found += events
        found += tracker.update(4, [])[1] + tracker.update(5, [])[1]
        assert [(e["type"], e["track"]) for e in found] == [(APPEARED, 1), (IDENTIFIED, 1), (LEFT, 1)]
        assert all(check_event(e)["identity"] == "obama" for e in found)
        assert set(found[0]) == set(EVENT_SCHEMA["properties"])

    def test_unknown_alert_once_and_a_second_person_gets_a_new_id(self) -> None:
        """An unknown face alerts once after 2 GOPs; a far-away second face seen in one GOP is
        track 2, too briefly seen for an alert, and leaves after the gap."""
        tracker = CameraTracker("hall", AnalysisSettings(unknown_alert_after_gops=2))
        kinds = []
        for gop in range(6):
            faces = [_face(0, gop * 10, gop * 10 + 9, [10, 10, 110, 110], emb=0.0)]
            if gop == 3:
                faces.append(_face(1, 30, 39, [400, 10, 500, 110], emb=0.5))
            _mapping, events = tracker.update(gop, faces)
            kinds += [(e["type"], e["track"]) for e in events]
        assert kinds == [(APPEARED, 1), (UNKNOWN_ALERT, 1), (APPEARED, 2), (LEFT, 2)]

    def test_restored_state_continues_the_same_tracks(self) -> None:
        """The state (as the sink saves it in progress.json) resumes identically."""
        cfg = AnalysisSettings()
        first = CameraTracker("door", cfg)
        first.update(0, [_face(0, 0, 9, [10, 10, 110, 110], "obama")])
        resumed = CameraTracker("door", cfg, first.state())
        mapping, events = resumed.update(1, [_face(0, 10, 19, [12, 10, 112, 110], "obama")])
        assert mapping == {0: 1}
        assert events == []
        assert resumed.next_id == 2


class TestSnapshots:
    """analysis.keep_snapshots: the best crop's JPEG becomes a file the events point at."""

    def test_snapshot_file_is_written_and_referenced(self, tmp_path: Path) -> None:
        """The sink's record of a tracklet drops the bytes, writes the JPEG, and the
        appeared event's snapshot names that file."""
        chip = np.zeros((150, 150, 3), np.uint8)
        face = FaceTracklet(
            0, 0, 9, (10, 10, 110, 110), (10, 10, 110, 110), 1.0, 2.0,
            embedding=np.zeros(128, "<f4").tobytes(), crops=1, best_frame=4, snapshot=jpeg(chip),
        )  # fmt: skip
        record = face_record(tmp_path, 7, face)
        assert "snapshot" not in record
        assert Image.open(tmp_path / record["snapshot_file"]).size == (150, 150)
        _, events = CameraTracker("door", AnalysisSettings()).update(
            7, [record], {0: record["snapshot_file"]}
        )
        assert events[0]["snapshot"]["file"] == record["snapshot_file"]
        assert events[0]["snapshot"]["frame"] == 4


class TestSinkOutbox:
    """Events saved by a sink that died before EVENTS acked them are sent on restart."""

    async def test_restarted_sink_flushes_the_saved_outbox_once(
        self, js: JetStreamContext, nats_settings: Settings
    ) -> None:
        """An outbox in progress.json reaches events.<camera> by the next sink's watch; a
        second restart sends nothing again (the outbox was emptied after the ack)."""
        root = Path(nats_settings.sink.output_dir)
        output = CameraOutput(root, "door", 0, 0)
        tracker = CameraTracker("door", AnalysisSettings())
        _, found = tracker.update(0, [_face(0, 0, 9, [10, 10, 110, 110], "obama")])
        output._add_events(found)
        output._save()
        for _ in range(2):
            writer = OutputWriter(nats_settings)
            await writer.start(js)
            deadline = time.monotonic() + 10
            while 'outbox": []' not in (root / "door" / ".state" / "progress.json").read_text():
                assert time.monotonic() < deadline, "the outbox was not flushed"
                await asyncio.sleep(0.1)
            await writer.stop()
        info = await js.stream_info(Names.EVENTS)
        assert info.state.messages == len(found) == 2
        sent = [json.loads((await js.get_msg(Names.EVENTS, seq)).data or b"") for seq in (1, 2)]
        assert [e["type"] for e in sent] == [APPEARED, IDENTIFIED]


class TestGalleryWatch:
    """Every analysis replica sees the bucket's changes."""

    async def test_put_and_delete_reach_the_watch(self, js: JetStreamContext) -> None:
        """Records present at start load; an enrolment and a removal arrive within a second."""
        await gallery.kv_put(js, Person("early", np.zeros((1, 128), np.float32)))
        watch = GalleryWatch(0.6)
        await watch.start(js)
        try:
            assert [p.name for p in watch.index.people] == ["early"]
            await gallery.kv_put(js, Person("late", np.ones((1, 128), np.float32)))
            assert await gallery.kv_remove(js, "early")
            deadline = time.monotonic() + 5
            while [p.name for p in watch.index.people] != ["late"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert [p.name for p in watch.index.people] == ["late"]
        finally:
            await watch.stop()

    async def test_stop_leaves_no_subscription(self, nc: Client, js: JetStreamContext) -> None:
        """Stopping the watch ends its ordered consumer too, not only the task reading it."""
        subscriptions = len(nc._subs)
        watch = GalleryWatch(0.6)
        await watch.start(js)
        assert len(nc._subs) > subscriptions
        await watch.stop()
        assert len(nc._subs) == subscriptions
