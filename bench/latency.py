"""Latency: glass-to-output per GOP (gateway publish → segment written) at real-time pacing.

The whole pipeline runs as in ``framepipe run`` (every stage its own process, a
real nats-server), and gateways play a generated clip as if it were a live
camera (``pacing=realtime``: each GOP is published when its last frame is due).
Per GOP, latency = time the sink wrote ``seg_<gop>.ts`` − the ``captured_at``
stamp the gateway put in the GOP message right before publishing it (same
machine, same clock). Consumer lag (KEDA's ``num_pending + num_ack_pending``,
summed over the stages) is sampled twice a second, so a growing backlog shows.
Baseline in the same run: the time one process needs to do the same work on
one GOP (decode → detect → draw → encode, :func:`bench.e2e.monolith`) — the
floor a pipeline could reach with no bus, no queueing and no second decode.
Writes ``bench/results/latency.json`` and ``latency.png``.

    python -m bench.latency [--quick] [--cameras N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from bench.baselines import monolith
from bench.common import (
    RESULTS,
    bench_settings,
    clip,
    finish,
    gop_done_events,
    load_gops,
    pyplot,
    ratio,
    save_figure,
    stats,
)
from framepipe.core import bus, messages, topology
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.natsserver import NatsServer
from framepipe.local.supervisor import STAGES, LocalSystem
from framepipe.media.sample import ClipSpec
from framepipe.stages.camera_output import segment_name


class LagSampler:
    """Backlog (pending + unacked) of every stage's consumer, over one connection held for a trial.

    A connection per sample (a new event loop, a handshake, then a close every 0.5 s) was
    CPU the harness took from the pipeline it measures, on the same cores.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner = asyncio.Runner()
        self.nc: Any = None

    def __enter__(self) -> LagSampler:
        self.nc = self.runner.run(bus.connect(self.settings, "bench-lag", retry_initial=False))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.nc is not None:
                self.runner.run(self.nc.close())
        finally:
            self.runner.close()

    def sample(self) -> dict[str, int]:
        return self.runner.run(self._sample())

    async def _sample(self) -> dict[str, int]:
        js = self.nc.jetstream(timeout=5.0)
        out = {}
        for stage in STAGES:
            spec = topology.stage_spec(stage).consumer
            info = await js.consumer_info(spec.stream, spec.durable)
            out[stage] = (info.num_pending or 0) + (info.num_ack_pending or 0)
        return out


async def _captured(settings: Settings, first_seq: int) -> tuple[dict[tuple[str, int], float], int]:
    """``captured_at`` of every GOP in VIDEO from ``first_seq`` on; returns it and the next seq."""
    nc = await bus.connect(settings, "bench-video")
    try:
        js = nc.jetstream(timeout=10.0)
        last = (await js.stream_info(Names.VIDEO)).state.last_seq
        out = {}
        for seq in range(first_seq, last + 1):
            raw = await js.get_msg(Names.VIDEO, seq)
            gop = messages.decode(raw.headers, raw.data or b"", messages.GopMessage)
            out[(gop.camera, gop.gop)] = gop.captured_at
        return out, last + 1
    finally:
        await nc.close()


#: the stages a GOP passes, in order; an overlay GOP skips the encoder (the analysis stage
#: remuxes it), a burn-in GOP passes all of them.
PIPELINE_ORDER = (Names.DECODER, Names.INFERENCE, Names.ANALYSIS, Names.ENCODER, Names.SINK)


