"""`framepipe export` after the system stopped: it reads the recording the sink kept on disk,
says so, and refuses a range with no recording in one line (the real CLI in a subprocess, a
recording written by the sink's own CameraOutput on real PyAV segments, and a real run)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from framepipe.local.natsserver import free_port
from framepipe.stages.camera_output import CameraOutput
from tests.helpers import MODELS, faces_clip
from tests.stages.test_retention import FRAMES, add_segments

pytestmark = pytest.mark.integration  # `python -m framepipe` subprocesses


def framepipe(
    tmp_path: Path, *argv: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI with nothing running: a NATS URL nobody listens on, a fresh state dir."""
    env = {
        **os.environ,
        "FRAMEPIPE_NATS__URL": f"nats://127.0.0.1:{free_port()}",
        "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "state"),
        **(extra_env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "framepipe", *argv], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=240, check=False,
    )  # fmt: skip


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


class TestExportFromDisk:
    def test_no_system_reads_the_recording_and_says_so(self, tmp_path: Path) -> None:
        """A kept recording of 4 segments → an MP4 with all 40 frames, 'from the recording in'."""
        recordings = tmp_path / "recordings"
        add_segments(CameraOutput(recordings, "door", 0, 0), 4)
        where = ("--output-dir", str(recordings))
        result = framepipe(tmp_path, "export", "door.mp4", "--camera", "door", *where)
        assert result.returncode == 0, result.stderr
        assert "4 segments (GOPs 0..3, " in result.stdout
        assert f"from the recording in {recordings / 'door'}" in result.stdout
        assert frame_count(tmp_path / "door.mp4") == 4 * FRAMES
        burned = framepipe(tmp_path, "export", "burned.mp4", "--camera", "door", *where, "--burn-in")
        assert burned.returncode == 0, burned.stderr
        assert frame_count(tmp_path / "burned.mp4") == 4 * FRAMES  # overlay sidecars read from disk

    def test_a_range_without_recording_is_one_line_naming_what_there_is(self, tmp_path: Path) -> None:
        """--since/--until before the recording: exit 2, one line with the recording's own span."""
        recordings = tmp_path / "recordings"
        add_segments(CameraOutput(recordings, "door", 0, 0), 2)
        result = framepipe(
            tmp_path, "export", "old.mp4", "--camera", "door", "--output-dir", str(recordings),
            "--since", "2001-01-01T00:00", "--until", "2001-01-02T00:00",
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "has nothing between 2001-01-01 00:00:00 and 2001-01-02 00:00:00" in lines[0]
        assert f"it holds {time.strftime('%Y-%m-%d')}" in lines[0]
        assert "(2 segments)" in lines[0]
        assert not (tmp_path / "old.mp4").exists()

    def test_an_unknown_camera_is_one_line(self, tmp_path: Path) -> None:
        """No recording of that camera and no system: exit 2, one line saying both."""
        result = framepipe(tmp_path, "export", "x.mp4", "--camera", "nope")
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "no recording of nope in output/nope (no framepipe system is running)" in lines[0]
        assert "Traceback" not in result.stderr


class TestExportAfterARun:
    def test_export_after_run_once_has_every_frame_of_the_clip(self, tmp_path: Path) -> None:
        """`run --once` ends (its system and its JetStream store are gone); `export` then reads
        output/cam1 and writes every frame of the source clip."""
        env = {"FRAMEPIPE_INFERENCE__MODELS_DIR": str(MODELS)}
        run = framepipe(tmp_path, "run", "--source", str(faces_clip()), "--once", extra_env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        result = framepipe(tmp_path, "export", "cam1.mp4", "--camera", "cam1")
        assert result.returncode == 0, result.stderr
        assert "from the recording in output/cam1" in result.stdout
        assert frame_count(tmp_path / "cam1.mp4") == frame_count(faces_clip())
