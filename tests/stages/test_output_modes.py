"""Output modes: burn-in (boxes re-encoded into the video) or overlay (the camera's own GOP
remuxed, boxes as a sidecar per segment), set per camera on a running system."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import av
import numpy as np
import pytest

from framepipe.core import bus
from framepipe.core.errors import ConfigError
from framepipe.core.messages import Detection, FrameDetections, SegmentMessage
from framepipe.core.settings import OutputSettings, Settings
from framepipe.core.topology import Names
from framepipe.local.supervisor import LocalSystem
from framepipe.media.annotate import BOX_COLOUR
from framepipe.media.gop import GopCutter
from framepipe.media.overlay import segment_metadata
from framepipe.media.sample import ClipSpec, face_box, make_clip
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
from framepipe.stages.output_modes import set_mode
from framepipe.web.export import export
from tests.helpers import MEDIA, read_jsonl

#: an Annex B camera (H.264 in MPEG-TS, as RTSP delivers it): 12 GOPs of 0.5 s.
CAMERA = ClipSpec(width=640, height=360, fps=30, seconds=6.0, gop=15, bframes=2)


def _camera_clip() -> Path:
    path = MEDIA / "modes_annexb.ts"
    if not path.is_file():
        make_clip(path, CAMERA)
    return path


class TestOutputSettings:
    def test_mode_is_validated(self) -> None:
        """[output] mode takes burn-in or overlay; anything else names the setting."""
        assert OutputSettings().mode == "burn-in"
        with pytest.raises(ConfigError, match=r"output\.mode must be one of burn-in, overlay"):
            OutputSettings(mode="bogus")  # type: ignore[arg-type]

    def test_sidecar_times_frames_from_the_segment_start(self) -> None:
        """The sidecar lists frames by pts with their time from the segment's first frame."""
        box = Detection((1.0, 2.0, 3.0, 4.0), 0.9)
        frames = (FrameDetections(31, 1536, ()), FrameDetections(30, 1024, (box,)))
        segment = SegmentMessage("c", 2, "mpegts", 0.1, frames, b"", mode="overlay", time_base=(1, 15360))
        meta = segment_metadata(segment)
        assert (meta["mode"], meta["start_pts"]) == ("overlay", 1024)
        assert [(f["frame"], f["t"]) for f in meta["frames"]] == [
            (30, 0.0),
            (31, pytest.approx(1 / 30, abs=1e-5)),
        ]
        assert meta["frames"][0]["detections"][0]["box"] == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.integration
def test_mode_change_takes_effect_at_the_next_gop_of_a_running_system(
    settings: Settings, tmp_path: Path
) -> None:
    """A camera streams in real time in burn-in; switching it to overlay while it runs turns
    the following GOPs into the camera's own packets, byte for byte, with the boxes in the
    sidecars; the one playlist still decodes to every source frame; `export --burn-in`
    draws the overlay GOPs' boxes onto the face, a plain export does not."""
    source = _camera_clip()
    container, stream = open_input(str(source))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base)
        gops = [gop_message("flip", g, params) for g in cutter.cut(iter_packets(container, stream))]
    assert len(gops) == 12
    settings = settings.replace(encoder={"in_flight": 1, "fetch_batch": 1})
    out = Path(settings.sink.output_dir) / "flip"
    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    with system:
        system.start({Names.ENCODER: 1})
        system.wait_ready()
        gateway = system.add_camera("flip", str(source), "realtime")
        deadline = time.monotonic() + 60
        while not (out / "seg_000000.json").is_file():
            assert time.monotonic() < deadline, "no segment within 60 s"
            system.supervise()
            time.sleep(0.1)

        async def flip() -> None:
            nc = await bus.connect(settings, "test-flip")
            try:
                await set_mode(nc.jetstream(timeout=10.0), "flip", "overlay")
            finally:
                await nc.close()

        asyncio.run(flip())
        assert system.wait_for_camera("flip", gateway, stall_timeout=90).complete
        encode_items = asyncio.run(_encode_items(settings))
    sidecars = [json.loads((out / f"seg_{g:06d}.json").read_text()) for g in range(12)]
    modes = [s["mode"] for s in sidecars]
    switched = modes.index("overlay")
    assert 1 <= switched < 12, modes
    assert modes == ["burn-in"] * switched + ["overlay"] * (12 - switched), modes
    # The encoder got only what was routed as burn-in (items still queued at the switch are
    # remuxed by it); the analysis stage remuxed the rest itself.
    assert switched <= encode_items < 12, (switched, encode_items)
    for gop in gops[switched:]:
        with av.open(io.BytesIO((out / f"seg_{gop.gop:06d}.ts").read_bytes()), format="mpegts") as ts:
            packets = [bytes(p) for p in ts.demux(ts.streams.video[0]) if p.size]
        assert packets == [bytes(p) for p in gop.packets], gop.gop
        assert sum(1 for f in sidecars[gop.gop]["frames"] if f["detections"]) >= len(gop.packets) // 2
    for gop in gops[:switched]:  # burn-in: re-encoded, not the source's bytes
        assert (out / f"seg_{gop.gop:06d}.ts").read_bytes().find(gop.packets[1]) < 0
    with av.open(str(out / "index.m3u8")) as playlist:
        assert sum(1 for _ in playlist.decode(video=0)) == CAMERA.frames
    lines = read_jsonl(out / "detections.jsonl")
    assert [line["frame"] for line in lines] == list(range(CAMERA.frames))
    since, until = time.time() - 600, time.time()
    plain = export(settings, "flip", since, until, tmp_path / "plain.mp4")
    burnt = export(settings, "flip", since, until, tmp_path / "burnt.mp4", burn_in=True)
    assert plain.segments == burnt.segments == 12
    # Frames of the last (overlay) GOP with a detection: the box drawn is the detection's,
    # and the detection is on the face.
    probe = [(f["frame"], f["detections"][0]["box"]) for f in sidecars[-1]["frames"] if f["detections"]][::5]
    assert len(probe) >= 2
    for index, box in probe:
        assert _iou(box, face_box(CAMERA, index)) >= 0.5, (index, box)
        assert _outline_share(tmp_path / "plain.mp4", index, box) < 0.2, index
        assert _outline_share(tmp_path / "burnt.mp4", index, box) > 0.8, index


async def _encode_items(settings: Settings) -> int:
    """ENCODE items ever published (the stream's last sequence; only this test's camera)."""
    nc = await bus.connect(settings, "test-encode-items")
    try:
        return int((await nc.jetstream(timeout=10.0).stream_info(Names.ENCODE)).state.last_seq)
    finally:
        await nc.close()


def _iou(a: list[float], b: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def _outline_share(video: Path, index: int, box: list[float]) -> float:
    """Share of ``box``'s outline (±4 px) in frame ``index`` of ``video`` that has the box colour."""
    with av.open(str(video)) as container:
        frame = next(f for i, f in enumerate(container.decode(video=0)) if i == index)
    image = frame.to_ndarray(format="rgb24").astype(np.int16)
    close = np.abs(image - BOX_COLOUR.astype(np.int16)).max(axis=2) <= 60
    x1, y1, x2, y2 = (round(v) for v in box)
    edges = [close[max(0, y - 4) : y + 5, x1:x2].any(axis=0) for y in (y1, y2)]
    edges += [close[y1:y2, max(0, x - 4) : x + 5].any(axis=1) for x in (x1, x2)]
    return float(np.mean(np.concatenate(edges)))
