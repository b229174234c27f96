"""Commands that wait for NATS say so at once, naming what they wait for."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first_stderr_lines(argv: list[str], tmp_path: Path, wanted: str, timeout: float = 25.0) -> str:
    """Start ``framepipe ARGV`` with no NATS; stderr until a line holding ``wanted`` (then stop it)."""
    url = f"nats://127.0.0.1:{_unused_port()}"
    env = {**os.environ, "FRAMEPIPE_NATS__URL": url, "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "framepipe", *argv], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    seen = ""
    try:
        deadline = time.monotonic() + timeout
        assert proc.stderr is not None
        while wanted not in seen and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stderr], [], [], 0.5)
            if ready:
                seen += proc.stderr.readline()
    finally:
        proc.kill()  # our own child; how it drains is not what this test is about
        proc.wait(15)
    assert url in seen, seen
    return seen


class TestSaysWhatItWaitsFor:
    """`framepipe stage` and `framepipe web` without a system."""

    @pytest.mark.parametrize("stage", ["decoder"])
    def test_stage_without_nats(self, tmp_path: Path, stage: str) -> None:
        """A stage logs one `nats.waiting` line with the URL and when it gives up, well before it does."""
        seen = _first_stderr_lines(["stage", stage], tmp_path, "nats.waiting")
        (line,) = [line for line in seen.splitlines() if "nats.waiting" in line]
        assert '"gives_up_in_s": ' in line

    def test_web_without_a_system(self, tmp_path: Path) -> None:
        """The console says no system runs, where it looked, and what to start."""
        seen = _first_stderr_lines(["web", "--port", "0"], tmp_path, "no framepipe system is running")
        assert "framepipe run" in seen


def _sigterm_while_waiting(argv: list[str], tmp_path: Path) -> tuple[int, float, str, str]:
    """Start ``framepipe ARGV`` against a NATS URL nobody serves, SIGTERM it once it logs
    ``nats.waiting``: (exit code, seconds it took to exit, stderr before, stderr after)."""
    env = {
        **os.environ,
        "FRAMEPIPE_NATS__URL": f"nats://127.0.0.1:{_unused_port()}",
        "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "state"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "framepipe", *argv], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = ""
    try:
        deadline = time.monotonic() + 25
        while "nats.waiting" not in seen and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stderr], [], [], 0.5)
            if ready:
                seen += proc.stderr.readline()
        assert "nats.waiting" in seen, seen
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)  # before the fix: it waited out the 30 s connect deadline
        waited = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return code, waited, seen, proc.stderr.read()


class TestStopWhileWaiting:
    def test_sigterm_while_a_stage_waits_for_nats_exits_at_once(self, tmp_path: Path) -> None:
        """SIGTERM during the first connect (which waits up to 30 s): exit 0 within seconds, one line."""
        code, _, seen, rest = _sigterm_while_waiting(["stage", "decoder"], tmp_path)
        assert code == 0, seen + rest
        assert "Traceback" not in rest
        lines = [line for line in rest.splitlines() if line.strip()]
        assert len(lines) == 1, rest
        assert "stage.stopped_before_start" in lines[0]

    def test_sigterm_while_the_gateway_waits_for_nats_exits_at_once(self, tmp_path: Path) -> None:
        """`framepipe gateway` stopped during its first connect: exit 0 within seconds, one line."""
        from framepipe.media.sample import ClipSpec, make_clip

        clip = make_clip(tmp_path / "clip.mp4", ClipSpec(width=160, height=96, seconds=1.0))
        argv = ["gateway", "--camera", "door", "--source", str(clip)]
        code, waited, seen, rest = _sigterm_while_waiting(argv, tmp_path)
        assert code == 0, seen + rest
        assert waited < 10, waited
        assert "Traceback" not in rest
        lines = [line for line in rest.splitlines() if line.strip()]
        assert len(lines) == 1, rest
        assert "gateway.stopped_before_start" in lines[0]
        assert '"camera": "door"' in lines[0]


class TestStopWhileStarting:
    def test_sigterm_inside_an_import_s_set_name_still_exits_0(self) -> None:
        """SIGTERM landing in a class body's __set_name__ (numpy's finfo, in CI) exits 0, one line."""
        # Python 3.11 rewraps an exception raised in __set_name__ as RuntimeError, so a handler
        # that raised SystemExit there ended the process with exit code 1 (CI, stop 28).
        program = (
            "import os, signal\n"
            "from framepipe.cli.processes import _exit_before_work\n"
            "signal.signal(signal.SIGTERM, _exit_before_work)\n"
            "class Named:\n"
            "    def __set_name__(self, owner, name):\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        sum(range(1000))  # the handler runs between bytecodes, here\n"
            "class Owner:\n"
            "    field = Named()\n"
            "print('not stopped')\n"
        )
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "not stopped" not in done.stdout
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, done.stderr
        assert "stage.stopped_before_start" in lines[0]
