"""Inference bench, the stage side: a real ``framepipe stage inference`` process on its own
nats-server, timed from its first DETECTIONS message to its last, with the CPU it and
nats-server spent per frame. Used by :mod:`bench.inference`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds
from framepipe.core import bus, messages, topology
from framepipe.core.bus import setup_topology
from framepipe.core.messages import FrameBatch
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.natsserver import NatsServer


async def _publish_and_collect(
    settings: Settings,
    msgs: list[FrameBatch],
    proc: subprocess.Popen[bytes],
    server_pid: int,
    timeout_s: float,
) -> dict[str, Any]:
    nc = await bus.connect(settings, "bench-inference")
    js = nc.jetstream(timeout=10.0)
    received: list[tuple[float, int]] = []
    cpu: list[tuple[float, float]] = []  # (stage, nats-server) CPU seconds at first and last
    done = asyncio.Event()
    want = len(msgs)

    async def on_detections(msg: Any) -> None:
        body = messages.decode(msg.headers or {}, msg.data, messages.DetectionsMessage)
        assert isinstance(body, messages.DetectionsMessage)
        received.append((time.perf_counter(), len(body.frames)))
        if len(received) in (1, want):
            cpu.append((cpu_seconds(proc.pid), cpu_seconds(server_pid)))
        if len(received) >= want:
            done.set()

    sub = await nc.subscribe(Names.wildcard(Names.DETECTIONS), cb=on_detections)
    # Publish once the stage pulls, so its start-up does not overlap the publishing.
    spec = topology.consumer_spec(Names.INFERENCE)
    deadline = time.monotonic() + 120
    while (await js.consumer_info(spec.stream, spec.durable)).num_waiting < 1:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the inference stage did not start (exit {proc.poll()})")
        await asyncio.sleep(0.1)
    for m in msgs:
        headers, body = messages.encode(m)
        await bus.publish(
            js, Names.subject(Names.FRAMES, m.camera), body, headers, f"bench:{m.camera}:{m.gop}"
        )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout_s)
    await sub.unsubscribe()
    await nc.close()
    if len(received) < 2:
        raise RuntimeError(f"stage produced {len(received)} of {want} detections (exit {proc.poll()})")
    received.sort()
    frames_after_first = sum(n for _, n in received[1:])
    elapsed = received[-1][0] - received[0][0]
    result: dict[str, Any] = {
        "messages": len(received),
        "complete": len(received) == want,
        "frames": sum(n for _, n in received),
        "seconds_first_to_last": elapsed,
        "fps": frames_after_first / elapsed,
    }
    if len(cpu) == 2:
        result["cpu_ms_per_frame"] = {
            "stage": 1000 * (cpu[1][0] - cpu[0][0]) / frames_after_first,
            "nats_server": 1000 * (cpu[1][1] - cpu[0][1]) / frames_after_first,
        }
    return result


def stage(settings: Settings, msgs: list[FrameBatch], workdir: Path, max_batch: int) -> dict[str, Any]:
    """One stage run on its own nats-server and store under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = NatsServer(store_dir=workdir / f"js-{max_batch}").start(log_file=workdir / "nats.log")
    try:
        settings = settings.replace(nats={"url": server.url})
        asyncio.run(setup_topology(settings))
        env = dict(os.environ)
        env.update(
            {
                "FRAMEPIPE_NATS__URL": server.url,
                "FRAMEPIPE_INFERENCE__MODELS_DIR": settings.inference.models_dir,
                "FRAMEPIPE_INFERENCE__MAX_BATCH": str(max_batch),
                "FRAMEPIPE_INFERENCE__INTRA_OP_THREADS": str(settings.inference.intra_op_threads),
                "FRAMEPIPE_INFERENCE__METRICS_PORT": "-1",
            }
        )
        log = (workdir / f"stage-{max_batch}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "framepipe", "stage", "inference"], env=env, stdout=log, stderr=log
        )
        try:
            assert server.process is not None
            return asyncio.run(_publish_and_collect(settings, msgs, proc, server.process.pid, timeout_s=120))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    finally:
        server.stop()
