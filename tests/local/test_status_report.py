"""`framepipe status` and `cameras list` show every camera, its state, and the stages' rates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nats.js import JetStreamContext
from rich.console import Console

from framepipe.core.settings import Settings
from framepipe.core.sources import SourceState
from framepipe.core.topology import Names
from framepipe.local.cameras import CameraSpec, put_camera
from framepipe.local.runtime import ProcessEntry, Runtime
from framepipe.local.status import camera_lines, collect_status, render_status


async def _store_state(js: JetStreamContext, state: SourceState) -> None:
    state.updated_at = time.time()
    await (await js.key_value(Names.SOURCES_BUCKET)).put(state.camera, state.to_json())


class TestStatusReport:
    """The one-shot status report (plain and --json) against a real NATS."""

    async def test_cameras_and_stages_in_the_report(
        self, js: JetStreamContext, nats_settings: Settings, tmp_path: Path
    ) -> None:
        """An added camera and the `run --source` camera, each with its gateway's state; a row per stage."""
        await put_camera(nats_settings, CameraSpec("hall", "rtsp://viewer:pw-secret@10.0.0.9/s"))
        await _store_state(js, SourceState("hall", "rtsp://10.0.0.9/s", state="reconnecting", next_gop=3))
        door = SourceState("door", "clip.mp4", state="running", next_gop=12, lost_frames=2, dropped_gops=4)
        await _store_state(js, door)
        await _store_state(js, SourceState("gone", "old.mp4", state="stopped", next_gop=5))  # removed earlier
        gateway = ProcessEntry("gateway-door", os.getpid(), str(tmp_path / "gateway-door.log"))
        runtime = Runtime(nats_url=nats_settings.nats.url, processes=(gateway,))
        report = await collect_status(nats_settings, runtime)
        cameras = {c["camera"]: c for c in report["cameras"]}
        assert set(cameras) == {"door", "hall"}  # a removed camera's old state is not a camera
        assert cameras["hall"]["state"] == "reconnecting"
        assert "pw-secret" not in cameras["hall"]["source"]
        assert cameras["hall"]["source"].endswith("@10.0.0.9/s")
        assert cameras["hall"]["added_by"] == "cameras add"
        assert cameras["door"] | {"updated_s_ago": None} == {
            "camera": "door",
            "source": "clip.mp4",
            "added_by": "run --source",
            "state": "running",
            "gops": 12,
            "lost_frames": 2,
            "dropped_gops": 4,
            "updated_s_ago": None,
        }
        stages = {row["stage"]: row for row in report["stages"]}
        assert Names.DECODER in stages
        assert stages[Names.DECODER]["lag"] == 0
        assert stages[Names.DECODER]["gops_per_s"] == 0.0
        console = Console(width=300, record=True)
        for table in render_status(report):
            console.print(table)
        text = console.export_text()
        assert "Cameras" in text
        assert "reconnecting" in text
        assert "GOPs/s" in text

    async def test_camera_lines_have_a_header(self, js: JetStreamContext, nats_settings: Settings) -> None:
        """`cameras list` output: a header, then one tab-separated row per camera."""
        await put_camera(nats_settings, CameraSpec("hall", "clip.mp4"))
        report = await collect_status(nats_settings, None)
        lines = camera_lines(report["cameras"])
        assert lines[0].split("\t") == ["CAMERA", "SOURCE", "STATE", "GOPS", "ADDED BY"]
        assert lines[1].split("\t") == ["hall", "clip.mp4", "starting", "0", "cameras add"]

    def test_status_json_carries_cameras(self, js: JetStreamContext, nats_settings: Settings) -> None:
        """`framepipe status --json` (a real CLI process) has the cameras and the stages."""
        env = {**os.environ, "FRAMEPIPE_NATS__URL": nats_settings.nats.url,
               "FRAMEPIPE_LOCAL__STATE_DIR": nats_settings.local.state_dir}  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "framepipe", "status", "--json"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["cameras"] == []
        assert {row["stage"] for row in report["stages"]} >= {Names.DECODER, Names.SINK}
