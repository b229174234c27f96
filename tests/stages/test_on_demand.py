"""On-demand output: the camera's own GOPs are recorded (overlay) with no encoder at all, and
burn-in runs only while someone watches the annotated live view; the encoder sleeps at zero
replicas otherwise and wakes for a viewer."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from framepipe.core import bus, messages
from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.messages import SegmentMessage
from framepipe.core.settings import Settings
from framepipe.core.topology import Names, process_kind
from framepipe.local.natsserver import NatsServer
from framepipe.local.supervisor import LocalSystem
from framepipe.media.annotate import BOX_COLOUR
from framepipe.media.gop import GopCutter
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.scaling.output_modes import for_output_mode
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
from framepipe.stages.output_modes import set_mode
from framepipe.web.index import LiveIndex, Segment
from tests.helpers import MEDIA

#: an Annex B camera of 1 s GOPs at 15 fps: long enough for sleep, a viewer, and sleep again.
CAMERA = ClipSpec(width=640, height=360, fps=15, seconds=36.0, gop=15, bframes=2)
LIVE_URI = re.compile(r"^live_(\d+)\.ts$", re.M)
VIEWER_TTL_S = 2.0


def _camera_clip() -> Path:
    path = MEDIA / f"on_demand_annexb_{CAMERA.seconds:.0f}s.ts"
    if not path.is_file():
        make_clip(path, CAMERA)
    return path


def _fast() -> ScalingSettings:
    return ScalingSettings(
        min_replicas=1,
        max_replicas=2,
        lag_threshold=1,
        polling_interval_s=1,
        cooldown_period_s=4,
        scale_up_pods=2,
        scale_up_period_s=1,
        scale_down_stabilization_s=2,
        scale_down_percent=100,
        scale_down_period_s=1,
        fallback_replicas=1,
    )


class TestOnDemandScaling:
    @pytest.mark.parametrize("mode", ["on-demand", "overlay"])
    def test_on_demand_lets_only_the_encoder_sleep_at_zero_without_feed_forward(self, mode: str) -> None:
        """on-demand and overlay: encoder min 0, no camera-count demand; other stages untouched."""
        scaling = StageScaling()
        assert for_output_mode(scaling, "burn-in") == scaling
        changed = for_output_mode(scaling, mode)
        assert (changed.encoder.min_replicas, changed.encoder.feed_forward) == (0, False)
        assert changed.decoder == scaling.decoder
        assert changed.analysis == scaling.analysis


class TestLiveIndex:
    def test_a_watch_ends_and_a_new_one_starts_a_new_run(self) -> None:
        """Live segments are named live_<gop>.ts; a run with no new segment for 3 GOPs (>= 6 s)
        is over (no playlist: the web server answers an empty one); the next viewer's first
        GOP starts a new run rather than waiting on the hole; a GOP far past the window too."""
        live = LiveIndex(window=3)
        assert "live_" not in live.empty_playlist()
        assert "#EXT-X-ENDLIST" not in live.empty_playlist()
        t0 = 1000.0
        for gop in (4, 6, 5):  # out of order, as two encoder replicas may deliver them
            live.add_segment("c", Segment(gop, gop, 1.0, False, 15, 0, 0.0, t0 + gop))
        assert LIVE_URI.findall(live.playlist("c", now=t0 + 7) or "") == ["000004", "000005", "000006"]
        assert live.playlist("c", now=t0 + 13) is None  # 7 s after the newest: the viewer left
        live.add_segment("c", Segment(9, 9, 1.0, False, 15, 0, 0.0, t0 + 14))
        assert LIVE_URI.findall(live.playlist("c", now=t0 + 14.5) or "") == ["000009"]
        live.add_segment("c", Segment(30, 30, 1.0, False, 15, 0, 0.0, t0 + 15))
        assert LIVE_URI.findall(live.playlist("c", now=t0 + 15) or "") == ["000030"]


def _box_outline_share(image: np.ndarray[Any, Any], box: list[float]) -> float:
    """Share of ``box``'s outline (±4 px) in an RGB frame that has the box colour."""
    close = np.abs(image.astype(np.int16) - BOX_COLOUR.astype(np.int16)).max(axis=2) <= 60
    x1, y1, x2, y2 = (round(v) for v in box)
    edges = [close[max(0, y - 4) : y + 5, x1:x2].any(axis=0) for y in (y1, y2)]
    edges += [close[y1:y2, max(0, x - 4) : x + 5].any(axis=1) for x in (x1, x2)]
    return float(np.mean(np.concatenate(edges)))


