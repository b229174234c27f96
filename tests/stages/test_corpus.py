"""Corpus of hostile VIDEO messages against a real decoder stage and a real nats-server.

Each case is a real GOP from a PyAV-encoded clip with one thing wrong. The
promise: a message over max_payload is refused at publish with a clear error;
anything that reaches the decoder but cannot be decoded goes to ``dlq.decoder``
with the reason in its headers and exactly one ``gop.dead_letter`` log line,
and the decoder goes on to the next message. Claimed dimensions are never
trusted: frames are sized by the bitstream, so a lie there costs nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator

import nats.errors
import pytest
from nats.js import JetStreamContext

from framepipe.core import bus, logs, messages
from framepipe.core.messages import Headers
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.media.gop import GopCutter
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
from tests.helpers import clip, decode_until_drained


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The test points structlog at the captured stderr; point it back afterwards."""
    yield
    logs.configure()


def _gops(camera: str) -> list[messages.GopMessage]:
    container, stream = open_input(str(clip("h264_bframes.mp4")))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base)
        return [gop_message(camera, g, params) for g in cutter.cut(iter_packets(container, stream))]


def _near_limit_garbage(good: messages.GopMessage, max_payload: int) -> messages.GopMessage:
    """A GOP whose body is just under max_payload: valid envelope, random 'packets'."""
    count = 500
    size = (max_payload - 64 * 1024) // count
    return dataclasses.replace(
        good,
        packets=tuple(os.urandom(size) for _ in range(count)),
        pts=tuple(range(count)),
        dts=tuple(range(count)),
        keyframes=(True,) + (False,) * (count - 1),
    )


async def test_hostile_gops_are_dead_lettered_with_a_reason_and_the_decoder_goes_on(
    js: JetStreamContext, nats_settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    """H.264 data labelled HEVC, an unknown codec name and a near-max_payload GOP of
    random bytes each land in dlq.decoder with Framepipe-Error-Kind/Error headers and
    one log line; absurd claimed dimensions (0×0, 2^20×2^20, negative) are not trusted:
    the bitstream's real size is used and those GOPs decode; the good GOPs around
    them are decoded; a GOP over max_payload is refused by the client before it is sent."""
    settings = nats_settings
    logs.configure(json=True)
    good = _gops("corpus")
    assert len(good) == 3
    width, height = good[0].width, good[0].height
    gop = dataclasses.replace
    order = [
        good[0],
        gop(good[1], codec="hevc"),
        gop(good[2], width=0, height=0),
        _near_limit_garbage(gop(good[0], gop=3), settings.nats.max_payload),
        gop(good[1], gop=4, width=1 << 20, height=1 << 20),
        gop(good[2], gop=5, width=-width, height=-height),
        gop(good[0], gop=6, codec="no-such-codec"),
        gop(good[1], gop=7),
    ]

    huge = (os.urandom(settings.nats.max_payload),)
    oversized = gop(good[0], gop=9, packets=huge, pts=(0,), dts=(0,), keyframes=(True,))
    headers, body = messages.encode(oversized)
    with pytest.raises(nats.errors.MaxPayloadError):
        await bus.publish(js, Names.subject(Names.VIDEO, "corpus"), body, headers, "corpus:9:gateway")
    for message in order:
        headers, body = messages.encode(message)
        assert len(body) < settings.nats.max_payload
        subject = Names.subject(Names.VIDEO, "corpus")
        await bus.publish(js, subject, body, headers, Names.msg_id("corpus", message.gop, "gateway"))

    await decode_until_drained(js, settings, timeout_s=60.0)

    dead = []
    dlq = await js.stream_info(Names.DLQ)
    for seq in range(dlq.state.first_seq, dlq.state.last_seq + 1):
        raw = await js.get_msg(Names.DLQ, seq)
        dead.append({"subject": raw.subject or "", **(raw.headers or {})})
    frames = await js.stream_info(Names.FRAMES)
    decoded: dict[int, tuple[int, int]] = {}
    for seq in range(frames.state.first_seq, frames.state.last_seq + 1):
        raw = await js.get_msg(Names.FRAMES, seq)
        batch = messages.decode(raw.headers, raw.data or b"", messages.FrameBatch)
        decoded[batch.gop] = batch.source_size
    # The good GOPs and those with absurd dimension claims, at the bitstream's real size.
    assert decoded == {g: (width, height) for g in (0, 2, 4, 5, 7)}
    kinds = {int(d[Headers.GOP]): d[Headers.ERROR_KIND] for d in dead}
    assert kinds == {1: "corrupt-media", 3: "corrupt-media", 6: "corrupt-media"}
    for letter in dead:
        assert letter["subject"] == Names.dlq_subject(Names.DECODER)
        assert letter[Headers.ERROR]
        assert "\n" not in letter[Headers.ERROR]
        assert letter[Headers.ORIGINAL_SUBJECT] == Names.subject(Names.VIDEO, "corpus")
    assert "no-such-codec" in next(d[Headers.ERROR] for d in dead if d[Headers.GOP] == "6")

    events = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    letters = [e for e in events if e.get("event") == "gop.dead_letter"]
    assert sorted(int(e["gop"]) for e in letters) == [1, 3, 6]  # one line per poison message
    assert all("\n" not in e["error"] for e in letters)
