"""`framepipe run` starts the cameras the config declares (``[[cameras]]``), with their modes,
and refuses a bad declaration or an empty run in one line (real processes, real NATS)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import faces_clip, run_framepipe

pytestmark = pytest.mark.integration


def framepipe(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_framepipe(tmp_path, *args, timeout=timeout)


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def stage_modes(tmp_path: Path, stage: str) -> dict[str, set[str]]:
    """camera → the output modes the stage's `gop.done` lines name."""
    modes: dict[str, set[str]] = {}
    for log in (tmp_path / "state" / "logs").glob(f"{stage}*.log"):
        for line in log.read_text().splitlines():
            if line.startswith("{") and '"gop.done"' in line:
                event = json.loads(line)
                modes.setdefault(event["camera"], set()).add(event["mode"])
    return modes


class TestRunDeclaredCameras:
    def test_run_once_processes_every_declared_camera_with_its_mode(self, tmp_path: Path) -> None:
        """Two file cameras from the config, no --source: both playlists complete; the one
        declared `overlay` is routed in that mode (the analysis stage remuxes it; the encoder
        never sees it), the other in the default (burn-in, by the encoder)."""
        clip = faces_clip()
        (tmp_path / "cams.toml").write_text(
            f'[[cameras]]\nname = "front"\nsource = "{clip}"\n\n'
            f'[[cameras]]\nname = "back"\nsource = "{clip}"\nmode = "overlay"\n'
        )
        result = framepipe(tmp_path, "run", "--once", "-c", "cams.toml")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "cameras: front (config), back (config)" in result.stderr + result.stdout
        for camera in ("front", "back"):
            playlist = (tmp_path / "output" / camera / "index.m3u8").read_text().splitlines()
            assert playlist[-1] == "#EXT-X-ENDLIST"
            assert any(line.startswith("seg_") for line in playlist)
        assert stage_modes(tmp_path, "analysis") == {"front": {"burn-in"}, "back": {"overlay"}}
        assert stage_modes(tmp_path, "encoder") == {"front": {"burn-in"}}
        # The logs a newcomer reads: one gop.done per GOP per stage, no per-part lines.
        for log in (tmp_path / "state" / "logs").glob("*-0.log"):
            events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            assert not [e for e in events if e["event"] == "part.done"], log.name
            done = [(e["camera"], e["gop"]) for e in events if e["event"] == "gop.done"]
            assert len(done) == len(set(done)), log.name

    def test_refusals_up_front(self, tmp_path: Path) -> None:
        """No source and no cameras, a declared file that is missing, a bad URL, --camera
        naming a declared camera: exit 2, one line each, nothing started."""
        nothing = framepipe(tmp_path, "run", "--once", timeout=60)
        assert nothing.returncode == 2
        assert "nothing to run: give --source FILE|URL, or declare [[cameras]]" in one_error(nothing)
        (tmp_path / "missing.toml").write_text('[cameras.a]\nsource = "gone.mp4"\n')
        missing = framepipe(tmp_path, "run", "--once", "-c", "missing.toml", timeout=60)
        assert missing.returncode == 2
        assert "camera a: source gone.mp4 does not exist" in one_error(missing)
        (tmp_path / "bad.toml").write_text('[cameras.a]\nsource = "rtsp://"\n')
        bad = framepipe(tmp_path, "run", "--once", "-c", "bad.toml", timeout=60)
        assert bad.returncode == 2
        assert "cameras.a.source rtsp:// has no host" in one_error(bad)
        (tmp_path / "clash.toml").write_text(f'[cameras.cam1]\nsource = "{faces_clip()}"\n')
        clash = framepipe(
            tmp_path, "run", "--source", str(faces_clip()), "--once", "-c", "clash.toml", timeout=60
        )
        assert clash.returncode == 2
        assert "camera cam1 is declared in the config's [[cameras]] too" in one_error(clash)
        assert not (tmp_path / "state").exists()
