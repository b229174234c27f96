"""The mask attribute end to end: a masked portrait through every stage as its own process.

Two cameras show the same clip: Biden (a person the mask baseline never saw in
training) wearing a mask drawn on his photo. ``analysis.attributes = "mask"`` switches it
on for every camera, ``analysis.camera_attributes = "bare="`` off for camera ``bare``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from framepipe.core.events import check_event
from framepipe.core.settings import Settings
from framepipe.local.supervisor import LocalSystem
from framepipe.media.sample import ClipSpec
from tests.helpers import MODELS, masked_portrait_clip, read_jsonl

pytestmark = pytest.mark.integration
CLIP = ClipSpec(width=640, height=360, seconds=2.0, gop=10, bframes=2)


def _faces(out: Path) -> list[dict[str, Any]]:
    return [d for line in read_jsonl(out / "detections.jsonl") for d in line["detections"]]  # type: ignore[union-attr]


def _first_frame(segment: Path) -> np.ndarray[Any, np.dtype[np.uint8]]:
    with av.open(str(segment)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")  # type: ignore[return-value]


def test_masked_face_is_reported_worn_where_switched_on_and_absent_where_off(settings: Settings) -> None:
    """Camera door: ≥ 80 % of the faces in detections.jsonl carry mask=worn, every event
    carries the track's mask value, and the drawn label makes its frames differ from
    camera bare's under the face; camera bare (switched off) has no attribute anywhere."""
    if not (MODELS / "mask_baseline.onnx").is_file():
        pytest.fail("the mask baseline is missing: run `make models` before the tests", pytrace=False)
    settings = settings.replace(
        analysis={
            "fetch_batch": 1,
            "ack_wait_s": 30.0,
            "retry_backoff_s": 0.2,
            "attributes": "mask",
            "camera_attributes": "bare=",
        },
        local={"autoscale": False},
    )
    clip = masked_portrait_clip("biden.jpg", CLIP)
    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    with system:
        system.start({})
        system.wait_ready()
        gateways = {cam: system.add_camera(cam, str(clip), "fast") for cam in ("door", "bare")}
        for cam, gateway in gateways.items():
            result = system.wait_for_camera(cam, gateway, stall_timeout=180)
            assert result.complete, result.reason

    root = Path(settings.sink.output_dir)
    door, bare = _faces(root / "door"), _faces(root / "bare")
    assert len(door) >= 0.9 * CLIP.frames, f"faces on {len(door)}/{CLIP.frames} frames"
    masks = Counter(f.get("attributes", {}).get("mask", {}).get("value") for f in door)
    assert masks["worn"] >= 0.8 * len(door), masks
    assert all("attributes" not in f for f in bare), "camera bare has the attribute switched off"
    events = [check_event(e) for e in read_jsonl(root / "door" / "events.jsonl")]
    assert events, "no events on camera door"
    last = events[-1]
    assert last["attributes"]["mask"]["value"] == "worn", last
    assert all(check_event(e)["attributes"] == {} for e in read_jsonl(root / "bare" / "events.jsonl"))
    # The label plate under the box: same input, same encoder; only door's frame has it.
    x1, _, x2, y2 = (round(v) for v in door[0]["box"])
    drawn, plain = (
        _first_frame(root / "door" / "seg_000000.ts"),
        _first_frame(root / "bare" / "seg_000000.ts"),
    )
    plate_w = len("mask worn") * 4 + 1  # annotate's 3×5 glyphs at scale 1 (360 rows)
    below = (slice(y2 + 2, min(y2 + 7, CLIP.height)), slice(max(x1, 0) + 1, min(x1 + plate_w, x2)))
    difference = np.abs(drawn[below].astype(int) - plain[below].astype(int)).mean()
    assert difference > 20, f"no label drawn under the face (mean difference {difference:.1f})"
