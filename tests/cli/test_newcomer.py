"""The scripted newcomer pass: misuse of the command line, as a new user would try it.

Every case runs the real ``framepipe`` console entry (``python -m framepipe``) and checks
what a user sees: the documented exit code (README "Exit codes"), one ``error:`` line
saying what to do, no traceback, and nothing already written lost.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from framepipe.local.natsserver import free_port
from tests.helpers import faces_clip, run_framepipe
from tests.stages.test_damaged_input import damaged_ts

pytestmark = pytest.mark.integration


def framepipe(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_framepipe(tmp_path, *args, timeout=timeout)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line on stderr (JSON log lines of the supervisor aside), no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    text = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("{")]
    errors = [line for line in text if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


class TestRunRefusesUpFront:
    @pytest.mark.parametrize(
        ("args", "says"),
        [
            (["--decoders", "0"], "--decoders must be at least 1, got 0"),
            (["--decoders", "-1"], "--decoders must be at least 1, got -1"),
            (["--inference", "0"], "--inference must be at least 1, got 0"),  # the old, hidden name
            (["--inferencers", "0"], "--inferencers must be at least 1, got 0"),
            (["--encoders", "0"], "--encoders must be at least 1, got 0"),
            (["--pacing", "slow"], "--pacing must be one of realtime, fast"),
        ],
    )
    def test_invalid_counts_and_pacing(self, tmp_path: Path, args: list[str], says: str) -> None:
        """Counts below 1 and an unknown pacing: exit 2, one line, before anything starts."""
        result = framepipe(tmp_path, "run", "--source", str(faces_clip()), "--once", *args)
        assert result.returncode == 2
        assert says in error_line(result)
        assert not (tmp_path / "state").exists()

    def test_missing_source_and_directory_source(self, tmp_path: Path) -> None:
        """A missing file says so; a directory says it is a directory."""
        missing = framepipe(tmp_path, "run", "--source", "nope.mp4", "--once")
        assert missing.returncode == 2
        assert "does not exist" in error_line(missing)
        folder = framepipe(tmp_path, "run", "--source", str(tmp_path), "--once")
        assert folder.returncode == 2
        assert "is a directory" in error_line(folder)

    @pytest.mark.parametrize("output", ["file.mp4/out", "/proc/framepipe-out"])
    def test_output_that_cannot_be_written(self, tmp_path: Path, output: str) -> None:
        """An output under a file (NotADirectoryError before) or in an unwritable place: exit 2,
        one line, and the file in the way is untouched."""
        (tmp_path / "file.mp4").write_bytes(b"precious")
        result = framepipe(tmp_path, "run", "--source", str(faces_clip()), "--once", "--output", output)
        assert result.returncode == 2
        assert "cannot be written" in error_line(result)
        assert (tmp_path / "file.mp4").read_bytes() == b"precious"


class TestRunOnceEnds:
    @pytest.mark.parametrize("scheme", ["rtsp", "http"])
    def test_unreachable_live_source_fails_in_bounded_time(self, tmp_path: Path, scheme: str) -> None:
        """`run --once` on a camera nobody serves ends with exit 1 and the reason on the console
        (it retried forever with nothing on the console before)."""
        url = f"{scheme}://127.0.0.1:{free_port()}/cam"
        result = framepipe(tmp_path, "run", "--source", url, "--once", "--pacing", "fast", timeout=150)
        assert result.returncode == 1
        line = error_line(result)
        assert "the gateway for cam1 failed" in line
        assert "cannot open" in line
        assert "refused" in line.lower()

    def test_damaged_input_is_not_a_silent_success(self, tmp_path: Path) -> None:
        """A TS with garbage mid-file: exit 1 and one line counting the lost frames (it was rc 0
        with no word), the playlist written with a discontinuity where the frames are missing."""
        source = damaged_ts(tmp_path)
        result = framepipe(tmp_path, "run", "--source", str(source), "--once", "--output", "out", timeout=240)
        assert result.returncode == 1
        assert "frames of the input were lost" in error_line(result)
        playlist = (tmp_path / "out" / "cam1" / "index.m3u8").read_text()
        assert "#EXT-X-DISCONTINUITY" in playlist
        assert "#EXT-X-ENDLIST" in playlist


class TestCamerasAddArguments:
    @pytest.mark.parametrize(
        ("args", "says"),
        [
            (["--source", "CLIP"], "a camera needs a name"),
            (["door"], "a camera needs a source"),
            (["door", "CLIP", "--camera", "hall"], "given twice"),
        ],
    )
    def test_name_and_source_once_each(self, tmp_path: Path, args: list[str], says: str) -> None:
        """NAME SOURCE or --camera/--source: a missing or doubled one is exit 2 and one line."""
        result = framepipe(
            tmp_path, "cameras", "add", *[str(faces_clip()) if a == "CLIP" else a for a in args]
        )
        assert result.returncode == 2, result.stderr
        assert says in error_line(result)


class TestNoSystem:
    @pytest.mark.parametrize(
        "args",
        [
            ["status"],
            ["cameras", "list"],
            ["cameras", "add", "door", "CLIP"],
            ["cameras", "add", "--camera", "door", "--source", "CLIP"],  # the options `run` takes
            ["dlq", "list"],
        ],
    )
    def test_commands_that_need_a_running_system(self, tmp_path: Path, args: list[str]) -> None:
        """Without a running system: exit 3 (cannot reach the system) and one line naming `framepipe run`."""
        result = framepipe(tmp_path, *[str(faces_clip()) if arg == "CLIP" else arg for arg in args])
        assert result.returncode == 3, result.stderr
        assert "framepipe run" in error_line(result)
