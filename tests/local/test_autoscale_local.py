"""The local supervisor scales real stage processes on real consumer lag."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from structlog.testing import capture_logs

from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.settings import Settings
from framepipe.core.topology import SCALED_STAGES
from framepipe.local.natsserver import NatsServer
from framepipe.local.processes import child_preexec
from framepipe.local.supervisor import LocalSystem
from tests.helpers import FACES, faces_clip, output_gops

GOPS = FACES.frames // FACES.gop
CAMERAS = ("burst-a", "burst-b", "burst-c", "burst-d")


def _fast(lag_threshold: int) -> ScalingSettings:
    """Second-scale intervals so a burst of a few seconds shows the whole cycle."""
    return ScalingSettings(
        min_replicas=1,
        max_replicas=3,
        lag_threshold=lag_threshold,
        polling_interval_s=1,
        cooldown_period_s=5,
        scale_up_pods=2,
        scale_up_period_s=1,
        scale_down_stabilization_s=3,
        scale_down_percent=100,
        scale_down_period_s=1,
        fallback_replicas=1,
    )


def test_burst_scales_every_stage_up_and_back_down_losing_nothing(
    settings: Settings, nats_server: NatsServer
) -> None:
    """Four file cameras at full speed: every scaled stage (decoder, inference, analysis,
    encoder) scales above one replica from its lag, return to one after the burst (drained replicas exit 0),
    every change is one ``autoscale.scaled`` log line, and every GOP of every camera
    reaches OUTPUT exactly once."""
    # Every GOP has a face to embed: analysis has real work and a backlog of its own.
    settings = settings.replace(local={"max_replicas": 3})
    system = LocalSystem(
        settings, Path(settings.local.state_dir), embedded_nats=False, monitor_url=nats_server.monitor_url
    )
    scaling = StageScaling(decoder=_fast(2), inference=_fast(2), analysis=_fast(1), encoder=_fast(1))
    with system, capture_logs() as logged:
        system.start()
        system.wait_ready()
        autoscaler = system.enable_autoscaling(scaling)
        gateways = {camera: system.add_camera(camera, str(faces_clip()), "fast") for camera in CAMERAS}
        for camera, gateway in gateways.items():
            result = system.wait_for_camera(camera, gateway, stall_timeout=90)
            assert result.complete, result.reason
        deadline = time.monotonic() + 60
        while any(len(system.replicas(stage)) > 1 for stage in SCALED_STAGES) and time.monotonic() < deadline:
            system.supervise()
            time.sleep(0.2)
        while any(m.draining for m in system.processes) and time.monotonic() < deadline:
            system.supervise()
            time.sleep(0.2)

        timeline = autoscaler.timeline
        peak = {stage: max([1] + [n for _, s, n, _, _ in timeline if s == stage]) for stage in SCALED_STAGES}
        assert all(peak[stage] >= 2 for stage in SCALED_STAGES), (peak, timeline)
        assert {stage: len(system.replicas(stage)) for stage in SCALED_STAGES} == dict.fromkeys(
            SCALED_STAGES, 1
        )
        assert system.drained, "no replica was drained on scale-down"
        assert all(code == 0 for _, code in system.drained), system.drained
        for camera in CAMERAS:
            assert output_gops(system.settings, camera) == Counter({g: 1 for g in range(GOPS)})
        scaled = [e for e in logged if e["event"] == "autoscale.scaled"]
        assert [(e["stage"], e["replicas_to"]) for e in scaled] == [(s, n) for _, s, n, _, _ in timeline]


def test_replica_drained_while_starting_exits_cleanly(nats_settings: Settings) -> None:
    """SIGTERM at any point of a stage process's start-up (even before the interpreter has
    run a line of framepipe, or once it fetches) ends it with exit code 0: scale-down right
    after scale-up is not a crash. The process is started as the supervisor starts it
    (SIGTERM blocked until framepipe's handler is in place)."""
    env = dict(os.environ) | nats_settings.to_env()
    for delay in (0.0, 0.05, 0.5, 1.5):
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "framepipe", "stage", "decoder"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=functools.partial(child_preexec, os.getpid()),
            )
            time.sleep(delay)
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
            stderr.seek(0)
            assert code == 0, f"SIGTERM after {delay}s: exit {code}; stderr ends: {stderr.read()[-1500:]!r}"
