"""One local system per state folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from framepipe.core.errors import SetupError
from framepipe.local.statelock import StateLock
from tests.helpers import MODELS, faces_clip

HOLD = (
    "import sys, time; from pathlib import Path; from framepipe.local.statelock import StateLock; "
    "lock = StateLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(60)"
)


class TestStateLock:
    def test_second_holder_is_refused_with_the_first_named(self, tmp_path: Path) -> None:
        """While one process holds the folder, another gets one line naming its pid."""
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(
                SetupError, match=f"in use by a running framepipe system \\(pid {holder.pid} "
            ):
                StateLock(tmp_path).acquire()
        finally:
            holder.kill()
            holder.wait()
        lock = StateLock(tmp_path)
        lock.acquire()  # kill -9 leaves no stale lock: the kernel released it
        assert lock.held
        lock.release()

    def test_release_and_reacquire(self, tmp_path: Path) -> None:
        """A released lock can be taken again; acquiring twice in one holder is harmless."""
        lock = StateLock(tmp_path)
        lock.acquire()
        lock.acquire()
        lock.release()
        other = StateLock(tmp_path)
        other.acquire()
        other.release()


def test_second_run_in_the_same_folder_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    """`framepipe run` in a state folder that a running system holds exits 1 with one line,
    and leaves that system's store, runtime file and output alone."""
    state, out = tmp_path / "state", tmp_path / "out"
    (state / "jetstream").mkdir(parents=True)
    (state / "runtime.json").write_text("{}")
    (out / "cam1" / ".state").mkdir(parents=True)
    lock = StateLock(state)
    lock.acquire()
    try:
        env = {
            **os.environ,
            "FRAMEPIPE_LOCAL__STATE_DIR": str(state),
            "FRAMEPIPE_INFERENCE__MODELS_DIR": str(MODELS),
        }
        result = subprocess.run(
            [sys.executable, "-m", "framepipe", "run", "--source", str(faces_clip()),
             "--output", str(out), "--once"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        lock.release()
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert f"pid {os.getpid()}" in lines[0]
    assert (state / "jetstream").is_dir()
    assert (state / "runtime.json").is_file()
    assert (out / "cam1" / ".state").is_dir()
