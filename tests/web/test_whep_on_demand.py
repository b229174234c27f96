"""WebRTC of an on-demand camera: the WHEP session itself is the viewer presence, and what it
plays is the camera's burn-in live rendition, never its overlay recording."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from framepipe.core import bus, messages
from framepipe.core.messages import SegmentMessage
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.supervisor import LocalSystem
from framepipe.media.annotate import BOX_COLOUR
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.web.server import WebServer
from tests.helpers import MEDIA
from tests.whep_client import WhepViewer, stamps

CAMERA = ClipSpec(width=640, height=360, fps=25, seconds=8.0, gop=25, bframes=0, stamp=True)


async def _renditions(settings: Settings, camera: str) -> dict[str, list[int]]:
    nc = await bus.connect(settings, "test-whep-on-demand")
    try:
        js = nc.jetstream(timeout=10.0)
        info = await js.stream_info(Names.OUTPUT)
        out: dict[str, list[int]] = {}
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await js.get_msg(Names.OUTPUT, seq)
            seg = messages.decode(raw.headers, raw.data or b"", SegmentMessage)
            if seg.camera == camera:
                out.setdefault(seg.rendition, []).append(seg.gop)
        return {k: sorted(v) for k, v in out.items()}
    finally:
        await nc.close()


@pytest.mark.integration
def test_a_whep_viewer_of_an_on_demand_camera_gets_the_burn_in_live_rendition(settings: Settings) -> None:
    """A WHEP viewer joining an on-demand camera as it starts makes its GOPs go to burn-in
    (the session keeps FP_VIEWERS alive), and every frame it decodes, in order, belongs to a
    live GOP and shows the boxes in its pixels; the recording still has every GOP as overlay."""
    source = MEDIA / "whep_on_demand_8s.mp4"
    if not source.is_file():
        make_clip(source, CAMERA)
    settings = settings.replace(output={"mode": "on-demand"}, streams={"viewer_ttl_s": 2.0})
    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    with system:
        system.start({Names.ENCODER: 1})
        system.wait_ready()
        web = WebServer(settings, port=0).start()
        try:
            system.add_camera("door", str(source), "realtime")

            async def watch() -> list[av.VideoFrame]:
                viewer = WhepViewer(web.url, "door")
                deadline = time.monotonic() + 30
                while (reply := await viewer.connect()).status == 404:  # until the gateway registers
                    assert time.monotonic() < deadline, reply.body
                    await asyncio.sleep(0.05)
                assert reply.status == 201, reply
                frames = await viewer.frames(until_idle_s=6.0)
                await viewer.close()
                return frames

            frames = asyncio.run(watch())
            got = stamps(frames)
            gateway = next(m for m in system.processes if m.name == "gateway-door")
            assert system.wait_for_camera("door", gateway, stall_timeout=60).complete
        finally:
            web.stop()
        renditions = asyncio.run(_renditions(settings, "door"))
    gops = round(CAMERA.seconds * CAMERA.fps / CAMERA.gop)
    assert renditions["recording"] == list(range(gops))
    live = set(renditions.get("live", []))
    assert len(live) >= gops // 2, renditions
    assert got, "the WHEP viewer decoded no frame"
    assert all(frame is not None for frame in got), got[:10]
    numbers = [frame for frame in got if frame is not None]
    assert numbers == sorted(numbers), numbers[:10]
    assert {frame // CAMERA.gop for frame in numbers} <= live, (sorted(live), numbers[:5], numbers[-5:])
    # What it played is burnt in: the detections' boxes are in its pixels.
    out = Path(settings.sink.output_dir) / "door"
    boxes = {
        f["frame"]: f["detections"][0]["box"]
        for gop in live
        for f in json.loads((out / f"seg_{gop:06d}.json").read_text())["frames"]
        if f["detections"]
    }
    shares = [
        _box_outline_share(frame.to_ndarray(format="rgb24"), boxes[number])
        for frame, number in zip(frames, got, strict=True)
        if number in boxes and number % 10 == 0
    ]
    assert len(shares) >= 3, shares
    assert min(shares) > 0.8, shares


def _box_outline_share(image: np.ndarray[Any, Any], box: list[float]) -> float:
    """Share of ``box``'s outline (±4 px) in an RGB frame that has the box colour."""
    close = np.abs(image.astype(np.int16) - BOX_COLOUR.astype(np.int16)).max(axis=2) <= 60
    x1, y1, x2, y2 = (round(v) for v in box)
    edges = [close[max(0, y - 4) : y + 5, x1:x2].any(axis=0) for y in (y1, y2)]
    edges += [close[y1:y2, max(0, x - 4) : x + 5].any(axis=1) for x in (x1, x2)]
    return float(np.mean(np.concatenate(edges)))
