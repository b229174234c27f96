"""What an overlay GOP costs the analysis stage beyond its own logic: the remux and the read.

Each is timed beside the way framepipe did it before December 4th 2026, alternating in one
run, on GOPs cut from real 720p30 clips (1 s GOPs):

- **remux** (``media.remux.remux_gop``): the output stream now has no codec context. Before,
  ``add_stream(codec)`` built an encoder for the codec (libx264, libx265), which the
  container opened and freed at every GOP. The old form is rebuilt here as the baseline.
  H.264 and HEVC; CPU ms per GOP of this process. (libx265 reports each open on stderr: the
  baseline's HEVC pass prints two lines per GOP.)
- **read** of the GOP from VIDEO by its sequence (``core.bus.stored_msg``): a direct get,
  raw bytes, against the stream API's ``STREAM.MSG.GET``, whose JSON reply carries the body
  in base64. On a real nats-server; CPU ms per read of this process and of the server.
- **KV reads** of the buckets read at every GOP (the output mode and, for an on-demand
  camera, its viewer key by the analysis stage; the source state by the sink): a bucket
  made as before answers a get through the stream API; one made by today's setup
  (``BucketSpec.direct_reads``) with a direct get.

Best of ``--repeats`` passes for each. Not part of CI. Writes ``bench/results/gop_reads.json``.

    python -m bench.gop_reads [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from bench.common import RESULTS, clip, cpu_seconds, load_gops, ratio, write_result
from framepipe.core import bus, messages
from framepipe.core.bus import setup_topology
from framepipe.core.messages import GopMessage
from framepipe.core.settings import Settings
from framepipe.core.sources import SourceState
from framepipe.core.topology import Names
from framepipe.local.natsserver import NatsServer
from framepipe.media.remux import mux_packets, remux_gop
from framepipe.media.sample import ClipSpec


def remux_with_an_encoder_context(gop: GopMessage) -> bytes:
    """The remux as it was: the same packets into a stream made by ``add_stream``."""
    time_base = Fraction(*gop.time_base)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        stream = container.add_stream(gop.codec)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.time_base = gop.width, gop.height, time_base
        mux_packets(container, stream, gop)
    return buffer.getvalue()


def best_ms(passes: Mapping[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """CPU ms per item of each pass, its cheapest of ``repeats``, the passes alternated."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, run in passes.items():
            start = time.process_time()
            items = run()
            spent = (time.process_time() - start) * 1000 / items
            best[name] = round(min(spent, best.get(name, spent)), 4)
    return best


def _each(gops: list[GopMessage], remux: Callable[[GopMessage], bytes]) -> int:
    return sum(1 for gop in gops if remux(gop))


