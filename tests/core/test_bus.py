"""Topology, de-duplication and the GOP ledger against a real nats-server."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import NotFoundError

from framepipe.core import bus, messages, topology
from framepipe.core.errors import SetupError
from framepipe.core.ledger import GopLedger
from framepipe.core.messages import Detection, FrameDetections, GopMessage
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local import natsserver
from framepipe.local.natsserver import NatsServer


class TestTopology:
    async def test_topology_is_idempotent(self, js: JetStreamContext, nats_settings: Settings) -> None:
        """Running setup twice succeeds and yields every stream and stage consumer."""
        await bus.ensure_topology(js, nats_settings)
        names = {s.config.name for s in await js.streams_info()}
        buckets = {f"KV_{b.name}" for b in topology.BUCKETS}
        known = (Names.LEDGER_BUCKET, Names.SOURCES_BUCKET, Names.CAMERAS_BUCKET)
        assert {f"KV_{name}" for name in known} <= buckets
        assert names == {s.name for s in topology.STREAMS} | buckets
        for spec in topology.consumer_specs():
            info = await js.consumer_info(spec.stream, spec.durable)
            assert str(getattr(info.config.ack_policy, "value", info.config.ack_policy)) == "explicit"
            assert info.config.max_deliver == -1

    async def test_buckets_are_read_directly_as_their_spec_says(
        self, nc: Client, js: JetStreamContext
    ) -> None:
        """A per-GOP bucket's get is a direct get; the ledger's goes to its stream's leader."""
        asked: list[str] = []

        async def note(msg: Msg) -> None:
            asked.append(msg.subject)

        api = await nc.subscribe("$JS.API.>", cb=note)
        for bucket in topology.BUCKETS:
            info = await js.stream_info(f"KV_{bucket.name}")
            assert bool(info.config.allow_direct) is bucket.direct_reads, bucket.name
            kv = await js.key_value(bucket.name)
            await kv.put("probe", b"1")
            asked.clear()
            assert (await kv.get("probe")).value == b"1"
            await nc.flush()
            read = "DIRECT.GET" if bucket.direct_reads else "STREAM.MSG.GET"
            assert [s for s in asked if "GET" in s] == [
                f"$JS.API.{read}.KV_{bucket.name}"
                + (f".$KV.{bucket.name}.probe" if bucket.direct_reads else "")
            ], bucket.name
        await api.unsubscribe()

    async def test_a_bucket_made_before_direct_reads_is_switched_in_place(
        self, js: JetStreamContext, nats_settings: Settings
    ) -> None:
        """Setup turns on direct reads of an older build's bucket and keeps its values."""
        bucket = Names.OUTPUT_MODES_BUCKET
        await js.delete_key_value(bucket)
        old = await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))
        assert not (await js.stream_info(f"KV_{bucket}")).config.allow_direct
        await old.put("cam1", b"overlay")
        await bus.ensure_topology(js, nats_settings)
        assert (await js.stream_info(f"KV_{bucket}")).config.allow_direct
        assert (await (await js.key_value(bucket)).get("cam1")).value == b"overlay"


class TestPublish:
    async def test_publish_is_deduplicated_by_msg_id(self, js: JetStreamContext) -> None:
        """Re-publishing the same <cam>:<gop>:<stage> id stores the message once."""
        first = await bus.publish(js, "dets.cam1", b"x", {}, Names.msg_id("cam1", 0, "inference", 0))
        second = await bus.publish(js, "dets.cam1", b"x", {}, Names.msg_id("cam1", 0, "inference", 0))
        assert not first.duplicate
        assert second.duplicate
        assert (await js.stream_info(Names.DETECTIONS)).state.messages == 1

    async def test_publish_and_kv_put_ride_through_a_server_restart(
        self, js: JetStreamContext, nats_server: NatsServer
    ) -> None:
        """A publish and a KV put issued while nats-server is down land exactly once after
        it comes back (file storage, same port): the client reconnects and retries."""
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