def _frames(data: bytes) -> list[np.ndarray[Any, Any]]:
    with av.open(io.BytesIO(data), format="mpegts") as ts:
        return [f.to_ndarray(format="rgb24") for f in ts.decode(video=0)]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


async def _output_and_encode(settings: Settings, camera: str) -> tuple[list[SegmentMessage], int]:
    """Every OUTPUT segment of ``camera``, and the ENCODE stream's last sequence (items ever)."""
    nc = await bus.connect(settings, "test-on-demand")
    try:
        js = nc.jetstream(timeout=10.0)
        info = await js.stream_info(Names.OUTPUT)
        out: list[SegmentMessage] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await js.get_msg(Names.OUTPUT, seq)
            seg = messages.decode(raw.headers, raw.data or b"", SegmentMessage)
            if seg.camera == camera:
                out.append(seg)
        encode = (await js.stream_info(Names.ENCODE)).state.last_seq
        return out, encode
    finally:
        await nc.close()


async def _set_mode(settings: Settings, mode: str | None) -> None:
    nc = await bus.connect(settings, "test-on-demand")
    try:
        await set_mode(nc.jetstream(timeout=10.0), "od", mode)
    finally:
        await nc.close()


async def _encode_last_seq(settings: Settings) -> int:
    nc = await bus.connect(settings, "test-on-demand")
    try:
        return (await nc.jetstream(timeout=10.0).stream_info(Names.ENCODE)).state.last_seq
    finally:
        await nc.close()