def remux_costs(repeats: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for codec in ("libx264", "libx265"):
        gops = load_gops(clip(ClipSpec(width=1280, height=720, seconds=6.0, gop=30, codec=codec)))
        passes = {
            "before_add_stream": functools.partial(_each, gops, remux_with_an_encoder_context),
            "after_add_mux_stream": functools.partial(_each, gops, lambda g: remux_gop(g)[0]),
        }
        costs = best_ms(passes, repeats)
        costs["ratio_after_to_before"] = ratio(costs["after_add_mux_stream"], costs["before_add_stream"])
        out[codec] = costs
    return out


Read = Callable[[int], Awaitable[bytes]]


async def cpu_per_read(pid: int, passes: Mapping[str, Read], expect: bytes, repeats: int) -> dict[str, float]:
    """CPU ms per read of this process and of the server (pid), best of ``repeats``, alternated."""
    reads, best = 400, dict[str, float]()
    for _ in range(repeats):
        for name, read in passes.items():
            client, served = time.process_time(), cpu_seconds(pid)
            for i in range(reads):
                if await read(i) != expect:
                    raise RuntimeError(f"{name} read back other bytes than were stored")
            for key, spent in (
                (f"{name}_client", time.process_time() - client),
                (f"{name}_server", cpu_seconds(pid) - served),
            ):
                ms = spent * 1000 / reads
                best[key] = round(min(ms, best.get(key, ms)), 4)
    for name in passes:
        best[f"{name}_total"] = round(best[f"{name}_client"] + best[f"{name}_server"], 4)
    before, after = (f"{name}_total" for name in passes)
    best["ratio_after_to_before"] = ratio(best[after], best[before])
    return best


async def _gop_read_costs(js: JetStreamContext, pid: int, gop: GopMessage, repeats: int) -> dict[str, float]:
    headers, body = messages.encode(gop)
    seqs = [
        (await bus.publish(js, Names.subject(Names.VIDEO, "bench"), body, headers, f"bench:{i}:gateway")).seq
        for i in range(50)
    ]

    async def stream_api(i: int) -> bytes:
        return (await js.get_msg(Names.VIDEO, seqs[i % len(seqs)])).data or b""

    async def direct_get(i: int) -> bytes:
        return (await bus.stored_msg(js, Names.VIDEO, seqs[i % len(seqs)])).data or b""

    passes = {"before_stream_api": stream_api, "after_direct_get": direct_get}
    return await cpu_per_read(pid, passes, body, repeats) | {"gop_bytes": len(body)}


async def _kv_read_costs(js: JetStreamContext, pid: int, repeats: int) -> dict[str, dict[str, float]]:
    """Each bucket read at every GOP: made as before (its gets are API requests) and as setup makes it now."""
    state = SourceState("cam-0001", "rtsp://10.0.0.7/stream1", next_gop=86_400, next_frame=2_592_000)
    state.updated_at, state.gops_per_s, state.fps = time.time(), 1.0, 30.0
    values = {
        Names.OUTPUT_MODES_BUCKET: b"overlay",
        Names.SOURCES_BUCKET: state.to_json(),
        Names.VIEWERS_BUCKET: f"web {time.time():.3f}".encode(),
    }
    out: dict[str, dict[str, float]] = {}
    for bucket, value in values.items():
        old = await js.create_key_value(KeyValueConfig(bucket=f"BENCH_BEFORE_{bucket}", history=1))
        now = await js.key_value(bucket)
        for kv in (old, now):
            await kv.put("cam-0001", value)

        async def api_get(i: int, kv: KeyValue = old) -> bytes:
            return (await kv.get("cam-0001")).value or b""

        async def direct_get(i: int, kv: KeyValue = now) -> bytes:
            return (await kv.get("cam-0001")).value or b""

        passes = {"before_stream_api": api_get, "after_direct_get": direct_get}
        out[bucket] = await cpu_per_read(pid, passes, value, repeats) | {"value_bytes": len(value)}
    return out


async def _read_costs(
    settings: Settings, server: NatsServer, gop: GopMessage, repeats: int
) -> dict[str, Any]:
    nc = await bus.connect(settings, "bench-gop-reads")
    js = nc.jetstream(timeout=10.0)
    assert server.process is not None
    try:
        costs: dict[str, Any] = await _gop_read_costs(js, server.process.pid, gop, repeats)
        costs["kv_reads"] = await _kv_read_costs(js, server.process.pid, repeats)
        return costs
    finally:
        await nc.close()


def read_costs(repeats: int) -> dict[str, Any]:
    gop = load_gops(clip(ClipSpec.named("720p", gop=30, seconds=2.0)))[0]
    with tempfile.TemporaryDirectory(prefix="fp-gop-reads-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "jetstream").start(log_file=Path(tmp) / "nats.log")
        try:
            settings = Settings().replace(nats={"url": server.url})
            asyncio.run(setup_topology(settings))
            return asyncio.run(_read_costs(settings, server, gop, repeats))
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "gop_reads.json")
    args = parser.parse_args(argv)
    remux = remux_costs(args.repeats)
    read = read_costs(args.repeats)
    result = {
        "benchmark": "gop_reads",
        "params": {"repeats": args.repeats, "resolution": "720p30", "gop_frames": 30},
        "remux_cpu_ms_per_gop": remux,
        "read_cpu_ms_per_gop": read,
        "summary": {
            "remux_ms_before_after": {
                codec: [c["before_add_stream"], c["after_add_mux_stream"]] for codec, c in remux.items()
            },
            "read_ms_before_after": [read["before_stream_api_total"], read["after_direct_get_total"]],
            "kv_read_ms_before_after": {
                bucket: [c["before_stream_api_total"], c["after_direct_get_total"]]
                for bucket, c in read["kv_reads"].items()
            },
        },
    }
    return write_result(result, args.out, "python -m bench.gop_reads " + " ".join(argv or sys.argv[1:]))


if __name__ == "__main__":
    main()
