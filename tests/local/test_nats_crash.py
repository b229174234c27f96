"""The supervisor's own nats-server crashes mid-run (kill -9): it is restarted on the same
port and store directory, the stages reconnect, and the camera completes exactly once."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from framepipe.core import bus
from framepipe.core.settings import Settings
from framepipe.core.topology import BUCKETS, Names
from framepipe.local.status import collect_status
from framepipe.local.supervisor import LocalSystem
from tests.helpers import FACES, faces_clip, output_gops, read_jsonl

GOPS = FACES.frames // FACES.gop


def embedded_settings(models_dir: Path, tmp_path: Path, **local: object) -> Settings:
    """A local system with its own embedded NATS (auth on, as `framepipe run` has it)."""
    return Settings().replace(
        sink={"output_dir": str(tmp_path / "output")},
        local={"state_dir": str(tmp_path / "state"), "shutdown_grace_s": 15.0, "autoscale": False, **local},
        inference={"models_dir": str(models_dir), "ack_wait_s": 5.0},
        decoder={"fetch_batch": 1, "ack_wait_s": 5.0, "retry_backoff_s": 0.2},
        encoder={"fetch_batch": 1, "ack_wait_s": 5.0, "retry_backoff_s": 0.2},
    )


@pytest.mark.integration
def test_kill_9_of_the_embedded_nats_server_mid_run_completes_every_frame_once(
    models_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL nats-server while GOPs are in flight: the supervisor restarts it (same port,
    same store), every process reconnects, and OUTPUT holds each GOP once."""
    settings = embedded_settings(models_dir, tmp_path)
    system = LocalSystem(settings, tmp_path / "state")
    killed: list[int] = []

    def kill_nats(count: int) -> None:
        if not killed and count >= 2 and system.server is not None:
            node = system.server.nodes[0]
            assert node.process is not None
            killed.append(node.port)
            node.process.send_signal(signal.SIGKILL)

    with system:
        system.start()
        system.wait_ready()
        gateway = system.add_camera("lobby", str(faces_clip()), "realtime")
        result = system.wait_for_camera("lobby", gateway, stall_timeout=90, on_progress=kill_nats)
        assert killed, "nats-server was never killed"
        assert result.complete, result.reason
        assert system.server is not None
        assert sum(system.server.restarts.values()) == 1
        assert system.server.nodes[0].port == killed[0]  # clients found it where it was
        assert output_gops(system.settings, "lobby") == Counter({g: 1 for g in range(GOPS)})
        lines = read_jsonl(Path(settings.sink.output_dir) / "lobby" / "detections.jsonl")
        assert [line["frame"] for line in lines] == list(range(FACES.frames))


@pytest.mark.integration
def test_a_3_node_cluster_run_survives_a_kill_9_of_the_video_leader(models_dir: Path, tmp_path: Path) -> None:
    """local.nats_cluster = 3: every stream and bucket has 3 replicas, status names each
    stream's leader; SIGKILL VIDEO's leader mid-run: the supervisor restarts it, the camera
    completes with each GOP once."""
    settings = embedded_settings(models_dir, tmp_path, nats_cluster=3)
    system = LocalSystem(settings, tmp_path / "state")
    killed: list[str] = []

    def kill_leader(count: int) -> None:
        if killed or count < 2 or system.server is None:
            return
        report = asyncio.run(collect_status(system.settings, None))
        leader = next(s["leader"] for s in report["streams"] if s["name"] == Names.VIDEO)
        killed.append(leader)
        system.server.kill(system.server.index_of(leader))

    with system:
        system.start()
        system.wait_ready()
        assert system.settings.streams.replicas == 3
        report = asyncio.run(collect_status(system.settings, None))
        for stream in report["streams"]:
            assert stream["leader"] in ("n0", "n1", "n2"), stream
            assert stream["replicas"].count(" lag ") == 2, stream
        assert asyncio.run(_bucket_replicas(system.settings)) == {b.name: 3 for b in BUCKETS}
        gateway = system.add_camera("lobby", str(faces_clip()), "realtime")
        result = system.wait_for_camera("lobby", gateway, stall_timeout=120, on_progress=kill_leader)
        assert killed, "the VIDEO leader was never killed"
        assert result.complete, result.reason
        assert system.server.restarts == {killed[0]: 1}
        assert output_gops(system.settings, "lobby") == Counter({g: 1 for g in range(GOPS)})
        lines = read_jsonl(Path(settings.sink.output_dir) / "lobby" / "detections.jsonl")
        assert [line["frame"] for line in lines] == list(range(FACES.frames))


async def _bucket_replicas(settings: Settings) -> dict[str, int]:
    nc = await bus.connect(settings, "test-buckets", retry_initial=False)
    try:
        js = nc.jetstream()
        return {b.name: (await js.stream_info(f"KV_{b.name}")).config.num_replicas for b in BUCKETS}
    finally:
        await nc.close()