@pytest.mark.integration
def test_on_demand_burns_in_only_while_watched_and_the_encoder_sleeps_at_zero(
    settings: Settings, nats_server: NatsServer
) -> None:
    """A real-time camera under the local autoscaler, switched from burn-in to on-demand while it
    runs (from the next GOP, nothing lost): with nobody watching, the recording is the camera's
    own GOPs byte for byte and the encoder gets no ENCODE item and goes to 0 replicas; an HLS
    viewer polling /<cam>/live.m3u8 wakes it and the next GOPs come as burn-in live segments
    with the boxes in the pixels (not recorded); once the viewer stops, live segments stop
    within the viewer TTL and the encoder goes back to 0."""
    source = _camera_clip()
    container, stream = open_input(str(source))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base)
        gops = [gop_message("od", g, params) for g in cutter.cut(iter_packets(container, stream))]
    total = len(gops)
    assert total == round(CAMERA.seconds * CAMERA.fps / CAMERA.gop)
    settings = settings.replace(
        output={"mode": "on-demand"},
        streams={"viewer_ttl_s": VIEWER_TTL_S},
        encoder={"in_flight": 1, "fetch_batch": 1},
        local={"max_replicas": 2},
    )
    out = Path(settings.sink.output_dir) / "od"
    system = LocalSystem(
        settings, Path(settings.local.state_dir), embedded_nats=False, monitor_url=nats_server.monitor_url
    )
    scaling = StageScaling(decoder=_fast(), inference=_fast(), analysis=_fast(), encoder=_fast())
    with system:
        system.start({Names.ENCODER: 1})
        system.wait_ready()
        web = system.start_web()
        autoscaler = system.enable_autoscaling(scaling)
        asyncio.run(_set_mode(settings, "burn-in"))  # the camera's own override, for now
        gateway = system.add_camera("od", str(source), "realtime")

        def wait(what: str, done: Any, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not done():
                assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
                system.supervise()
                time.sleep(0.1)

        # 0. Burn-in for two GOPs, then the camera back to the default, on-demand, while it runs.
        wait("2 recorded GOPs", lambda: (out / "seg_000001.ts").is_file(), 60)
        asyncio.run(_set_mode(settings, None))
        # 1. Nobody watches: the recording grows, the encoder goes to zero, no new ENCODE item.
        # ... and no encoder process left (a draining one would still take a first live GOP).
        wait("no encoder process", lambda: not any(
            m.alive for m in system.processes if process_kind(m.name) == Names.ENCODER), 40)  # fmt: skip
        before_viewer = asyncio.run(_encode_last_seq(settings))
        wait("2 more recorded GOPs", lambda: len(list(out.glob("seg_*.ts"))) >= before_viewer + 2, 20)
        assert asyncio.run(_encode_last_seq(settings)) == before_viewer
        # 2. A viewer: an HLS player reloading the annotated live playlist.
        viewer_since = time.monotonic()
        seen: list[int] = []
        first_live_after: float | None = None
        deadline = viewer_since + 60
        while len(seen) < 3:
            assert time.monotonic() < deadline, "no 3 live segments within 60 s of a viewer"
            playlist = _get(web + "od/live.m3u8").decode()
            seen = [int(g) for g in LIVE_URI.findall(playlist)]
            if seen and first_live_after is None:
                first_live_after = time.monotonic() - viewer_since
            system.supervise()
            time.sleep(0.5)
        live_bytes = {gop: _get(web + f"od/live_{gop:06d}.ts") for gop in seen}
        left_at = time.time()
        # 3. The viewer left: the rest of the camera, then the encoder back at zero.
        assert system.wait_for_camera("od", gateway, stall_timeout=90).complete
        wait("encoder back at 0 replicas", lambda: not system.replicas(Names.ENCODER), 40)
        segments, encode_items = asyncio.run(_output_and_encode(settings, "od"))
    print(
        f"on-demand cold start: first live segment {first_live_after:.1f} s after the viewer's first request"
    )

    recorded = sorted((s for s in segments if s.rendition != "live"), key=lambda s: s.gop)
    live = sorted((s for s in segments if s.rendition == "live"), key=lambda s: s.gop)
    assert [s.gop for s in recorded] == list(range(total))
    # The switch applied at a GOP boundary: burn-in (encoder, rendition "") then on-demand's
    # recording (the analysis stage's remux), with no GOP lost or doubled at the switch.
    burnt = sum(1 for s in recorded if s.rendition == "")
    assert 2 <= burnt <= before_viewer, (burnt, before_viewer)
    assert [(s.rendition, s.mode) for s in recorded] == [("", "burn-in")] * burnt + [
        ("recording", "overlay")
    ] * (total - burnt)
    # Every on-demand GOP recorded is the camera's own packets (overlay), byte for byte.
    for gop in gops[burnt:]:
        with av.open(io.BytesIO((out / f"seg_{gop.gop:06d}.ts").read_bytes()), format="mpegts") as ts:
            packets = [bytes(p) for p in ts.demux(ts.streams.video[0]) if p.size]
        assert packets == [bytes(p) for p in gop.packets], gop.gop
    # The encoder worked for the burn-in GOPs and the watched GOPs only: one item each.
    live_gops = [s.gop for s in live]
    assert encode_items == burnt + len(live_gops), (encode_items, burnt, live_gops)
    assert live_gops == list(range(live_gops[0], live_gops[-1] + 1)), live_gops
    assert set(seen) <= set(live_gops)
    assert first_live_after is not None
    assert live_gops[-1] < total - 3, (
        f"live until GOP {live_gops[-1]} of {total}: the viewer left long before"
    )
    sidecars = {g: json.loads((out / f"seg_{g:06d}.json").read_text()) for g in live_gops}
    # The live GOPs stop within the TTL of the last request (plus the pipeline's own delay):
    # the GOP being captured when the viewer left, plus ttl / GOP length, plus 6 GOPs of slack.
    gop_s = CAMERA.gop / CAMERA.fps
    assert live_gops[-1] - seen[-1] <= VIEWER_TTL_S / gop_s + 6, (live_gops, seen, left_at)
    # Boxes are in the live pixels and only there: the recording of the same frame has none.
    checked = 0
    for gop in seen:
        live_frames, recorded_frames = (
            _frames(live_bytes[gop]),
            _frames((out / f"seg_{gop:06d}.ts").read_bytes()),
        )
        assert len(live_frames) == len(recorded_frames) == CAMERA.gop
        for index, frame in enumerate(sidecars[gop]["frames"]):
            if frame["detections"] and index % 5 == 0:
                box = frame["detections"][0]["box"]
                assert _box_outline_share(live_frames[index], box) > 0.8, (gop, index)
                assert _box_outline_share(recorded_frames[index], box) < 0.2, (gop, index)
                checked += 1
    assert checked >= 3
    # The autoscaler took the encoder to 0, up for the viewer, and back to 0.
    encoder = [n for _, stage, n, _, _ in autoscaler.timeline if stage == Names.ENCODER]
    asleep = encoder.index(0)
    assert max(encoder[asleep:]) >= 1, autoscaler.timeline
    assert encoder[-1] == 0, autoscaler.timeline
    # The recording's playlist decodes to every source frame; live segments are not in it.
    with av.open(str(out / "index.m3u8")) as playlist:
        assert sum(1 for _ in playlist.decode(video=0)) == CAMERA.frames
    assert "live_" not in (out / "index.m3u8").read_text()
