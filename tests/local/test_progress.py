"""What `run --once` reports when a camera ends: from the sink's progress and the gateway's log."""

from __future__ import annotations

import json
from pathlib import Path

from framepipe.local.processes import Managed
from framepipe.local.progress import ProgressWatch, last_error


def _ended(output: Path, **extra: object) -> None:
    state = output / "cam" / ".state"
    state.mkdir(parents=True)
    progress = {"entries": [{"gop": 0}, {"gop": 2}], "gaps": [], "ended": True, **extra}
    (state / "progress.json").write_text(json.dumps(progress))


class TestProgressWatch:
    def test_dead_letters_name_the_command_to_inspect_them(self, tmp_path: Path) -> None:
        """A camera ended with a dead-lettered GOP: incomplete, and the reason names `framepipe dlq list`."""
        _ended(tmp_path, gaps=[{"gop": 1, "reason": "corrupt-media"}])
        gateway = Managed("gateway-cam", [], tmp_path / "gateway-cam.log")
        result = ProgressWatch(tmp_path, "cam", 60).poll(gateway, tmp_path)
        assert result is not None
        assert not result.complete
        assert "GOPs [1] were dead-lettered (corrupt-media)" in result.reason
        assert "`framepipe dlq list`" in result.reason

    def test_lost_frames_make_the_camera_incomplete(self, tmp_path: Path) -> None:
        """Frames a damaged input lost: incomplete, and the reason counts them."""
        _ended(tmp_path, lost_frames=42)
        gateway = Managed("gateway-cam", [], tmp_path / "gateway-cam.log")
        result = ProgressWatch(tmp_path, "cam", 60).poll(gateway, tmp_path)
        assert result is not None
        assert not result.complete
        assert result.segments == 2
        assert "42 frames of the input were lost" in result.reason


class TestLastError:
    def test_the_error_line_wins_over_json_events(self, tmp_path: Path) -> None:
        """The CLI boundary's `error:` line is the reason; else the last JSON `error`; else ""."""
        log = tmp_path / "gateway.log"
        assert last_error(log) == ""
        log.write_text(json.dumps({"event": "gateway.source_error", "error": "timed out"}) + "\n")
        assert last_error(log) == "timed out"
        with log.open("a") as out:
            out.write("error: cannot open rtsp://cam/1: Connection refused\n")
            out.write(json.dumps({"event": "nats.closed"}) + "\n")
        assert last_error(log) == "cannot open rtsp://cam/1: Connection refused"

    def test_a_kept_recordings_end_is_not_this_runs_end(self, tmp_path: Path) -> None:
        """Resumed after GOP 3: the old ended progress is no result; this run's GOPs alone are counted."""
        _ended(tmp_path, next_gop=3)
        gateway = Managed("gateway-cam", [], tmp_path / "gateway-cam.log")
        watch = ProgressWatch(tmp_path, "cam", 60, first_gop=3)
        assert watch.poll(gateway, tmp_path) is None
        progress = {"entries": [{"gop": 0}, {"gop": 2}, {"gop": 3}, {"gop": 4}], "gaps": [], "ended": True}
        (tmp_path / "cam" / ".state" / "progress.json").write_text(json.dumps({**progress, "next_gop": 5}))
        result = watch.poll(gateway, tmp_path)
        assert result is not None
        assert result.complete
        assert result.segments == 2
