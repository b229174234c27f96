"""detect_fps: frame selection by timestamp (CFR, VFR, NTSC rates, message starts), the
time base the decoder puts in FrameBatch, and old FrameBatch messages without it."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import msgpack
import numpy as np
import pytest

from framepipe.core import bus, messages
from framepipe.core.bus import setup_topology
from framepipe.core.errors import SchemaError
from framepipe.core.messages import FrameBatch, GopMessage, Headers
from framepipe.core.runner import Runner
from framepipe.core.settings import ConfigError, InferenceSettings, Settings
from framepipe.core.topology import Names
from framepipe.media.gop import GopCutter
from framepipe.stages.decoder import Decoder
from framepipe.stages.frame_selection import select_by_rate
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
from tests.helpers import clip


def picked(selected: list[bool]) -> list[int]:
    return [i for i, s in enumerate(selected) if s]


def test_30fps_at_5_per_second_picks_every_sixth_frame() -> None:
    """MP4's usual 1/15360 time base, 512 ticks a frame: frames 0, 6, 12, ..."""
    pts = [512 * i for i in range(60)]
    assert picked(select_by_rate(pts, (1, 15360), 5.0)) == list(range(0, 60, 6))
    # The same frames in a 1/30 time base, and a GOP that starts at frame 60.
    assert picked(select_by_rate(list(range(60, 90)), (1, 30), 5.0)) == list(range(0, 30, 6))


def test_ntsc_rates_do_not_drift() -> None:
    """29.97 fps (1001/30000 per frame) at 5/s over ten minutes: 3000 model runs, at most
    one per 1/5 s slot, never two frames in a row."""
    pts = [1001 * i for i in range(17982)]  # 10 min of 30000/1001 fps
    selected = select_by_rate(pts, (1, 30000), 5.0)
    assert sum(selected) == 3000
    assert not any(a and b for a, b in itertools.pairwise(selected))


def test_variable_frame_rate_uses_timestamps_not_counts() -> None:
    """Bursty VFR (ms time base): one model run per 200 ms slot that has frames; a gap of
    several slots costs no runs, a burst inside one slot costs one."""
    pts_ms = [0, 30, 70, 100, 190, 210, 260, 400, 401, 402, 1500, 1510, 1700]
    selected = select_by_rate(pts_ms, (1, 1000), 5.0)
    assert [pts_ms[i] for i in picked(selected)] == [0, 210, 400, 1500, 1700]


def test_first_frame_of_a_message_is_always_detected() -> None:
    """A later part of a GOP starts mid-slot (frames 32.. at 30 fps, 5/s): its first frame
    is detected because earlier detections are on another replica."""
    pts = [512 * i for i in range(32, 48)]
    assert [32 + i for i in picked(select_by_rate(pts, (1, 15360), 5.0))] == [32, 36, 42]


def test_rate_settings_validate() -> None:
    """detect_fps must be >= 0 and cannot be combined with detect_every."""
    with pytest.raises(ConfigError, match=r"inference\.detect_fps must be >= 0"):
        InferenceSettings(detect_fps=-1)
    with pytest.raises(ConfigError, match="not both"):
        InferenceSettings(detect_fps=5, detect_every=3)
    with pytest.raises(ValueError, match="time_base"):
        select_by_rate([0], (0, 1), 5.0)


def test_old_frame_batches_decode_without_a_time_base() -> None:
    """A FrameBatch from a decoder older than the field (envelope version 1, pixels inside
    the msgpack map) still decodes; it reports no timestamps, so inference detects every
    frame rather than guessing."""
    batch = FrameBatch(
        camera="c",
        gop=0,
        part=0,
        parts=1,
        video_seq=1,
        frame_indices=(0,),
        pts=(0,),
        source_size=(2, 2),
        scale=1.0,
        pad=(0, 0),
        shape=(1, 2, 2, 3),
        pixels=bytes(12),
    )
    headers, _ = messages.encode(batch)
    headers = {k: v for k, v in headers.items() if k != Headers.TAIL} | {Headers.VERSION: "1"}
    wire = batch.to_wire()
    del wire["time_base"]
    old = messages.decode(headers, msgpack.packb(wire, use_bin_type=True), FrameBatch)
    assert old.time_base == (0, 1)
    assert not old.has_timestamps
    with pytest.raises(SchemaError, match="time_base"):
        dataclasses.replace(batch, time_base=(1, -5))


@pytest.mark.integration
def test_decoder_sends_the_time_base_of_real_video(nats_settings: Settings) -> None:
    """Real H.264 (30 fps, B-frames) through the decoder stage: each FrameBatch carries
    the stream's time base, and detect_fps = 5 on its pts picks every 6th frame."""
    settings = nats_settings
    source = clip("h264_bframes.mp4")
    container, stream = open_input(str(source))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base)
        gops: list[GopMessage] = [
            gop_message("rate", g, params) for g in cutter.cut(iter_packets(container, stream))
        ][:2]

    async def scenario() -> list[FrameBatch]:
        await setup_topology(settings)
        nc = await bus.connect(settings, "test-rate")
        js = nc.jetstream(timeout=10.0)
        for gop in gops:
            headers, body = messages.encode(gop)
            await bus.publish(js, Names.subject(Names.VIDEO, "rate"), body, headers, f"rate:{gop.gop}")
        runner = Runner(Decoder(settings), settings)
        task = asyncio.create_task(runner.run(serve_health=False))
        frames = await js.pull_subscribe_bind(durable=Names.INFERENCE, stream=Names.FRAMES)
        out: list[FrameBatch] = []
        try:
            while sum(b.shape[0] for b in out) < sum(len(g.packets) for g in gops):
                for msg in await frames.fetch(4, timeout=30):
                    out.append(messages.decode(msg.headers, msg.data, FrameBatch))
                    await msg.ack()
        finally:
            runner.request_stop()
            await task
            await nc.close()
        return sorted(out, key=lambda b: (b.gop, b.part))

    batches = asyncio.run(scenario())
    assert {b.time_base for b in batches} == {gops[0].time_base}
    assert all(b.has_timestamps for b in batches)
    for batch in batches:
        assert list(batch.pts) == sorted(batch.pts)  # presentation order, B-frames resolved
        selected = select_by_rate(batch.pts, batch.time_base, 5)
        chosen = [f for f, s in zip(batch.frame_indices, selected, strict=True) if s]
        assert chosen == [f for f in batch.frame_indices if f % 6 == 0], (batch.gop, batch.part)
    assert np.frombuffer(batches[0].pixels, dtype=np.uint8).size == int(np.prod(batches[0].pixel_shape))
