"""Poison at scale: a camera sending only corrupt GOPs fills dlq.decoder up to its limits,
never the disk, and the DLQ's size and age are in the metrics."""

from __future__ import annotations

import os

from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from framepipe.core import bus, messages
from framepipe.core.dlq import dlq_stats, export_dlq_stats
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from tests.helpers import decode_until_drained

POISON = 150
MAX_MSGS = 40
MAX_BYTES = 48 * 1024


def poison_gop(gop: int) -> messages.GopMessage:
    """A GOP no decoder can open (an unknown codec, random bytes): poison, every time."""
    return messages.GopMessage(
        camera="poison",
        gop=gop,
        codec="no-such-codec",
        width=640,
        height=360,
        time_base=(1, 30),
        frame_offset=gop * 15,
        pts=(0,),
        dts=(0,),
        keyframes=(True,),
        packets=(os.urandom(700),),
    )


class TestDlqLimits:
    async def test_a_poison_only_camera_fills_the_dlq_to_its_limits_and_no_further(
        self, js: JetStreamContext, nats_settings: Settings
    ) -> None:
        """150 poison GOPs through the real decoder: all dead-lettered, the DLQ keeps at most
        dlq_max_msgs letters and dlq_max_bytes bytes (oldest dropped), and the gauges say so."""
        settings = nats_settings.replace(streams={"dlq_max_msgs": MAX_MSGS, "dlq_max_bytes": MAX_BYTES})
        await bus.ensure_topology(js, settings)  # the fixture's topology, bounded as configured
        for gop in range(POISON):
            headers, body = messages.encode(poison_gop(gop))
            subject = Names.subject(Names.VIDEO, "poison")
            await bus.publish(js, subject, body, headers, Names.msg_id("poison", gop, "gateway"))
        await decode_until_drained(js, settings, timeout_s=90.0)

        dlq = await js.stream_info(Names.DLQ)
        assert dlq.state.last_seq == POISON  # every poison GOP was dead-lettered...
        assert 0 < dlq.state.messages <= MAX_MSGS  # ...and only the newest are kept
        assert dlq.state.bytes <= MAX_BYTES
        assert dlq.state.first_seq > 1

        stats = await dlq_stats(js)
        assert stats.messages == {Names.DECODER: dlq.state.messages}
        assert stats.oldest_age_s[Names.DECODER] >= 0.0
        assert (stats.bytes, stats.max_bytes, stats.max_msgs) == (dlq.state.bytes, MAX_BYTES, MAX_MSGS)
        export_dlq_stats(stats, (Names.DECODER, Names.ENCODER))
        sample = REGISTRY.get_sample_value
        assert sample("framepipe_dlq_messages", {"stage": Names.DECODER}) == dlq.state.messages
        assert sample("framepipe_dlq_messages", {"stage": Names.ENCODER}) == 0
        assert sample("framepipe_dlq_bytes") == dlq.state.bytes
        assert sample("framepipe_dlq_limit_bytes") == MAX_BYTES
        age = sample("framepipe_dlq_oldest_age_seconds", {"stage": Names.DECODER})
        assert age is not None
        assert age >= 0.0
