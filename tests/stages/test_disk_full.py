"""A full JetStream store: a real nats-server whose ``max_file_store`` is reached.

A filler stream takes the store's free space; a real :class:`Gateway` then plays a
file. Its publishes are refused ("insufficient resources"), so it pauses, saying
so in one line, and loses nothing; once the filler is purged (space returns) it
carries on and VIDEO holds every GOP exactly once.

A live camera (a real GStreamer RTSP server) cannot pause: while the store is full
its gateway drops GOPs by the rule of ``stages/gateway/store_full.py`` (one line,
counted, a gap recorded) and resumes by itself when the filler's messages age out.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from nats.js import api as js_api
from nats.js.errors import APIError

from framepipe.core import bus, messages
from framepipe.core.errors import BusError
from framepipe.core.health import GATEWAY_DROPPED_GOPS
from framepipe.core.messages import Headers
from framepipe.core.settings import Settings
from framepipe.core.sources import read_source_state
from framepipe.core.topology import Names
from framepipe.local.natsserver import NatsServer
from framepipe.media.sample import ClipSpec
from framepipe.stages.gateway import Gateway, store_full
from tests.helpers import FACES, faces_clip
from tests.rtsp import RtspServer, looped_clip, require_gst

STORE = "12MB"
FILLER = "TEST_FILLER"  # a test's own stream, not part of the product topology


#: the bus module's logger, fresh for each test, so ``capture_logs`` sees its events.
pytestmark = pytest.mark.usefixtures("fresh_bus_logger")


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server whose JetStream file store holds 12 MB."""
    server = NatsServer(store_dir=tmp_path / "jetstream", max_file_store=STORE)
    server.start(log_file=tmp_path / "nats-server.log")
    try:
        yield server
    finally:
        server.stop()


def _settings(server: NatsServer, tmp_path: Path) -> Settings:
    return Settings().replace(
        nats={"url": server.url},
        local={"state_dir": str(tmp_path / "state")},
        # JetStream reserves max_bytes at creation: the bounded streams must fit the store.
        streams={"video_max_bytes": 4 * 1024**2, "dlq_max_bytes": 1024**2, "thermal_max_bytes": 1024**2},
    )


async def _fill(js: bus.JetStreamContext, max_age_s: float | None = None) -> int:
    """Publish 256 KB messages to the filler until the server refuses one; return the count."""
    await js.add_stream(js_api.StreamConfig(name=FILLER, subjects=["filler.>"], max_age=max_age_s))
    for count in range(1000):
        try:
            await js.publish("filler.x", b"\0" * 256 * 1024, timeout=5.0)
        except APIError as exc:
            if exc.err_code not in bus.FULL_STORE_CODES:
                pytest.fail(f"the filler was refused for another reason: {exc}")
            return count
    pytest.fail("the store never filled up")


async def _video_gops(js: bus.JetStreamContext) -> Counter[int]:
    info = await js.stream_info(Names.VIDEO)
    seen: Counter[int] = Counter()
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        raw = await js.get_msg(Names.VIDEO, seq)
        seen[int((raw.headers or {})[Headers.GOP])] += 1
    return seen


async def _video_messages(js: bus.JetStreamContext) -> list[messages.GopMessage]:
    info = await js.stream_info(Names.VIDEO)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        raw = await js.get_msg(Names.VIDEO, seq)
        found.append(messages.decode(raw.headers, raw.data or b"", messages.GopMessage))
    return found


@pytest.fixture
def live_camera(tmp_path: Path) -> Iterator[str]:
    """A real RTSP camera (GStreamer) sending a 320x240 H.264 clip, 0.5 s GOPs, for 60 s."""
    require_gst()
    clip = looped_clip("rtsp_h264.mp4", ClipSpec(width=320, height=240, seconds=2.0, gop=15, bframes=2), 30)
    server = RtspServer({"cam": clip}, tmp_path / "rtsp-server.log").start()
    try:
        yield server.url("cam")
    finally:
        server.stop()


