"""What forwarding each packet to ``live.<camera>`` (the instant view) costs the gateway, nobody watching.

The gateway plays the same generated clip in real time (``pacing=realtime``, as a
camera) against a real nats-server, alternately with packet forwarding off and on
(``Gateway(live_packets=...)``), and the process CPU time (user + system, all threads:
the demux thread, the event loop, the NATS client) is measured per run. No one
subscribes to ``live.>``: the server drops what it gets. CPU time rather than wall time,
and off/on alternated, because the machine is shared (see the JSON's ``machine``).

    python -m bench.gateway_live_cpu [--seconds S] [--rounds N]

Writes ``bench/results/gateway_live_cpu.json``: CPU seconds per run, the on/off ratio,
and the packets forwarded.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, bench_settings, clip, ratio, write_result
from framepipe.core import bus
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.natsserver import NatsServer
from framepipe.media.sample import ClipSpec
from framepipe.stages.gateway import Gateway


async def _one_run(settings: Settings, source: Path, camera: str, forward: bool) -> dict[str, Any]:
    gateway = Gateway(settings, camera, str(source), "realtime", live_packets=forward)
    cpu, wall = time.process_time(), time.monotonic()
    await gateway.run()
    return {
        "forwarding": forward,
        "cpu_s": round(time.process_time() - cpu, 3),
        "wall_s": round(time.monotonic() - wall, 2),
        "gops": gateway.published,
    }


async def _measure(settings: Settings, source: Path, rounds: int) -> tuple[list[dict[str, Any]], int]:
    nc = await bus.connect(settings, "bench-setup", retry_initial=False)
    try:
        await bus.ensure_topology(nc.jetstream(timeout=10.0), settings)
        received = 0

        async def count(_msg: Any) -> None:
            nonlocal received
            received += 1

        # Counts on a subject nobody else uses, to prove forwarding ran (live.<camera>'s own
        # subject stays without a subscriber, which is the case measured).
        runs = []
        for i in range(rounds):
            for forward in (False, True):
                runs.append(await _one_run(settings, source, f"cpu{i}{int(forward)}", forward))
        sub = await nc.subscribe(Names.live_subject("probe"), cb=count)
        await _one_run(settings, source, "probe", True)
        await asyncio.sleep(0.5)
        await sub.unsubscribe()
        return runs, received
    finally:
        await nc.close()


def run(seconds: float, rounds: int, workdir: Path) -> dict[str, Any]:
    spec = ClipSpec(width=640, height=360, fps=25, seconds=seconds, gop=25, bframes=0)
    source = clip(spec)
    server = NatsServer(store_dir=workdir / "jetstream").start(log_file=workdir / "nats.log")
    try:
        settings = bench_settings(
            nats={"url": server.url}, gateway={"metrics_port": -1}, local={"state_dir": str(workdir / "st")}
        )
        runs, probe_packets = asyncio.run(_measure(settings, source, rounds))
    finally:
        server.stop()
    off = [r["cpu_s"] for r in runs if not r["forwarding"]]
    on = [r["cpu_s"] for r in runs if r["forwarding"]]
    off_med, on_med = statistics.median(off), statistics.median(on)
    return {
        "params": {"seconds": seconds, "rounds": rounds, "fps": spec.fps, "size": [spec.width, spec.height]},
        "runs": runs,
        "summary": {
            "cpu_s_without_forwarding_median": off_med,
            "cpu_s_with_forwarding_median": on_med,
            "with_over_without": ratio(on_med, off_med),
            "extra_cpu_ms_per_packet": round((on_med - off_med) * 1000 / spec.frames, 3),
            "extra_cpu_percent_of_one_core": round((on_med - off_med) / seconds * 100, 2),
            "packets_a_subscriber_got_in_the_probe_run": probe_packets,
            "frames_per_run": spec.frames,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fp-live-cpu-") as tmp:
        result = run(args.seconds, args.rounds, Path(tmp))
    write_result(result, RESULTS / "gateway_live_cpu.json", "python -m bench.gateway_live_cpu")


if __name__ == "__main__":
    main()
