"""Bus: per-hop latency (publish → fetch) per message kind and size, and throughput by storage.

**Latency**: for each message kind at realistic sizes (real envelopes from
``messages.encode``: GOPs, frame batches, detections, encode items, segments),
one connection publishes at ``--rate`` messages/s with a de-duplication id and
waits for the JetStream ack, exactly as a stage does; a second connection pulls
from the stage's own durable consumer on the real topology and acks. Latency is
publish start → message in the consumer's hand, p50/p99. It is measured with
``fetch(1)`` and with the runner's fetch (``fetch_batch`` messages, 1 s wait):
nats.py's fetch waits for a full batch until its timeout once the first
message is in, so a lone message on an idle consumer waits too. Baseline in the
same run: core NATS publish → subscription on the same server (no persistence).

**Throughput**: per storage (file, memory) and size, sequential publish-with-ack
(what stages do) and pull-fetch-ack of the same messages, messages/s and MB/s;
baseline: core NATS publish + flush (a round trip, no persistence).
Writes ``bench/results/bus.json`` and ``bus.png``.

    python -m bench.bus [--quick] [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api

from bench.bus_cases import BENCH_CONSUMER, QUICK_CASES, Case, cases
from bench.common import RESULTS, bench_settings, finish, pyplot, ratio, save_figure, stats
from framepipe.core import bus
from framepipe.core.bus import setup_topology
from framepipe.core.runner import FETCH_WAIT_S
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.natsserver import NatsServer


async def _pull_latency(
    settings: Settings, js: JetStreamContext, case: Case, count: int, rate: float, batch: int
) -> tuple[list[float], list[float]]:
    """Publish ``count`` copies at ``rate``; returns (publish→ack ms, publish→fetched ms)."""
    consumer_nc = await bus.connect(settings, "bench-consumer")
    try:
        sub = await consumer_nc.jetstream().pull_subscribe_bind(durable=case.durable, stream=case.stream)
        headers, body = case.encoded
        sent: dict[str, float] = {}
        acked: list[float] = []
        fetched: list[float] = []

        async def consume() -> None:
            while len(fetched) < count:
                try:
                    msgs = await sub.fetch(batch, timeout=FETCH_WAIT_S)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                now = time.perf_counter()
                for msg in msgs:
                    key = (msg.headers or {}).get("Nats-Msg-Id", "")
                    if key in sent:
                        fetched.append((now - sent[key]) * 1000)
                    await msg.ack()

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.2)  # the consumer's first pull is pending, as in a running stage
        start = time.perf_counter()
        subject = Names.subject(case.stream, case.message.camera)
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            msg_id = f"{case.name}:{batch}:{rate}:{i}"  # unique per run: never de-duplicated
            sent[msg_id] = t0 = time.perf_counter()
            await bus.publish(js, subject, body, headers, msg_id)
            acked.append((time.perf_counter() - t0) * 1000)
        await asyncio.wait_for(consumer, timeout=30.0)
        return acked, fetched
    finally:
        await consumer_nc.close()


async def _core_latency(settings: Settings, nc: Client, case: Case, count: int, rate: float) -> list[float]:
    """Baseline: core NATS publish → subscription callback, nothing stored."""
    other = await bus.connect(settings, "bench-core")
    try:
        headers, body = case.encoded
        got: list[float] = []
        sent: dict[str, float] = {}
        done = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            got.append((time.perf_counter() - sent[(msg.headers or {})["Nats-Msg-Id"]]) * 1000)
            if len(got) >= count:
                done.set()

        await other.subscribe("bench.core", cb=on_msg, pending_bytes_limit=512 * 1024**2)
        await other.flush()
        start = time.perf_counter()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            key = f"core:{i}"
            sent[key] = time.perf_counter()
            await nc.publish("bench.core", body, headers={**headers, "Nats-Msg-Id": key})
            await nc.flush()
        # Core NATS is at-most-once: a subscriber that falls behind on a busy machine loses
        # messages (the server cuts slow consumers). Keep what arrived; the row counts the rest.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=10.0)
        return got
    finally:
        await other.close()


async def latency(
    settings: Settings, count: int, rate: float, idle: tuple[int, float], only: list[str]
) -> list[dict[str, Any]]:
    nc = await bus.connect(settings, "bench-bus")
    try:
        js = nc.jetstream(timeout=10.0)
        await js.add_consumer(
            Names.DETECTIONS,
            js_api.ConsumerConfig(durable_name=BENCH_CONSUMER, ack_policy=js_api.AckPolicy.EXPLICIT),
        )
        out = []
        for case in cases():
            if only and case.name not in only:
                continue
            batch = settings.consumer(case.durable).fetch_batch if case.durable != BENCH_CONSUMER else 4
            ack1, fetch1 = await _pull_latency(settings, js, case, count, rate, 1)
            _, fetch_n = await _pull_latency(settings, js, case, count, rate, batch)
            core = await _core_latency(settings, nc, case, count, rate)
            # A camera sends one GOP a second: the consumer is idle when each arrives.
            idle_1: list[float] = []
            idle_n: list[float] = []
            if idle[0]:
                _, idle_1 = await _pull_latency(settings, js, case, idle[0], idle[1], 1)
                _, idle_n = await _pull_latency(settings, js, case, idle[0], idle[1], batch)
            await js.purge_stream(case.stream)
            out.append(
                {
                    "kind": case.message.KIND,
                    "case": case.name,
                    "bytes": len(case.encoded[1]),
                    "stream": case.stream,
                    "consumer": case.durable,
                    "publish_ack_ms": stats(ack1),
                    "publish_to_fetch_ms": stats(fetch1),
                    "runner_fetch_batch": batch,
                    "publish_to_runner_fetch_ms": stats(fetch_n),
                    "core_nats_ms": stats(core),
                    "core_nats_lost": count - len(core),
                    "ratio_p50_over_core": ratio(stats(fetch1)["p50"], stats(core)["p50"]),
                    "idle_rate": idle[1],
                    "idle_publish_to_fetch_ms": stats(idle_1),
                    "idle_publish_to_runner_fetch_ms": stats(idle_n),
                    "samples_ms": {
                        "fetch1": fetch1,
                        "runner_fetch": fetch_n,
                        "core": core,
                        "idle_fetch1": idle_1,
                        "idle_runner_fetch": idle_n,
                    },
                }
            )
        return out
    finally:
        await nc.close()


async def throughput(settings: Settings, storage: str, sizes: list[int], count: int) -> list[dict[str, Any]]:
    nc = await bus.connect(settings, "bench-bus-tp")
    try:
        js = nc.jetstream(timeout=30.0)
        kind = js_api.StorageType.FILE if storage == "file" else js_api.StorageType.MEMORY
        name = f"BENCH_{storage.upper()}"
        await js.add_stream(
            js_api.StreamConfig(
                name=name, subjects=[f"bench.{storage}"], storage=kind, max_msg_size=settings.nats.max_payload
            )
        )
        await js.add_consumer(
            name, js_api.ConsumerConfig(durable_name="tp", ack_policy=js_api.AckPolicy.EXPLICIT)
        )
        out = []
        for size in sizes:
            body = os.urandom(size)
            n = max(4, min(count, (256 * 1024 * 1024) // size))  # ≤ 256 MiB per case
            started = time.perf_counter()
            for i in range(n):
                await js.publish(f"bench.{storage}", body, headers={"Nats-Msg-Id": f"{size}:{i}"})
            pub_s = time.perf_counter() - started
            sub = await js.pull_subscribe_bind(durable="tp", stream=name)
            got, started = 0, time.perf_counter()
            while got < n:
                # Keep one fetch under the client's pending-bytes limit for big messages.
                msgs = await sub.fetch(max(1, min(16, n - got, (16 * 1024**2) // size)), timeout=10.0)
                for msg in msgs:
                    await msg.ack()
                got += len(msgs)
            fetch_s = time.perf_counter() - started
            await sub.unsubscribe()
            started = time.perf_counter()
            for _ in range(n):
                await nc.publish("bench.core.tp", body)
                await nc.flush()
            core_s = time.perf_counter() - started
            await js.purge_stream(name)
            mb = n * size / 1e6
            out.append(
                {
                    "storage": storage,
                    "bytes": size,
                    "messages": n,
                    "publish_msgs_per_s": n / pub_s,
                    "publish_mb_per_s": mb / pub_s,
                    "fetch_msgs_per_s": n / fetch_s,
                    "fetch_mb_per_s": mb / fetch_s,
                    "core_msgs_per_s": n / core_s,
                    "ratio_publish_over_core": ratio(n / pub_s, n / core_s),
                }
            )
        return out
    finally:
        await nc.close()


def measure(storage: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = NatsServer(store_dir=workdir / storage / "jetstream").start(
        log_file=workdir / f"nats-{storage}.log"
    )
    try:
        # VIDEO's default 8 GiB cap (and THERMAL's 1 GiB) exceed the server's 1 GB memory store,
        # which JetStream reserves up front; the bench stores far less.
        streams = {"storage": storage, "video_max_bytes": 512 * 1024**2, "thermal_max_bytes": 128 * 1024**2}
        settings = bench_settings(nats={"url": server.url}, streams=streams)
        idle_count = args.idle_count if storage == "file" else 0
        asyncio.run(setup_topology(settings))
        return {
            # The idle-consumer wait does not depend on storage: measured on file storage only.
            "latency": asyncio.run(
                latency(settings, args.count, args.rate, (idle_count, args.idle_rate), args.cases)
            ),
            "throughput": asyncio.run(throughput(settings, storage, args.sizes, args.tp_count)),
        }
    finally:
        server.stop()


def plot(result: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    rows = result["storage"]["file"]["latency"]
    labels = [r["case"] for r in rows]
    xs = range(len(labels))
    a.bar([x - 0.27 for x in xs], [r["core_nats_ms"]["p50"] for r in rows], 0.27, label="core NATS")
    a.bar(list(xs), [r["publish_to_fetch_ms"]["p50"] for r in rows], 0.27, label="JetStream fetch(1)")
    a.bar(
        [x + 0.27 for x in xs],
        [r["publish_to_runner_fetch_ms"]["p50"] for r in rows],
        0.27,
        label="runner fetch",
    )
    a.set_yscale("log")
    a.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=7)
    a.set_ylabel("publish → fetch p50, ms (file)")
    a.legend(fontsize=7)
    for storage, data in result["storage"].items():
        tp = data["throughput"]
        b.plot(
            [t["bytes"] for t in tp],
            [t["publish_mb_per_s"] for t in tp],
            marker="o",
            label=f"{storage} publish",
        )
        b.plot(
            [t["bytes"] for t in tp], [t["fetch_mb_per_s"] for t in tp], marker="x", label=f"{storage} fetch"
        )
    b.set_xscale("log")
    b.set_xlabel("message bytes")
    b.set_ylabel("MB/s")
    b.legend(fontsize=7)
    return save_figure(plt, fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer messages per case")
    parser.add_argument("--rate", type=float, default=30.0, help="messages/s for the latency runs")
    parser.add_argument("--count", type=int, default=150, help="messages per latency case")
    parser.add_argument("--idle-rate", type=float, default=2.0, help="messages/s for the idle-consumer runs")
    parser.add_argument("--idle-count", type=int, default=10, help="messages per idle-consumer run")
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--tp-count", type=int, default=400, help="messages per throughput size")
    parser.add_argument("--sizes", default="1024,102400,1048576,4194304")
    parser.add_argument("--out", type=Path, default=RESULTS / "bus.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.tp_count, args.idle_count = 20, 40, 0
        args.cases = args.cases or QUICK_CASES
    args.sizes = [int(s) for s in str(args.sizes).split(",")]
    args.cases = sorted({c for c in str(args.cases or "").split(",") if c})
    storages: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fp-bench-bus-") as tmp:
        for storage in ("file", "memory"):
            storages[storage] = measure(storage, Path(tmp), args)
    summary: dict[str, Any] = {"latency_ms": {}, "throughput": {}}
    for storage, data in storages.items():
        for row in data["latency"]:
            summary["latency_ms"][f"{storage} {row['case']}"] = {
                "fetch1_p50": row["publish_to_fetch_ms"]["p50"],
                "fetch1_p99": row["publish_to_fetch_ms"]["p99"],
                "runner_p50": row["publish_to_runner_fetch_ms"]["p50"],
                "runner_p99": row["publish_to_runner_fetch_ms"]["p99"],
                "idle_fetch1_p50": row["idle_publish_to_fetch_ms"]["p50"],
                "idle_runner_p50": row["idle_publish_to_runner_fetch_ms"]["p50"],
                "core_p50": row["core_nats_ms"]["p50"],
            }
        for row in data["throughput"]:
            summary["throughput"][f"{storage} {row['bytes']}B"] = {
                "publish_msgs_per_s": round(row["publish_msgs_per_s"], 1),
                "publish_mb_per_s": round(row["publish_mb_per_s"], 1),
                "fetch_mb_per_s": round(row["fetch_mb_per_s"], 1),
                "ratio_publish_over_core": row["ratio_publish_over_core"],
            }
    result: dict[str, Any] = {
        "benchmark": "bus",
        "params": {**{k: v for k, v in vars(args).items() if k != "out"}, "fetch_wait_s": FETCH_WAIT_S},
        "storage": storages,
        "summary": summary,
    }
    command = "python -m bench.bus" + (" --quick" if args.quick else "")
    return finish(result, args.out, command, plot)


if __name__ == "__main__":
    main()
