"""The GOP an analysis or encoder item points at, read back from VIDEO on a real nats-server."""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from framepipe.core import bus, messages
from framepipe.core.errors import MissingInputError, PoisonError
from framepipe.core.messages import EncodeItem, GopMessage
from framepipe.core.topology import Names
from framepipe.stages.video_reads import read_gop


def _gop(camera: str, index: int) -> GopMessage:
    return GopMessage(
        camera=camera,
        gop=index,
        codec="h264",
        width=64,
        height=48,
        time_base=(1, 90000),
        frame_offset=30 * index,
        packets=(bytes(range(256)) * 8, b"\x00\x01\x02"),
        pts=(0, 3000),
        dts=(0, 3000),
        keyframes=(True, False),
    )


async def _stored(js: JetStreamContext, gop: GopMessage) -> int:
    headers, body = messages.encode(gop)
    subject = Names.subject(Names.VIDEO, gop.camera)
    return (await bus.publish(js, subject, body, headers, Names.msg_id(gop.camera, gop.gop, "gateway"))).seq


class TestReadGop:
    async def test_the_item_reads_back_the_gop_it_points_at(self, js: JetStreamContext) -> None:
        """The item's sequence decodes to the GOP the gateway published, field for field."""
        gop = _gop("cam1", 7)
        seq = await _stored(js, gop)
        assert await read_gop(js, EncodeItem("cam1", 7, seq, ())) == gop

    async def test_a_gop_gone_from_video_is_poison_that_says_what_to_raise(
        self, js: JetStreamContext
    ) -> None:
        """An aged-out GOP is dead-lettered at once, with the setting to raise in the message."""
        seq = await _stored(js, _gop("cam1", 3))
        await js.delete_msg(Names.VIDEO, seq)
        with pytest.raises(
            MissingInputError, match=r"GOP 3 of cam1 .* raise streams.video_max_age_s"
        ) as raised:
            await read_gop(js, EncodeItem("cam1", 3, seq, ()))
        assert isinstance(raised.value, PoisonError)

    async def test_a_sequence_holding_another_gop_is_refused(self, js: JetStreamContext) -> None:
        """A sequence that now holds another camera's GOP is not drawn on: it names both."""
        seq = await _stored(js, _gop("cam2", 5))
        with pytest.raises(MissingInputError, match=f"VIDEO seq {seq} holds cam2/5, expected cam1/5"):
            await read_gop(js, EncodeItem("cam1", 5, seq, ()))
