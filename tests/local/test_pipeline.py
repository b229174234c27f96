"""End to end: real nats-server, every stage as its own OS process, real video.

The face ground truth: the sample clip pans and zooms scikit-image's astronaut
photo, whose face box is ``ASTRONAUT_FACE`` = (172, 62)-(282, 180) in the
photo's pixels; ``face_box`` maps it into each frame.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from framepipe.core import bus, messages
from framepipe.core.messages import Headers
from framepipe.core.settings import Settings
from framepipe.core.sources import SourceState
from framepipe.core.topology import Names
from framepipe.local.supervisor import LocalSystem
from framepipe.media.gop import GopCutter
from framepipe.media.sample import count_frames, face_box
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
from framepipe.stages.inference.detectors.blazeface import iou
from tests.helpers import FACES, MODELS, clip, faces_clip, output_gops, read_jsonl

pytestmark = pytest.mark.integration


def _playlist_segments(playlist: Path) -> list[str]:
    return [line for line in playlist.read_text().splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("name", ["h264_bframes.mp4", "hevc_odd.mkv"])
def test_cli_run_once_keeps_every_frame_in_order(name: str, tmp_path: Path) -> None:
    """`framepipe run --once` (embedded NATS, all stages) on H.264 with B-frames and on
    odd-sized HEVC: the playlist holds as many frames as the input, and
    detections.jsonl has one line per input frame, in order."""
    source = clip(name)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "state"),
        "FRAMEPIPE_INFERENCE__MODELS_DIR": str(MODELS),
    }
    result = subprocess.run(
        [sys.executable, "-m", "framepipe", "run", "--source", str(source), "--output", str(out),
         "--camera", "cli", "--once"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    playlist = out / "cli" / "index.m3u8"
    assert "#EXT-X-ENDLIST" in playlist.read_text()
    expected = count_frames(source)
    with av.open(str(playlist)) as container:
        assert sum(1 for _ in container.decode(video=0)) == expected
    lines = read_jsonl(out / "cli" / "detections.jsonl")
    assert [line["frame"] for line in lines] == list(range(expected))
    assert all(line["camera"] == "cli" for line in lines)


def test_two_decoders_two_encoders_exactly_once_and_in_order(settings: Settings) -> None:
    """With 2 decoder and 2 encoder processes every GOP reaches OUTPUT exactly once,
    the playlist is in GOP order, and the face is found on the frames."""
    source = faces_clip()
    settings = settings.replace(decoder={"fetch_batch": 1}, encoder={"fetch_batch": 1})
    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    with system:
        system.start({Names.DECODER: 2, Names.ENCODER: 2})
        system.wait_ready()
        gateway = system.add_camera("lobby", str(source), "fast")
        result = system.wait_for_camera("lobby", gateway, stall_timeout=120)
    assert result.complete, result.reason
    gops = FACES.frames // FACES.gop
    assert output_gops(settings, "lobby") == Counter({g: 1 for g in range(gops)})

    out = Path(settings.sink.output_dir) / "lobby"
    assert _playlist_segments(out / "index.m3u8") == [f"seg_{g:06d}.ts" for g in range(gops)]
    lines = read_jsonl(out / "detections.jsonl")
    assert [line["frame"] for line in lines] == list(range(FACES.frames))

    logs = Path(settings.local.state_dir) / "logs"
    for stage in ("decoder", "encoder"):
        done = [
            sum(
                '"event": "gop.done"' in line for line in (logs / f"{stage}-{i}.log").read_text().splitlines()
            )
            for i in range(2)
        ]
        assert sum(done) == gops
        assert all(count > 0 for count in done), f"{stage} replicas did not share the work: {done}"

    hits = 0
    for line in lines:
        truth = np.array(face_box(FACES, int(line["frame"])), dtype=np.float32)  # type: ignore[arg-type]
        boxes = np.array([d["box"] for d in line["detections"]], dtype=np.float32)  # type: ignore[union-attr]
        if len(boxes) and iou(truth, boxes).max() >= 0.5:
            hits += 1
    assert hits >= 0.9 * len(lines), f"face found with IoU >= 0.5 on {hits}/{len(lines)} frames"


def _publish_raw(settings: Settings, items: list[tuple[str, dict[str, str], bytes, str]]) -> None:
    async def go() -> None:
        nc = await bus.connect(settings, "test-publisher", retry_initial=False)
        try:
            js = nc.jetstream()
            for subject, headers, body, msg_id in items:
                await bus.publish(js, subject, body, headers, msg_id)
        finally:
            await nc.close()

    asyncio.run(go())


def _set_source_state(settings: Settings, state: SourceState) -> None:
    async def go() -> None:
        nc = await bus.connect(settings, "test-kv", retry_initial=False)
        try:
            kv = await nc.jetstream().key_value(Names.SOURCES_BUCKET)
            await kv.put(state.camera, state.to_json())
        finally:
            await nc.close()

    asyncio.run(go())


def _dead_letters(settings: Settings) -> list[dict[str, str]]:
    async def go() -> list[dict[str, str]]:
        nc = await bus.connect(settings, "test-dlq", retry_initial=False)
        try:
            js = nc.jetstream()
            info = await js.stream_info(Names.DLQ)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                raw = await js.get_msg(Names.DLQ, seq)
                out.append({"subject": raw.subject or "", **(raw.headers or {})})
            return out
        finally:
            await nc.close()

    return asyncio.run(go())


def test_corrupt_input_is_dead_lettered_and_the_pipeline_keeps_going(settings: Settings) -> None:
    """A garbage GOP, an unknown envelope version and a non-msgpack body each go to
    dlq.<stage> with the reason in headers; the sink marks the lost GOP as a gap
    (discontinuity) and finishes the camera; a camera started afterwards is
    processed normally."""
    container, stream = open_input(str(clip("h264_bframes.mp4")))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base)
        gops = [gop_message("mixed", g, params) for g in cutter.cut(iter_packets(container, stream))]
    assert len(gops) == 3
    broken = gops[1].__dict__ | {"packets": tuple(os.urandom(len(p)) for p in gops[1].packets)}
    gops[1] = type(gops[1])(**broken)

    items = []
    for gop in gops:
        headers, body = messages.encode(gop)
        items.append(
            (Names.subject(Names.VIDEO, "mixed"), headers, body, Names.msg_id("mixed", gop.gop, "gateway"))
        )
    headers, body = messages.encode(gops[0])
    items.append(
        ("video.junk", {**headers, Headers.VERSION: "99", Headers.CAMERA: "junk"}, body, "junk:0:gateway")
    )
    items.append(
        ("frames.junk", {Headers.VERSION: "1", Headers.KIND: "frames"}, b"\xc1 not msgpack", "junk:0:d:0")
    )

    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    with system:
        system.start()
        system.wait_ready()
        _set_source_state(settings, SourceState("mixed", "test", state="ended", next_gop=3, next_frame=90))
        _publish_raw(settings, items)
        result = system.wait_for_camera("mixed", system.processes[0], stall_timeout=90)
        assert not result.complete
        assert [g["gop"] for g in result.gaps] == [1]
        assert "dead-lettered" in result.reason

        after = system.add_camera("after", str(clip("h264_bframes.mp4")), "fast")
        assert system.wait_for_camera("after", after, stall_timeout=90).complete

    letters = _dead_letters(settings)
    by_kind = {(d["subject"], d[Headers.ERROR_KIND]) for d in letters}
    assert ("dlq.decoder", "corrupt-media") in by_kind
    assert ("dlq.decoder", "unknown-version") in by_kind
    assert ("dlq.inference", "schema") in by_kind
    corrupt = next(d for d in letters if d[Headers.ERROR_KIND] == "corrupt-media")
    assert corrupt[Headers.CAMERA] == "mixed"
    assert corrupt[Headers.GOP] == "1"
    assert corrupt[Headers.ORIGINAL_SUBJECT] == "video.mixed"
    assert corrupt[Headers.ERROR]

    out = Path(settings.sink.output_dir) / "mixed"
    text = (out / "index.m3u8").read_text()
    assert _playlist_segments(out / "index.m3u8") == ["seg_000000.ts", "seg_000002.ts"]
    assert text.index("#EXT-X-DISCONTINUITY") < text.index("seg_000002.ts")
    frames = [line["frame"] for line in read_jsonl(out / "detections.jsonl")]
    assert frames == list(range(30)) + list(range(60, 90))
