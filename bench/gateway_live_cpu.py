"""What forwarding each packet to ``live.<camera>`` (the instant view) costs the gateway, nobody watching.

The gateway plays the same generated clip in real time (``pacing=realtime``, as a
camera) against a real nats-server, in turn with each ``gateway.live_packets``: ``off``;
``watched`` (the default: forwarded only while ``instant.<camera>`` is in FP_VIEWERS,
here never); ``always`` (every packet published). The process CPU time (user + system,
all threads: the demux thread, the event loop, the NATS client) is measured per run. No
one subscribes to ``live.>``: the server drops what it gets. CPU time rather than wall
time, and the modes alternated, because the machine is shared (see the JSON's ``machine``).
Two probe runs prove the forwarding ran: ``always`` with a subscriber, and ``watched``
with a subscriber and the viewer key written.

    python -m bench.gateway_live_cpu [--seconds S] [--rounds N]

Writes ``bench/results/gateway_live_cpu.json``: CPU seconds per run, each mode's ratio
to ``off``, and the packets the probes got.
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
from framepipe.core.viewers import mark_watched, viewers_bucket
from framepipe.local.natsserver import NatsServer
from framepipe.media.sample import ClipSpec
from framepipe.stages.gateway import Gateway

MODES = ("off", "watched", "always")


async def _one_run(settings: Settings, source: Path, camera: str, mode: str) -> dict[str, Any]:
    gateway = Gateway(settings.replace(gateway={"live_packets": mode}), camera, str(source), "realtime")
    cpu, wall = time.process_time(), time.monotonic()
    await gateway.run()
    return {
        "live_packets": mode,
        "cpu_s": round(time.process_time() - cpu, 3),
        "wall_s": round(time.monotonic() - wall, 2),
        "gops": gateway.published,
        "forwarded": gateway.live.forwarded if gateway.live else 0,
    }


async def _probe(nc: Any, settings: Settings, source: Path, camera: str, mode: str) -> int:
    """Packets a subscriber of live.<camera> gets from one run."""
    received = 0

    async def count(_msg: Any) -> None:
        nonlocal received
        received += 1

    sub = await nc.subscribe(Names.live_subject(camera), cb=count)
    await _one_run(settings, source, camera, mode)
    await asyncio.sleep(0.5)
    await sub.unsubscribe()
    return received


async def _measure(
    settings: Settings, source: Path, rounds: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    nc = await bus.connect(settings, "bench-setup", retry_initial=False)
    try:
        js = nc.jetstream(timeout=10.0)
        await bus.ensure_topology(js, settings)
        runs = [
            await _one_run(settings, source, f"cpu{i}{mode}", mode) for i in range(rounds) for mode in MODES
        ]
        # The probes use cameras nobody else uses: the measured runs' subjects stay without a
        # subscriber (the case measured) and their viewer keys absent.
        probes = {"always": await _probe(nc, settings, source, "probe-always", "always")}
        await mark_watched(await viewers_bucket(js), "probe-watched", "bench", view="instant")
        probes["watched"] = await _probe(nc, settings, source, "probe-watched", "watched")
        return runs, probes
    finally:
        await nc.close()


def run(seconds: float, rounds: int, workdir: Path) -> dict[str, Any]:
    spec = ClipSpec(width=640, height=360, fps=25, seconds=seconds, gop=25, bframes=0)
    source = clip(spec)
    server = NatsServer(store_dir=workdir / "jetstream").start(log_file=workdir / "nats.log")
    try:
        settings = bench_settings(
            nats={"url": server.url},
            gateway={"metrics_port": -1},
            local={"state_dir": str(workdir / "st")},
            streams={"viewer_ttl_s": 60.0},  # the probe's key outlives its run
        )
        runs, probes = asyncio.run(_measure(settings, source, rounds))
    finally:
        server.stop()
    median = {m: statistics.median(r["cpu_s"] for r in runs if r["live_packets"] == m) for m in MODES}
    return {
        "params": {"seconds": seconds, "rounds": rounds, "fps": spec.fps, "size": [spec.width, spec.height]},
        "runs": runs,
        "summary": {
            **{f"cpu_s_{m}_median": median[m] for m in MODES},
            "always_over_off": ratio(median["always"], median["off"]),
            "watched_nobody_over_off": ratio(median["watched"], median["off"]),
            "always_extra_cpu_ms_per_packet": round(
                (median["always"] - median["off"]) * 1000 / spec.frames, 3
            ),
            "watched_nobody_extra_cpu_ms_per_packet": round(
                (median["watched"] - median["off"]) * 1000 / spec.frames, 3
            ),
            "packets_a_subscriber_got_in_the_probe_runs": probes,
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
