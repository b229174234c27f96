"""Topology, de-duplication and the GOP ledger against a real nats-server."""

from __future__ import annotations

import asyncio

from framepipe.pipeline import bus
from framepipe.pipeline.config import Names, Settings
from framepipe.pipeline.ledger import GopLedger
from framepipe.pipeline.messages import Detection, FrameDetections


async def _with_js(settings: Settings, fn):  # type: ignore[no-untyped-def]
    nc = await bus.connect(settings, "test", retry_initial=False)
    try:
        js = nc.jetstream()
        await bus.ensure_topology(js, settings)
        return await fn(js)
    finally:
        await nc.close()


def test_topology_is_idempotent(settings: Settings) -> None:
    """Running setup twice succeeds and yields every stream and stage consumer."""

    async def check(js):  # type: ignore[no-untyped-def]
        await bus.ensure_topology(js, settings)
        names = {s.config.name for s in await js.streams_info()}
        buckets = {f"KV_{Names.LEDGER_BUCKET}", f"KV_{Names.SOURCES_BUCKET}", f"KV_{Names.CAMERAS_BUCKET}"}
        assert names == {s.name for s in bus.stream_specs(settings)} | buckets
        for spec in bus.consumer_specs():
            info = await js.consumer_info(spec.stream, spec.durable)
            assert str(getattr(info.config.ack_policy, "value", info.config.ack_policy)) == "explicit"
            assert info.config.max_deliver == -1

    asyncio.run(_with_js(settings, check))


def test_publish_is_deduplicated_by_msg_id(settings: Settings) -> None:
    """Re-publishing the same <cam>:<gop>:<stage> id stores the message once."""

    async def check(js):  # type: ignore[no-untyped-def]
        first = await bus.publish(js, "dets.cam1", b"x", {}, Names.msg_id("cam1", 0, "inference", 0))
        second = await bus.publish(js, "dets.cam1", b"x", {}, Names.msg_id("cam1", 0, "inference", 0))
        assert not first.duplicate
        assert second.duplicate
        assert (await js.stream_info(Names.DETECTIONS)).state.messages == 1

    asyncio.run(_with_js(settings, check))


def test_ledger_completes_exactly_once_under_concurrency(settings: Settings) -> None:
    """Four parts recorded concurrently (and one twice): exactly one caller sees the GOP
    complete, and it gets every frame back in order."""

    async def check(js):  # type: ignore[no-untyped-def]
        ledger = GopLedger(await js.key_value(Names.LEDGER_BUCKET))

        def part(p: int) -> tuple[FrameDetections, ...]:
            return tuple(
                FrameDetections(frame=p * 2 + i, pts=p * 2 + i, detections=(Detection((0, 0, 1, 1), 0.9),))
                for i in range(2)
            )

        results = await asyncio.gather(*(ledger.record("cam1", 5, p, 4, part(p)) for p in (3, 1, 0, 2)))
        complete = [r for r in results if r is not None]
        assert len(complete) == 1  # only the compare-and-set that added the last part
        assert [f.frame for f in complete[0]] == list(range(8))
        again = await ledger.record("cam1", 5, 1, 4, part(1))
        assert again is not None
        assert [f.frame for f in again] == list(range(8))

    asyncio.run(_with_js(settings, check))


def test_publish_and_kv_put_ride_through_a_server_restart(settings: Settings, nats_server) -> None:  # type: ignore[no-untyped-def]
    """A publish and a KV put issued while nats-server is down land exactly once after
    it comes back (file storage, same port): the client reconnects and retries."""

    async def check(js):  # type: ignore[no-untyped-def]
        kv = await js.key_value(Names.SOURCES_BUCKET)
        await asyncio.to_thread(nats_server.stop)
        put = asyncio.create_task(bus.kv_put(kv, "cam1", b'{"next_gop": 3}'))
        msg_id = Names.msg_id("cam1", 0, "gateway")
        sent = asyncio.create_task(bus.publish(js, "video.cam1", b"gop", {}, msg_id))
        await asyncio.sleep(1.0)
        assert not put.done()
        assert not sent.done()
        await asyncio.to_thread(nats_server.start)
        revision = await asyncio.wait_for(put, 60)
        ack = await asyncio.wait_for(sent, 60)
        assert revision >= 1
        assert (await kv.get("cam1")).value == b'{"next_gop": 3}'
        again = await bus.publish(js, "video.cam1", b"gop", {}, msg_id)
        assert again.duplicate
        assert again.seq == ack.seq
        assert (await js.stream_info(Names.VIDEO)).state.messages == 1

    asyncio.run(_with_js(settings, check))