def breakdown(
    logs: list[Path], captured: dict[tuple[str, int], float], names: list[str]
) -> dict[str, dict[str, float]]:
    """Where a GOP's latency goes: per stage, mean seconds waiting (queue + bus) and working.

    From the stages' ``gop.done`` events (ISO timestamp at the end, ``duration_ms``):
    a stage's work on a GOP spans its first start to its last end over the GOP's
    parts; its wait is from the previous stage's end (the gateway's publish) to that start.
    A GOP counts once the decoder and the sink logged it; a stage it skipped (the encoder,
    in overlay) is left out of its chain, and a stage no GOP passed is left out of the result.
    """
    spans: dict[tuple[str, int], dict[str, list[float]]] = {}
    for event in gop_done_events(logs):
        camera, stage = event.get("camera"), event.get("stage")
        if camera not in names or stage not in PIPELINE_ORDER:
            continue
        end = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
        start = end - float(event.get("duration_ms", 0.0)) / 1000
        span = spans.setdefault((str(camera), int(event["gop"])), {}).setdefault(str(stage), [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    waits: dict[str, list[float]] = {stage: [] for stage in PIPELINE_ORDER}
    works: dict[str, list[float]] = {stage: [] for stage in PIPELINE_ORDER}
    for key, by_stage in spans.items():
        if key not in captured or Names.DECODER not in by_stage or Names.SINK not in by_stage:
            continue
        previous = captured[key]
        for stage in (s for s in PIPELINE_ORDER if s in by_stage):
            start, end = by_stage[stage]
            waits[stage].append(start - previous)
            works[stage].append(end - start)
            previous = end
    return {
        stage: {
            "wait_s": round(float(np.mean(waits[stage])), 3),
            "work_s": round(float(np.mean(works[stage])), 3),
        }
        for stage in PIPELINE_ORDER
        if waits[stage]
    }


def trend_s(latencies: list[float]) -> float:
    """How much latency climbed from the first GOP to the last, by a least-squares line.

    A pipeline that keeps up stays flat; one that falls behind by x s per GOP of
    work climbs by about x per GOP. A line is steadier than first-vs-last on a
    noisy machine.
    """
    if len(latencies) < 3:
        return 0.0
    slope = float(np.polyfit(np.arange(len(latencies)), np.asarray(latencies), 1)[0])
    return slope * (len(latencies) - 1)


class RealtimePipeline:
    """Every stage as a process on a real nats-server; cameras added per trial."""

    def __init__(self, settings: Settings, workdir: Path, *, nats_profiler: bool = False) -> None:
        self.workdir = workdir
        self.server = NatsServer(store_dir=workdir / "jetstream", profile_port=0 if nats_profiler else None)
        self.server.start(log_file=workdir / "nats.log")
        self.settings = settings.replace(
            nats={"url": self.server.url},
            sink={"output_dir": str(workdir / "out")},
            local={"state_dir": str(workdir / "state")},
        )
        self.system = LocalSystem(self.settings, workdir / "state", embedded_nats=False)
        self.next_seq = 1

    def __enter__(self) -> RealtimePipeline:
        try:
            self.system.start()
            self.system.wait_ready()
        except BaseException:
            self.server.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.system.stop()
        finally:
            self.server.stop()

    def trial(
        self, source: Path, cameras: int, tag: str, gop_s: float, stall_s: float = 60.0
    ) -> dict[str, Any]:
        """Play ``source`` on ``cameras`` real-time cameras; per-GOP latency and sampled lag."""
        names = [f"{tag}c{i}" for i in range(cameras)]
        started, harness_cpu = time.monotonic(), time.process_time()
        for name in names:
            self.system.add_camera(name, str(source), "realtime")
        lag: list[dict[str, Any]] = []
        last_progress, last_change = -1, time.monotonic()
        ended: set[str] = set()
        with LagSampler(self.settings) as sampler:
            while len(ended) < len(names) and time.monotonic() - last_change < stall_s:
                self.system.supervise()
                done = 0
                for name in names:
                    progress = self.system.camera_progress(name) or {}
                    for key in ("entries", "gaps"):
                        items = progress.get(key)
                        done += len(items) if isinstance(items, list) else 0
                    if progress.get("ended"):
                        ended.add(name)
                if done != last_progress:
                    last_progress, last_change = done, time.monotonic()
                sample = sampler.sample()
                at = round(time.monotonic() - started, 2)
                lag.append({"t_s": at, "total": sum(sample.values()), **sample})
                time.sleep(0.5)
        harness_cpu = time.process_time() - harness_cpu
        captured, self.next_seq = asyncio.run(_captured(self.settings, self.next_seq))
        out_dir = Path(self.settings.sink.output_dir)
        per_camera: dict[str, list[float]] = {}
        for (camera, gop), at in sorted(captured.items(), key=lambda kv: kv[1]):
            segment = out_dir / camera / segment_name(gop)
            if camera in names and segment.is_file():
                per_camera.setdefault(camera, []).append(segment.stat().st_mtime - at)
        latencies = [x for name in names for x in per_camera.get(name, [])]
        totals = [s["total"] for s in lag]
        third = max(1, len(totals) // 3)
        growth = trend_s([float(np.mean(xs)) for xs in zip(*per_camera.values(), strict=False)])
        return {
            "cameras": cameras,
            "complete": len(ended) == len(names),
            "gops": len(latencies),
            "latency_s": stats(latencies),
            "latency_trend_s": round(growth, 3),
            "breakdown": breakdown(sorted((self.workdir / "state" / "logs").glob("*.log")), captured, names),
            "lag_first_third_max": max(totals[:third], default=0),
            "lag_last_third_max": max(totals[-third:], default=0),
            # CPU seconds this harness process used while the cameras played (its polling)
            "harness_cpu_s": round(harness_cpu, 2),
            # Keeping up: every GOP arrived, and latency climbed by less than one GOP over the run.
            "sustained": len(ended) == len(names) and growth < gop_s,
            "samples": {"latency_s": per_camera, "lag": lag},
        }


def plot(result: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    trial = result["realtime"]
    for camera, xs in trial["samples"]["latency_s"].items():
        a.plot(range(len(xs)), xs, marker=".", label=camera)
    a.axhline(result["monolith"]["per_gop_s"]["p50"], color="grey", linestyle="--", label="monolith per GOP")
    a.set_xlabel("GOP")
    a.set_ylabel("glass-to-output latency, s")
    a.legend(fontsize=7)
    lag = trial["samples"]["lag"]
    b.plot([s["t_s"] for s in lag], [s["total"] for s in lag])
    b.set_xlabel("s")
    b.set_ylabel("consumer lag (messages)")
    return save_figure(plt, fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="360p, 6 s clip")
    parser.add_argument("--resolution", default="720p")
    parser.add_argument("--gop", type=int, default=30, help="GOP length in frames")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "latency.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.resolution, args.seconds = "360p", 6.0
    spec = ClipSpec.named(args.resolution, gop=args.gop, seconds=args.seconds)
    source = clip(spec)
    settings = bench_settings()
    gops = load_gops(source)
    base = monolith(gops, settings)
    with (
        tempfile.TemporaryDirectory(prefix="fp-bench-latency-") as tmp,
        RealtimePipeline(settings, Path(tmp)) as rt,
    ):
        trial = rt.trial(source, args.cameras, "lat", spec.gop / spec.fps)
    per_gop = stats(base["per_gop_s"])
    result: dict[str, Any] = {
        "benchmark": "latency",
        "params": {"clip": spec.__dict__, "cameras": args.cameras, "gop_s": spec.gop / spec.fps},
        "monolith": {"per_gop_s": per_gop, "samples": base["per_gop_s"]},
        "realtime": trial,
        "summary": {
            "latency_p50_s": trial["latency_s"]["p50"],
            "latency_p99_s": trial["latency_s"]["p99"],
            "monolith_per_gop_p50_s": per_gop["p50"],
            "ratio_p50_over_monolith_gop": ratio(trial["latency_s"]["p50"], per_gop["p50"]),
            "latency_trend_s": trial["latency_trend_s"],
            "breakdown": trial["breakdown"],
            "sustained": trial["sustained"],
            "complete": trial["complete"],
        },
    }
    command = "python -m bench.latency" + (" --quick" if args.quick else "")
    return finish(result, args.out, command, plot)


if __name__ == "__main__":
    main()
