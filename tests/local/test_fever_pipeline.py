"""Fever screening end to end: a visible and a paired thermal camera, every stage its own process.

Two real portraits stand still in front of the visible camera; the radiometric twin has
the left face at 38.4 °C and the right one at 36.6 °C. The thermal gateway publishes to
THERMAL; the analysis stage runs the ``fever`` attribute on the visible camera; the sink
follows each track: exactly one ``alert.fever``, for the 38.4 °C person.

Needs the face-attribute plumbing of the analysis stage and the sink
(``framepipe.stages.analysis.reading``); skipped, saying so, in a build without it.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.supervisor import LocalSystem
from framepipe.stages.analysis.embedder import FaceEmbedder
from tests.helpers import read_jsonl
from tests.thermal_media import HOMOGRAPHY, PEOPLE, make_paired_clips

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("framepipe.stages.analysis.reading") is None,
        reason="the analysis stage has no face-attribute plumbing in this build (issue 15, mask half)",
    ),
]


def test_one_fever_alert_for_the_hot_person_none_for_the_other(settings: Settings, tmp_path: Path) -> None:
    """38.4 °C: one alert.fever on its track, a reading near 38.4 in events; 36.6 °C: no alert."""
    clips = make_paired_clips(tmp_path, FaceEmbedder(), drift_px=0, thermal_seconds=8)
    settings = settings.replace(
        analysis={"fetch_batch": 1, "in_flight": 1, "ack_wait_s": 30.0, "camera_attributes": "lobby=fever"},
        thermal={"homography": json.dumps({"lobby-ir": HOMOGRAPHY})},
        local={"autoscale": False},
    )
    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    with system:
        system.start({Names.ANALYSIS: 1})
        system.wait_ready()
        # The thermal camera first: it covers the whole visible clip (8 s against 3 s).
        system.add_camera("lobby-ir", str(clips.thermal), "realtime", thermal_of="lobby")
        gateway = system.add_camera("lobby", str(clips.visible), "realtime")
        result = system.wait_for_camera("lobby", gateway, stall_timeout=180)
        assert result.complete, result.reason

    events = read_jsonl(Path(settings.sink.output_dir) / "lobby" / "events.jsonl")
    alerts = [e for e in events if e["type"] == "alert.fever"]
    assert len(alerts) == 1, Counter(str(e["type"]) for e in events)
    hot_track = alerts[0]["track"]
    hot_c = PEOPLE[0][2]
    fever = alerts[0]["attributes"]["fever"]  # type: ignore[index]
    assert abs(float(fever["value"]) - hot_c) < 0.3, fever
    left = {e["track"]: e for e in events if e["type"] == "person.left"}
    assert len(left) == 2, left
    other = next(e for track, e in left.items() if track != hot_track)
    assert abs(float(other["attributes"]["fever"]["value"]) - PEOPLE[1][2]) < 0.3, other  # type: ignore[index]
    assert not (Path(settings.sink.output_dir) / "lobby-ir").exists()  # thermal GOPs never reach the sink