@pytest.mark.integration
class TestDiskFull:
    async def test_a_file_source_pauses_on_a_full_store_and_resumes_losing_nothing(
        self, small_store: NatsServer, tmp_path: Path
    ) -> None:
        """Publishes refused with one ``bus.waiting`` line naming the full store; the gateway
        holds its place; after space returns every GOP is in VIDEO once."""
        settings = _settings(small_store, tmp_path)
        nc = await bus.connect(settings, "test-disk", retry_initial=False)
        try:
            js = nc.jetstream(timeout=10.0)
            await bus.ensure_topology(js, settings)
            assert await _fill(js) > 0
            gateway = Gateway(settings, "full", str(faces_clip()), pacing="fast")
            with structlog.testing.capture_logs() as events:
                running = asyncio.create_task(gateway.run())
                deadline = asyncio.get_running_loop().time() + 60.0  # a loaded machine starts slowly
                while not any(e["event"] == "bus.waiting" for e in events):
                    assert not running.done(), "the gateway ended instead of waiting"
                    assert asyncio.get_running_loop().time() < deadline, "the gateway never waited"
                    await asyncio.sleep(0.2)
                held = gateway.published
                await asyncio.sleep(3.0)  # it keeps waiting, in silence
                assert not running.done(), "the gateway gave up instead of waiting"
                assert gateway.published == held
                waiting = [e for e in events if e["event"] == "bus.waiting"]
                assert len(waiting) == 1, waiting  # one line, not one per retry
                assert "store full" in waiting[0]["reason"]
                await js.purge_stream(FILLER)  # space returns
                state = await asyncio.wait_for(running, 60)
            assert held < FACES.frames // FACES.gop
            assert state.state == "ended"
            assert any(e["event"] == "bus.resumed" for e in events)
            assert await _video_gops(js) == Counter({g: 1 for g in range(FACES.frames // FACES.gop)})
        finally:
            await nc.close()

    async def test_a_stream_limit_larger_than_the_store_is_one_clear_error(
        self, small_store: NatsServer, tmp_path: Path
    ) -> None:
        """VIDEO's max_bytes over the store: setup names the setting to lower."""
        settings = _settings(small_store, tmp_path).replace(streams={"video_max_bytes": 64 * 1024**2})
        nc = await bus.connect(settings, "test-disk", retry_initial=False)
        try:
            with pytest.raises(BusError, match=r"streams\.video_max_bytes"):
                await bus.ensure_topology(nc.jetstream(timeout=10.0), settings)
        finally:
            await nc.close()


async def _wait(condition: Any, what: str, running: asyncio.Task[Any], timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert not running.done(), f"the gateway ended while waiting for {what}"
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.mark.integration
class TestDiskFullLiveCamera:
    async def test_a_live_camera_drops_counts_and_resumes_when_old_messages_age_out(
        self, small_store: NatsServer, live_camera: str, tmp_path: Path
    ) -> None:
        """An RTSP camera keeps sending while the store is full: one store_full line saying what
        to do, each refused GOP dropped and counted (metric, source state), none queued; when the
        filler's messages age out it resumes on its own, records the gap, numbering dense."""
        settings = _settings(small_store, tmp_path)
        nc = await bus.connect(settings, "test-disk-live", retry_initial=False)
        try:
            js = nc.jetstream(timeout=10.0)
            await bus.ensure_topology(js, settings)
            gateway = Gateway(settings, "door", live_camera)
            dropped = GATEWAY_DROPPED_GOPS.labels(camera="door", reason=store_full.STORE_FULL)
            dropped_before = dropped._value.get()
            with structlog.testing.capture_logs() as events:
                running = asyncio.create_task(gateway.run())
                await _wait(lambda: gateway.published >= 3, "3 live GOPs stored", running)
                assert await _fill(js, max_age_s=8.0) > 0  # full until the filler ages out
                full_at = gateway.published
                await _wait(lambda: dropped._value.get() - dropped_before >= 3, "3 dropped GOPs", running)
                await _wait(lambda: gateway.published > full_at + 2, "GOPs stored again", running, 90.0)
                gateway.stop()
                final = await asyncio.wait_for(running, 30)
            lost = int(dropped._value.get() - dropped_before)
            names = [e["event"] for e in events]
            assert names.count("gateway.store_full") == 1, names  # one line, not one per GOP
            line = next(e for e in events if e["event"] == "gateway.store_full")
            assert "local.nats_max_file_store" in line["what_to_do"]
            assert "bus.waiting" not in names  # a live camera does not wait on a full store
            back = [e for e in events if e["event"] == "gateway.store_space_back"]
            assert len(back) == 1
            assert back[0]["dropped_gops"] == lost
            gap = next(e for e in events if e["event"] == "gateway.gap")
            assert "store full" in gap["reason"]
            assert lost >= 3
            # what it lost is in the source state (framepipe status), and numbering stays dense
            state = await read_source_state(js, "door")
            assert state is not None
            assert state.dropped_gops == lost == final.dropped_gops
            stored = await _video_messages(js)
            assert [m.gop for m in stored] == list(range(len(stored)))
            assert len(stored) == gateway.published == state.next_gop
            after_gap = stored[back[0]["gop"]]
            assert after_gap.discontinuity
            frames = [(m.frame_offset, len(m.packets)) for m in stored]
            assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(frames))
            gap_event = await js.get_last_msg(Names.DETECTIONS, Names.subject(Names.DETECTIONS, "door"))
            gap_message = messages.decode(gap_event.headers, gap_event.data or b"", messages.GapMessage)
            assert gap_message.gop == back[0]["gop"]
            assert gap_message.down_s > 0
        finally:
            await nc.close()
