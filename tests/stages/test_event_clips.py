"""Event clips: an on-demand camera's alert gets its GOPs (N before, M after) burnt in by the
encoder, joined by the sink into clips/<event id>.ts (every stage a process, real faces)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import numpy as np
import pytest

from framepipe.core.events import UNKNOWN_ALERT
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.supervisor import LocalSystem
from framepipe.media.annotate import BOX_COLOUR
from framepipe.media.sample import ClipSpec
from tests.helpers import portrait_clip, read_jsonl

#: 4 s at 30 fps in GOPs of 10 frames: Biden (not enrolled) is unknown, alerted after a few GOPs.
CLIP = ClipSpec(width=640, height=360, seconds=4.0, gop=10, bframes=0)


def _outline_share(frame: av.VideoFrame, box: list[float]) -> float:
    """Share of ``box``'s outline (±4 px) that has the box colour."""
    image = frame.to_ndarray(format="rgb24").astype(np.int16)
    close = np.abs(image - BOX_COLOUR.astype(np.int16)).max(axis=2) <= 60
    x1, y1, x2, y2 = (round(v) for v in box)
    edges = [close[max(0, y - 4) : y + 5, x1:x2].any(axis=0) for y in (y1, y2)]
    edges += [close[y1:y2, max(0, x - 4) : x + 5].any(axis=1) for x in (x1, x2)]
    return float(np.mean(np.concatenate(edges)))


def _frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


@pytest.mark.integration
def test_alert_of_an_on_demand_camera_becomes_a_burnt_in_clip_of_the_gops_around_it(
    settings: Settings,
) -> None:
    """The unknown-person alert of an on-demand camera (nobody watching) gets clips/<id>.ts: its
    GOPs from N before to M after the alert's, every frame, boxes burnt in where the recording
    (overlay, the camera's own pixels) has none; clips/index.jsonl names it."""
    settings = settings.replace(
        output={"mode": "on-demand", "clip_gops_before": 2, "clip_gops_after": 1},
        analysis={"fetch_batch": 1, "in_flight": 1},
        local={"autoscale": False},
    )
    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    out = Path(settings.sink.output_dir) / "hall"
    with system:
        system.start({Names.ENCODER: 1})
        system.wait_ready()
        gateway = system.add_camera("hall", str(portrait_clip("biden.jpg", CLIP)), "fast")
        assert system.wait_for_camera("hall", gateway, stall_timeout=180).complete
        deadline = time.monotonic() + 60
        while not (out / "clips" / "index.jsonl").is_file():
            assert time.monotonic() < deadline, f"no clip within 60 s: {sorted((out / 'clips').glob('*'))}"
            system.supervise()
            time.sleep(0.2)
    alerts = [e for e in read_jsonl(out / "events.jsonl") if e["type"] == UNKNOWN_ALERT]
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    gops = CLIP.frames // CLIP.gop
    expected = [g for g in range(alert["gop"] - 2, alert["gop"] + 2) if 0 <= g < gops]
    index = read_jsonl(out / "clips" / "index.jsonl")
    assert index == [
        {"event": alert["id"], "type": UNKNOWN_ALERT, "gops": expected, "file": f"{alert['id']}.ts"}
    ]
    clip = _frames(out / "clips" / f"{alert['id']}.ts")
    assert len(clip) == len(expected) * CLIP.gop  # every frame of every GOP, in order
    boxes = {
        line["frame"]: line["detections"][0]["box"]
        for line in read_jsonl(out / "detections.jsonl")
        if line["detections"]
    }
    first = expected[0] * CLIP.gop
    probe = [f for f in range(first, first + len(clip), 7) if f in boxes]
    assert len(probe) >= 3, probe
    for frame in probe:
        recorded = _frames(out / f"seg_{frame // CLIP.gop:06d}.ts")[frame % CLIP.gop]
        assert _outline_share(recorded, boxes[frame]) < 0.2, frame  # overlay: no box in the pixels
        assert _outline_share(clip[frame - first], boxes[frame]) > 0.8, frame  # the clip: burnt in
    assert json.loads((out / "clips" / f"{alert['id']}.json").read_text())["file"] == f"{alert['id']}.ts"
