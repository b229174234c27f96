"""Recordings survive restarts: a second ``framepipe run`` goes on after the kept recording;
``--fresh`` deletes it first and says so (real ``framepipe run --once`` processes, real NATS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framepipe.local.natsserver import free_port
from tests.helpers import MODELS, faces_clip, read_jsonl

pytestmark = pytest.mark.integration


def run_once(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "state"),
        "FRAMEPIPE_INFERENCE__MODELS_DIR": str(MODELS),
        "FRAMEPIPE_NATS__URL": f"nats://127.0.0.1:{free_port()}",
    }
    argv = [sys.executable, "-m", "framepipe", "run", "--source", str(faces_clip()), "--once", *extra]
    result = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def playlist(tmp_path: Path) -> list[str]:
    return (tmp_path / "output" / "cam1" / "index.m3u8").read_text().splitlines()


def segments(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("seg_")]


class TestRecordingSurvivesRestart:
    def test_second_run_appends_after_a_discontinuity_and_fresh_starts_clean(self, tmp_path: Path) -> None:
        """Run 2 keeps run 1's segments and detections and goes on after them; --fresh removes them."""
        run_once(tmp_path)
        first = playlist(tmp_path)
        first_segments = segments(first)
        detections = tmp_path / "output" / "cam1" / "detections.jsonl"
        first_detections = detections.read_bytes()
        assert first_segments
        assert first_detections
        first_bytes = {name: (tmp_path / "output" / "cam1" / name).read_bytes() for name in first_segments}

        second_run = run_once(tmp_path)
        assert f"keeping the recording of cam1 in output/cam1 ({len(first_segments)} segments)" in (
            second_run.stdout + second_run.stderr
        )
        second = playlist(tmp_path)
        second_segments = segments(second)
        # Both recordings in one playlist, every segment name once, run 1's segments untouched.
        assert second_segments[: len(first_segments)] == first_segments
        assert len(second_segments) == 2 * len(first_segments)
        assert len(set(second_segments)) == len(second_segments)
        for name, data in first_bytes.items():
            assert (tmp_path / "output" / "cam1" / name).read_bytes() == data
        # The new recording starts after a discontinuity, and the playlist is closed again.
        boundary = second.index(second_segments[len(first_segments)])
        assert "#EXT-X-DISCONTINUITY" in second[boundary - 2 : boundary]
        assert second[-1] == "#EXT-X-ENDLIST"
        assert second.count("#EXT-X-ENDLIST") == 1
        # detections.jsonl: run 1's lines kept as they were, run 2's appended with later GOP
        # and frame numbers.
        both = detections.read_bytes()
        assert both.startswith(first_detections)
        assert len(both) > len(first_detections)
        rows = read_jsonl(detections)
        first_rows = rows[: first_detections.count(b"\n")]
        later_rows = rows[len(first_rows) :]
        assert min(int(str(r["gop"])) for r in later_rows) > max(int(str(r["gop"])) for r in first_rows)
        assert min(int(str(r["frame"])) for r in later_rows) > max(int(str(r["frame"])) for r in first_rows)

        fresh_run = run_once(tmp_path, "--fresh")
        said = fresh_run.stdout + fresh_run.stderr
        assert (
            f"--fresh: removed the previous recording of cam1 in output/cam1 ({len(second_segments)} segments"
            in said
        )
        third = playlist(tmp_path)
        assert segments(third) == first_segments  # numbered from 0 again, one recording
        assert "#EXT-X-DISCONTINUITY" not in third
        assert detections.read_bytes().count(b"\n") == first_detections.count(b"\n")
        progress = json.loads((tmp_path / "output" / "cam1" / ".state" / "progress.json").read_text())
        assert progress["ended"] is True
