"""Fault matrix: real stage processes and a real nats-server, faults injected mid-run.

Each test ends by checking that every GOP reached OUTPUT exactly once, that the
detections are complete (one line per source frame, in order), and that the
system still processes a new camera afterwards.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

from framepipe.core.settings import Settings
from framepipe.local.natsserver import NatsServer
from framepipe.local.supervisor import STAGES, LocalSystem
from tests.helpers import FACES, faces_clip, output_gops, read_jsonl

GOPS = FACES.frames // FACES.gop


def _assert_complete(system: LocalSystem, settings: Settings, camera: str, gateway_pacing: str) -> None:
    gateway = system.add_camera(camera, str(faces_clip()), gateway_pacing)
    result = system.wait_for_camera(camera, gateway, stall_timeout=90)
    assert result.complete, result.reason
    assert output_gops(settings, camera) == Counter({g: 1 for g in range(GOPS)})
    lines = read_jsonl(Path(settings.sink.output_dir) / camera / "detections.jsonl")
    assert [line["frame"] for line in lines] == list(range(FACES.frames))


def _system(settings: Settings) -> LocalSystem:
    settings = settings.replace(
        decoder={"fetch_batch": 1, "ack_wait_s": 5.0},
        encoder={"fetch_batch": 1, "ack_wait_s": 5.0},
        inference={"ack_wait_s": 5.0},
    )
    return LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)


def test_kill_9_of_every_stage_mid_run_loses_and_duplicates_nothing(settings: Settings) -> None:
    """SIGKILL decoder, inference, encoder and sink processes while GOPs are in flight
    (twice each); the supervisor restarts them and redelivery completes the work."""
    system = _system(settings)
    victims = ["decoder", "inference", "encoder", "sink", "decoder", "inference", "encoder"]
    killed: list[str] = []

    def kill_next(count: int) -> None:
        if victims and count >= len(killed) // 2 and count < GOPS:
            stage = victims.pop(0)
            for managed in system.processes:
                if managed.name.startswith(f"{stage}-") and managed.alive and managed.process:
                    managed.process.send_signal(signal.SIGKILL)
                    killed.append(managed.name)
                    break

    with system:
        system.start()
        system.wait_ready()
        gateway = system.add_camera("lobby", str(faces_clip()), "realtime")
        result = system.wait_for_camera("lobby", gateway, stall_timeout=90, on_progress=kill_next)
        assert result.complete, result.reason
        assert len(killed) >= 4, killed
        assert output_gops(system.settings, "lobby") == Counter({g: 1 for g in range(GOPS)})
        lines = read_jsonl(Path(settings.sink.output_dir) / "lobby" / "detections.jsonl")
        assert [line["frame"] for line in lines] == list(range(FACES.frames))
        assert sum(m.restarts for m in system.processes) >= len(killed)
        _assert_complete(system, system.settings, "after", "fast")


def test_nats_server_restart_mid_run_resumes(settings: Settings, nats_server: NatsServer) -> None:
    """Stop and restart nats-server (file storage, same ports) while GOPs are in flight:
    clients reconnect, pull consumers resume, nothing is lost or duplicated."""
    system = _system(settings)
    restarted: list[int] = []

    def restart(count: int) -> None:
        if not restarted and count >= 2:
            restarted.append(count)
            nats_server.stop()
            nats_server.start()

    with system:
        system.start()
        system.wait_ready()
        gateway = system.add_camera("lobby", str(faces_clip()), "realtime")
        result = system.wait_for_camera("lobby", gateway, stall_timeout=90, on_progress=restart)
        assert restarted
        assert result.complete, result.reason
        assert output_gops(system.settings, "lobby") == Counter({g: 1 for g in range(GOPS)})
        _assert_complete(system, system.settings, "after", "fast")


def test_sigterm_drains_within_grace(settings: Settings) -> None:
    """SIGTERM to every stage while work is in flight: each exits 0 within the grace
    period; the restarted stages finish the camera exactly once."""
    system = _system(settings)
    codes: list[int | None] = []

    def term(count: int) -> None:
        if not codes and count >= 1:
            procs = [m.process for m in system.processes if m.name.split("-")[0] in STAGES]
            for p in procs:
                if p is not None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                if p is not None:
                    codes.append(p.wait(timeout=settings.local.shutdown_grace_s))

    with system:
        system.start()
        system.wait_ready()
        gateway = system.add_camera("lobby", str(faces_clip()), "realtime")
        result = system.wait_for_camera("lobby", gateway, stall_timeout=90, on_progress=term)
        assert codes, "SIGTERM was never sent"
        assert all(c == 0 for c in codes), codes
        assert result.complete, result.reason
        assert output_gops(system.settings, "lobby") == Counter({g: 1 for g in range(GOPS)})
