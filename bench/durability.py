"""Durability costs: GOP-sized publish-with-ack throughput by fsync policy and replicas.

Each variant starts real nats-servers on loopback with file storage and publishes
``--count`` GOP-sized messages (``--size`` bytes, a msg id each) one at a time,
waiting for the ack as the gateway does. Variants: one server with
``sync_interval`` default (fsync every 2 min; the baseline), one with ``always``
(fsync before every ack), and a 3-node cluster with R3 streams (ack = a quorum
holds it). Ratios are msgs/s against the baseline of the same run; the variants
run interleaved ``--rounds`` times so load drift hits all of them alike.
Writes ``bench/results/durability.json``.

    python -m bench.durability [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from nats.js import api as js_api

from bench.common import RESULTS, ratio, stats, write_result
from framepipe.core import bus
from framepipe.core.settings import Settings
from framepipe.local.natscluster import NatsNodes

VARIANTS = ("r1-sync-default", "r1-sync-always", "r3-cluster-sync-default")


def _nodes(variant: str, state: Path) -> NatsNodes:
    sync = "always" if "always" in variant else "default"
    settings = Settings().replace(
        local={"state_dir": str(state), "nats_auth": False}, nats={"sync_interval": sync}
    )
    return NatsNodes.local(settings, state, count=3 if variant.startswith("r3") else 1)


async def _publish(nodes: NatsNodes, count: int, size: int) -> float:
    settings = nodes.client_settings(Settings().replace(local={"state_dir": "/nonexistent"}))
    nc = await bus.connect(settings, "bench-durability", retry_initial=False)
    try:
        js = nc.jetstream(timeout=10.0)
        config = js_api.StreamConfig(
            name="BENCH", subjects=["bench.>"], num_replicas=settings.streams.replicas or 1
        )
        await js.add_stream(config)
        body = os.urandom(size)
        started = time.perf_counter()
        for i in range(count):
            await bus.publish(js, "bench.gop", body, {}, f"bench:{i}")
        return count / (time.perf_counter() - started)
    finally:
        await nc.close()


def measure(variant: str, count: int, size: int) -> float:
    with tempfile.TemporaryDirectory(prefix="fp-durability-") as tmp:
        nodes = _nodes(variant, Path(tmp)).start()
        try:
            return asyncio.run(_publish(nodes, count, size))
        finally:
            nodes.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=0)
    args = parser.parse_args()
    count = args.count or (40 if args.quick else 300)
    rounds = args.rounds or (1 if args.quick else 3)
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            samples[variant].append(measure(variant, count, args.size))
    base = stats(samples[VARIANTS[0]])["p50"]
    summary: dict[str, Any] = {
        v: {"msgs_per_s_p50": round(stats(s)["p50"], 1), "ratio_vs_r1_default": ratio(stats(s)["p50"], base)}
        for v, s in samples.items()
    }
    result = {
        "params": {"count": count, "size": args.size, "rounds": rounds},
        "samples": samples,
        "summary": summary,
    }
    write_result(
        result, RESULTS / "durability.json", "python -m bench.durability" + (" --quick" if args.quick else "")
    )


if __name__ == "__main__":
    main()
