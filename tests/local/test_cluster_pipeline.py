"""A real `framepipe run` on a 3-node JetStream cluster survives kill -9 of the node leading
FRAMES and then of the node leading ENCODE: every GOP once, nothing dead-lettered, exit 0.

The run is a child process, as a user starts it (``local.nats_cluster = 3``). The test
finds each stream's leader and each node's process from outside, the way an operator
would: the nodes' monitoring ports from their config files, the leader from ``/jsz``,
the process from ``/proc``. A sampler reads every stream's message count from any
answering node until the run exits: OUTPUT never holds more than one message per GOP
and the DLQ stays empty.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from framepipe.core.topology import Names
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.stages.camera_output import PLAYLIST, segment_name
from tests.helpers import MEDIA, MODELS, read_jsonl

pytestmark = pytest.mark.integration
#: 28 GOPs of 0.5 s at real time: long enough for two kills and their elections.
CLIP = ClipSpec(width=320, height=240, seconds=14.0, gop=15, bframes=2)
GOPS = CLIP.frames // CLIP.gop
CAMERA = "cam1"


def cluster_clip() -> Path:
    path = MEDIA / f"cluster_{CLIP.cache_name}"
    if not path.is_file():
        make_clip(path, CLIP)
    return path


def _get(url: str, timeout: float = 1.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


@dataclass
class ClusterView:
    """The run's NATS nodes seen from outside: name → monitoring URL and config file."""

    state: Path
    monitors: dict[str, str] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)

    def find_nodes(self) -> bool:
        for config in sorted((self.state / "nats-cluster").glob("n*/nats-server.conf")):
            found = re.search(r"^http: (\S+)$", config.read_text(), re.MULTILINE)
            if found:
                self.monitors[config.parent.name] = f"http://{found.group(1)}"
                self.configs[config.parent.name] = config
        return len(self.monitors) == 3

    def streams(self) -> dict[str, dict[str, Any]] | None:
        """Each stream's detail from the first node that answers, or None."""
        for url in self.monitors.values():
            try:
                jsz = _get(f"{url}/jsz?streams=true&accounts=true")
            except (OSError, ValueError):
                continue
            found = {
                detail["name"]: detail
                for account in jsz.get("account_details") or []
                for detail in account.get("stream_detail") or []
            }
            if found:
                return found
        return None

    def leader(self, stream: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            detail = (self.streams() or {}).get(stream) or {}
            name = str((detail.get("cluster") or {}).get("leader") or "")
            if name in self.monitors:
                return name
            time.sleep(0.2)
        raise AssertionError(f"no leader of {stream} within {timeout:.0f}s")

    def pid(self, name: str) -> int:
        """The live nats-server process of node ``name`` (from its command line)."""
        wanted = str(self.configs[name])
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    argv = (entry / "cmdline").read_bytes().split(b"\0")
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                except OSError:
                    continue
                if wanted.encode() in argv and state != "Z":
                    return int(entry.name)
        raise AssertionError(f"no nats-server process for {name}")

    def healthy(self, name: str) -> bool:
        try:
            return _get(f"{self.monitors[name]}/healthz").get("status") == "ok"
        except (OSError, ValueError):
            return False


@dataclass
class Sampler:
    """Max message count of OUTPUT and the DLQ over the run, sampled from any live node."""

    view: ClusterView
    max_output: int = 0
    max_dlq: int = 0
    samples: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            streams = self.view.streams()
            if streams and Names.OUTPUT in streams:
                self.samples += 1
                self.max_output = max(self.max_output, streams[Names.OUTPUT]["state"]["messages"])
                dlq = streams.get(Names.DLQ, {}).get("state", {})
                self.max_dlq = max(self.max_dlq, dlq.get("messages", 0))
            time.sleep(0.3)


def written(out: Path) -> int:
    return len(list((out / CAMERA).glob("seg_*.ts")))


def wait_for(condition: Any, what: str, run: subprocess.Popen[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert run.poll() is None, f"the run exited (rc {run.returncode}) while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_kill_9_of_the_frames_then_the_encode_leader_mid_run(tmp_path: Path) -> None:
    """`framepipe run --once` with local.nats_cluster = 3: SIGKILL FRAMES's leader after 3
    segments, then (once it is back and a segment more is written) ENCODE's leader; each GOP
    once, DLQ empty, rc 0."""
    state, out = tmp_path / "state", tmp_path / "out"
    env = {
        **os.environ,
        "FRAMEPIPE_LOCAL__STATE_DIR": str(state),
        "FRAMEPIPE_LOCAL__NATS_CLUSTER": "3",
        "FRAMEPIPE_LOCAL__AUTOSCALE": "false",
        "FRAMEPIPE_INFERENCE__MODELS_DIR": str(MODELS),
        # Short ack waits: a GOP delivered to a consumer whose leader died is redelivered soon.
        **{f"FRAMEPIPE_{stage.upper()}__ACK_WAIT_S": "5" for stage in ("decoder", "inference", "encoder")},
    }
    argv = [sys.executable, "-m", "framepipe", "run", "--source", str(cluster_clip()),
            "--output", str(out), "--once", "--pacing", "realtime"]  # fmt: skip
    view = ClusterView(state)
    sampler = Sampler(view)
    sampling = threading.Thread(target=sampler.run, daemon=True)
    killed: list[tuple[str, str]] = []
    run = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(view.find_nodes, "the cluster's config files", run)
        sampling.start()
        for stream, after in ((Names.FRAMES, 3), (Names.ENCODE, 0)):
            wait_for(lambda: written(out) >= after, f"{after} segments", run)  # noqa: B023
            wait_for(lambda: all(view.healthy(n) for n in view.monitors), "a healthy cluster", run)
            floor = written(out)
            leader = view.leader(stream)
            os.kill(view.pid(leader), signal.SIGKILL)
            killed.append((stream, leader))
            # on: the supervisor restarts it, and the stages get past the fault
            wait_for(lambda: view.healthy(leader), f"{leader} restarted", run)  # noqa: B023
            wait_for(lambda: written(out) > floor, "progress after the kill", run)  # noqa: B023
        stdout, stderr = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
            run.communicate(timeout=60)
        sampler.stop.set()
        sampling.join(5)
    assert run.returncode == 0, f"{stdout[-2000:]}\n{stderr[-4000:]}"
    assert [stream for stream, _ in killed] == [Names.FRAMES, Names.ENCODE]
    supervisor_log = (state / "logs" / "supervisor.log").read_text()
    assert supervisor_log.count('"nats.restarted"') == 2, [n for _, n in killed]

    # every GOP once: the playlist lists each segment once, in order; OUTPUT never held more
    playlist = (out / CAMERA / PLAYLIST).read_text().split()
    segments = [line for line in playlist if line.startswith("seg_")]
    assert segments == [segment_name(gop) for gop in range(GOPS)]
    assert all((out / CAMERA / name).stat().st_size > 0 for name in segments)
    lines = read_jsonl(out / CAMERA / "detections.jsonl")
    assert [line["frame"] for line in lines] == list(range(CLIP.frames))
    assert sampler.samples > 10
    assert sampler.max_output == GOPS
    # nothing dead-lettered: the DLQ stream stayed empty and no stage logged a dead letter
    assert sampler.max_dlq == 0
    for log_file in (state / "logs").glob("*.log"):
        assert '"gop.dead_letter"' not in log_file.read_text(), log_file
