"""`framepipe web` serving a local system ends once that system is gone: one line saying
so and what to do, exit 3 (before: it retried NATS forever). Real `framepipe run` and
`framepipe web` processes."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import MODELS, faces_clip

pytestmark = pytest.mark.integration


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "state"),
        "FRAMEPIPE_INFERENCE__MODELS_DIR": str(MODELS),
        "FRAMEPIPE_LOCAL__AUTOSCALE": "false",
    }


def _start_system(tmp_path: Path) -> subprocess.Popen[str]:
    """A continuous `framepipe run` (it stays up after the clip ends), once its runtime is written."""
    argv = [
        sys.executable,
        "-m",
        "framepipe",
        "run",
        "--source",
        str(faces_clip()),
        "--output",
        str(tmp_path / "out"),
    ]
    run = subprocess.Popen(
        argv, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            runtime = json.loads((tmp_path / "state" / "runtime.json").read_text())
        except (OSError, ValueError):
            runtime = {}
        if any(p["name"].startswith("gateway-") for p in runtime.get("processes", [])):
            return run
        assert run.poll() is None, run.communicate()
        time.sleep(0.2)
    run.kill()
    raise AssertionError("the system did not start")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_web_says_once_that_the_system_is_gone_and_exits(tmp_path: Path, how: signal.Signals) -> None:
    """Stopped (its runtime file goes) or killed (its NATS stops answering): exit 3, one
    `error:` line naming what happened and what to start, no traceback, no flood of lines."""
    run = _start_system(tmp_path)
    web = subprocess.Popen(
        [sys.executable, "-m", "framepipe", "web", "--port", "0"], env=_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert web.stdout is not None
        ready, _, _ = select.select([web.stdout], [], [], 60)
        assert ready, "the web server printed no URL"
        assert web.stdout.readline().startswith("console: http://127.0.0.1:")
        run.send_signal(how)
        run.wait(60)
        code = web.wait(60)  # before: it never exited
    finally:
        for proc in (web, run):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    stderr = web.stderr.read() if web.stderr else ""
    assert code == 3, stderr[-3000:]
    assert "Traceback" not in stderr, stderr
    assert "Task was destroyed" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    why = "it was stopped" if how == signal.SIGTERM else "its NATS has not answered for 15 s"
    assert f"is gone ({why})" in errors[0]
    assert "start `framepipe run` again" in errors[0]
    assert len(stderr.splitlines()) < 15, stderr[-3000:]  # each NATS error once, not every 0.5 s