class TestStoredMsg:
    async def test_a_stored_gop_reads_back_as_it_was_published(self, js: JetStreamContext) -> None:
        """A GOP read back by sequence (direct get) decodes to the message published, its
        binary body byte for byte, whatever headers the server adds to a direct reply."""
        gop = GopMessage(
            camera="cam1",
            gop=4,
            codec="h264",
            width=64,
            height=48,
            time_base=(1, 90000),
            frame_offset=0,
            packets=(bytes(range(256)) * 40, b"\x00\x01"),
            pts=(0, 3000),
            dts=(0, 3000),
            keyframes=(True, False),
        )
        headers, body = messages.encode(gop)
        ack = await bus.publish(js, "video.cam1", body, headers, Names.msg_id("cam1", 4, "gateway"))
        raw = await bus.stored_msg(js, Names.VIDEO, ack.seq)
        assert raw.seq == ack.seq
        assert raw.data == body
        assert messages.decode(raw.headers, raw.data or b"", GopMessage) == gop

    async def test_a_sequence_no_longer_stored_is_not_found(self, js: JetStreamContext) -> None:
        """A deleted (or never written) sequence raises NotFoundError, the error the stages
        turn into "raise streams.video_max_age_s"."""
        ack = await bus.publish(js, "video.cam1", b"gop", {}, Names.msg_id("cam1", 0, "gateway"))
        await js.delete_msg(Names.VIDEO, ack.seq)
        for seq in (ack.seq, ack.seq + 100):
            with pytest.raises(NotFoundError):
                await bus.stored_msg(js, Names.VIDEO, seq)


class TestGopLedger:
    async def test_ledger_completes_exactly_once_under_concurrency(self, js: JetStreamContext) -> None:
        """Four parts recorded concurrently (and one twice): exactly one caller sees the GOP
        complete, and it gets every frame back in order."""
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

    async def test_a_gop_in_one_part_completes_without_an_entry(self, js: JetStreamContext) -> None:
        """One part is the whole GOP: it is complete at once, and the bucket stays empty."""
        kv = await js.key_value(Names.LEDGER_BUCKET)
        frames = tuple(FrameDetections(frame=i, pts=i, detections=()) for i in (2, 0, 1))
        done = await GopLedger(kv).record("cam1", 7, 0, 1, frames)
        assert done is not None
        assert [f.frame for f in done] == [0, 1, 2]
        assert (await js.stream_info(f"KV_{Names.LEDGER_BUCKET}")).state.messages == 0


class TestNatsServer:
    @pytest.mark.integration
    def test_server_on_picked_ports_retries_when_a_port_is_taken(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A picked free port that another process binds before nats-server does (a real
        race: the kernel hands the same range out as ephemeral ports) makes nats-server exit;
        start() picks new ports and the server comes up. Ports given explicitly are not
        changed: a taken one is a one-line SetupError."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            picks = iter([taken, taken])
            real_free_port = natsserver.free_port
            monkeypatch.setattr(
                natsserver, "free_port", lambda host="127.0.0.1": next(picks, None) or real_free_port(host)
            )
            server = NatsServer(store_dir=tmp_path / "a" / "js").start(log_file=tmp_path / "a.log")
            try:
                assert server.port != taken
                assert server.monitor_port != taken
                assert "address already in use" in (tmp_path / "a.log").read_text()
            finally:
                server.stop()
            fixed = NatsServer(store_dir=tmp_path / "b" / "js", port=taken)
            with pytest.raises(SetupError, match="nats-server exited"):
                fixed.start(log_file=tmp_path / "b.log")

    def test_free_ports_are_distinct_and_outside_the_ephemeral_range(self) -> None:
        """Picked ports never repeat within a process and lie below the kernel's ephemeral
        range, where no outgoing connection can take one before the server binds it."""
        picks = [natsserver.free_port() for _ in range(30)]
        assert len(set(picks)) == len(picks)
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        assert all(port < low for port in picks), picks
        for port in picks[:3]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port))  # nothing holds it

    def test_a_server_started_with_a_profiler_hands_out_a_cpu_profile(self, tmp_path: Path) -> None:
        """profile_port=0 picks a loopback port for Go's profiler; a server without one says so."""
        server = NatsServer(store_dir=tmp_path / "js", profile_port=0).start(log_file=tmp_path / "n.log")
        try:
            assert server.profile_port
            with urllib.request.urlopen(server.cpu_profile_url(1), timeout=30) as response:
                profile = response.read()
            assert profile[:2] == b"\x1f\x8b"  # pprof's gzipped protobuf
        finally:
            server.stop()
        with pytest.raises(SetupError, match="without profile_port"):
            NatsServer(store_dir=tmp_path / "other").cpu_profile_url(1)
