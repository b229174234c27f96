"""A real `framepipe run` stopped by a signal: an ordered stop, and no process outlives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import MODELS, faces_clip

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    """Direct children of ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_run(tmp_path: Path) -> tuple[subprocess.Popen[str], set[int]]:
    """`framepipe run --once` at real-time pace; returns once GOPs are in flight (the first
    segment is written), with its children."""
    state = tmp_path / "state"
    env = {
        **os.environ,
        "FRAMEPIPE_LOCAL__STATE_DIR": str(state),
        "FRAMEPIPE_INFERENCE__MODELS_DIR": str(MODELS),
        "FRAMEPIPE_LOCAL__AUTOSCALE": "false",
    }
    argv = [sys.executable, "-m", "framepipe", "run", "--source", str(faces_clip()),
            "--output", str(tmp_path / "out"), "--once", "--pacing", "realtime"]  # fmt: skip
    run = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            runtime = json.loads((state / "runtime.json").read_text())
        except (OSError, ValueError):
            runtime = {}
        gateway = any(p["name"].startswith("gateway-") for p in runtime.get("processes", []))
        if gateway and (tmp_path / "out" / "cam1" / ".state" / "progress.json").is_file():
            children = _children(run.pid)
            assert len(children) >= 6, children  # nats-server, 4 stages, the gateway
            return run, children
        assert run.poll() is None, run.communicate()
        time.sleep(0.2)
    run.kill()
    raise AssertionError("no segment was written")


def _survivors(children: set[int], within: float) -> set[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = {pid for pid in children if _alive(pid)}
        if not alive:
            return set()
        time.sleep(0.2)
    return alive


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_run_in_order(tmp_path: Path, signum: int) -> None:
    """SIGTERM or SIGHUP: the run drains like Ctrl-C (exit 130, "interrupted"), and every
    process it started has ended when it exits."""
    run, children = _start_run(tmp_path)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=90)
    assert run.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    # The console holds lines for people; the supervisor's JSON events are in their own log.
    assert not [line for line in stderr.splitlines() if line.startswith("{")]
    assert '"system.started"' in (tmp_path / "state" / "logs" / "supervisor.log").read_text()
    assert _survivors(children, within=5) == set()


def test_sigkill_of_the_run_takes_its_children_along(tmp_path: Path) -> None:
    """`kill -9` of the supervisor leaves no stage, gateway or nats-server behind."""
    run, children = _start_run(tmp_path)
    run.kill()
    run.communicate(timeout=30)
    assert _survivors(children, within=10) == set()
