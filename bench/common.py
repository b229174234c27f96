"""What every benchmark shares: machine info, cached media, statistics, result files,
and a harness that times real stage processes through a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from framepipe.core import bus, topology
from framepipe.core.bus import setup_topology
from framepipe.core.messages import GopMessage
from framepipe.core.settings import Settings
from framepipe.local.natsserver import NatsServer
from framepipe.media.gop import DemuxedPacket, GopCutter, TimestampNormalizer
from framepipe.media.sample import ClipSpec, cached_clip

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MEDIA = REPO / ".cache" / "bench-media"


def machine() -> dict[str, Any]:
    import av
    import onnxruntime

    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError):
        memory_gib = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        # Other work on a shared machine skews every figure: record it with each result.
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "av": av.__version__,
        "onnxruntime": onnxruntime.__version__,
        "providers": onnxruntime.get_available_providers(),
    }


def clip(spec: ClipSpec) -> Path:
    """The generated clip for ``spec``, cached under ``.cache/bench-media`` (never committed)."""
    return cached_clip(spec, MEDIA)


def load_gops(path: Path, camera: str = "bench") -> list[GopMessage]:
    """Cut a file into GOP messages exactly as the gateway does, timestamps normalised as
    it normalises them (Matroska's first B-frames come with decode timestamps that go back,
    which the gateway repairs and a muxer refuses)."""
    from framepipe.stages.gateway import gop_message, open_input, stream_params
    from framepipe.stages.gateway.reader import iter_raw_packets

    container, stream = open_input(str(path))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base)
        normalise = TimestampNormalizer(params.time_base)

        def packets() -> Iterator[DemuxedPacket]:
            for raw_pts, raw_dts, keyframe, data in iter_raw_packets(container, stream):
                pts, dts, _ = normalise(raw_pts, raw_dts)
                yield DemuxedPacket(pts, dts, keyframe, data)

        return [gop_message(camera, g, params) for g in cutter.cut(packets())]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``; 0 elsewhere).

    On a machine shared with other work, wall time measures the neighbours too;
    CPU time measures what the code itself costs.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(samples: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean/min/max of ``samples`` (empty → zeros, so JSON stays valid)."""
    if not samples:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0}
    a = np.asarray(samples, dtype=float)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "mean": round(float(a.mean()), 3),
        "min": round(float(a.min()), 3),
        "max": round(float(a.max()), 3),
    }


def ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 3) if baseline > 0 else 0.0


def bench_settings(**sections: dict[str, Any]) -> Settings:
    return Settings().replace(inference={"models_dir": str(REPO / ".cache" / "models")}, **sections)


def write_result(result: dict[str, Any], out: Path, command: str) -> dict[str, Any]:
    """Stamp the command and machine, write the JSON and print the summary."""
    result["command"] = command
    result["machine"] = machine()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {out}")
    return result


def finish(
    result: dict[str, Any], out: Path, command: str, plot: Callable[[dict[str, Any], Path], bool]
) -> dict[str, Any]:
    """:func:`write_result`, then the bench's plot next to the JSON (when matplotlib is there)."""
    write_result(result, out, command)
    if plot(result, out.with_suffix(".png")):
        print(f"wrote {out.with_suffix('.png')}")
    return result


def pyplot() -> Any | None:
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(plt: Any, fig: Any, path: Path, dpi: int = 80) -> bool:
    """Lay out, write and free a figure; True, so plot functions can return it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True


@dataclass(frozen=True)
class Outgoing:
    """One pre-encoded message to publish (encoding is kept out of the timed window)."""

    subject: str
    headers: dict[str, str]
    body: bytes
    msg_id: str


@dataclass
class StageRun:
    stage: str
    replicas: int
    inputs: int
    outputs: int
    seconds: float
    complete: bool
    logs: list[str] = field(default_factory=list)
    #: CPU seconds the stage processes used in the timed window (all their threads).
    cpu_s: float = 0.0
    #: CPU seconds nats-server used in the same window (storing and forwarding).
    server_cpu_s: float = 0.0

    @property
    def per_s(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0


class StageHarness:
    """A fresh nats-server with framepipe's topology, and real stage processes on it.

    A run starts ``replicas`` processes of one stage, waits until every one is
    pulling (start-up and model load are not timed), publishes the inputs as
    fast as JetStream acks them, and stops the clock when ``expect`` messages
    sit in the output stream (polled every 20 ms). Nothing consumes the
    outputs, so the downstream stages cost nothing.
    """

    def __init__(self, workdir: Path, settings: Settings) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.server = NatsServer(store_dir=workdir / "jetstream", max_payload=settings.nats.max_payload)
        self.server.start(log_file=workdir / "nats.log")
        self.settings = settings.replace(nats={"url": self.server.url})
        asyncio.run(setup_topology(self.settings))

    def __enter__(self) -> StageHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def publish(self, items: Sequence[Outgoing]) -> list[int]:
        """Publish outside any timed window (e.g. GOPs the encoder re-reads); returns stream seqs."""
        return asyncio.run(self._publish(items))

    async def _publish(self, items: Sequence[Outgoing]) -> list[int]:
        nc = await bus.connect(self.settings, "bench-publish")
        try:
            js = nc.jetstream(timeout=10.0)
            return [(await bus.publish(js, m.subject, m.body, m.headers, m.msg_id)).seq for m in items]
        finally:
            await nc.close()

    def run(
        self,
        stage: str,
        replicas: int,
        inputs: Sequence[Outgoing],
        out_stream: str,
        expect: int,
        *,
        timeout_s: float = 300.0,
        warmup: Sequence[Outgoing] = (),
        warmup_expect: int = 0,
    ) -> StageRun:
        env = dict(os.environ)
        env.update(self.settings.to_env())
        env[f"FRAMEPIPE_{stage.upper()}__METRICS_PORT"] = "-1"
        env["FRAMEPIPE_LOG_FORMAT"] = "json"
        env["FRAMEPIPE_LOG_LEVEL"] = "debug"  # part.done (handler_seconds) is a debug event
        logs = [self.workdir / f"{stage}-{replicas}x-{i}.log" for i in range(replicas)]
        procs = []
        for path in logs:
            with path.open("ab") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "framepipe", "stage", stage], env=env, stdout=log, stderr=log
                    )
                )
        try:
            return asyncio.run(
                self._timed(
                    stage, replicas, inputs, out_stream, expect, timeout_s, procs, logs, warmup, warmup_expect
                )
            )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    async def _timed(
        self,
        stage: str,
        replicas: int,
        inputs: Sequence[Outgoing],
        out_stream: str,
        expect: int,
        timeout_s: float,
        procs: list[subprocess.Popen[bytes]],
        logs: list[Path],
        warmup: Sequence[Outgoing],
        warmup_expect: int,
    ) -> StageRun:
        nc = await bus.connect(self.settings, "bench-harness")
        try:
            js = nc.jetstream(timeout=10.0)
            spec = topology.stage_spec(stage).consumer
            deadline = time.monotonic() + 120.0
            while (await js.consumer_info(spec.stream, spec.durable)).num_waiting < replicas:
                dead = [p.returncode for p in procs if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"{stage} replicas did not start (exits {dead}); see {logs[0]}")
                await asyncio.sleep(0.1)
            # Untimed warm-up: a fresh process's first GOPs pay for growing its heap (page
            # faults on every decoded frame), which a long-running replica does not.
            warm_before = (await js.stream_info(out_stream)).state.messages
            for m in warmup:
                await bus.publish(js, m.subject, m.body, m.headers, m.msg_id)
            while (await js.stream_info(out_stream)).state.messages - warm_before < warmup_expect:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{stage} warm-up did not finish; see {logs[0]}")
                await asyncio.sleep(0.02)
            # The warm-up's last acks may still be in flight: let the stage go idle.
            await asyncio.sleep(0.2)
            before = (await js.stream_info(out_stream)).state.messages
            server_pid = self.server.process.pid if self.server.process else 0
            cpu_before = sum(cpu_seconds(p.pid) for p in procs)
            server_before = cpu_seconds(server_pid)
            started = time.perf_counter()
            for m in inputs:
                await bus.publish(js, m.subject, m.body, m.headers, m.msg_id)
            done = 0
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                done = (await js.stream_info(out_stream)).state.messages - before
                if done >= expect:
                    break
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_before
            server_cpu = cpu_seconds(server_pid) - server_before
            paths = [str(p) for p in logs]
            return StageRun(
                stage, replicas, len(inputs), done, elapsed, done >= expect, paths, cpu, server_cpu
            )
        finally:
            await nc.close()


def gop_done_events(logs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The stages' canonical ``gop.done`` and ``part.done`` log events (one per message handled:
    a stage that works on parts of a GOP logs ``part.done`` for all but the last)."""
    events = []
    for log in logs:
        for line in Path(log).read_text(errors="replace").splitlines():
            if '"gop.done"' in line or '"part.done"' in line:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return events


def handler_seconds(logs: Sequence[str | Path], camera: str | None = None) -> tuple[float, float]:
    """(sum, union) of the stage's handler intervals (parse → process → publish → ack).

    With ``in_flight`` > 1 the intervals overlap: the union is the wall time with at least
    one message in hand, and sum − union is the bus waiting hidden behind other work.
    Each interval ends at its ``gop.done`` timestamp and lasts its ``duration_ms``;
    ``camera`` keeps one camera's events (e.g. not the warm-up's).
    """
    intervals = []
    for event in gop_done_events(logs):
        if camera is not None and event.get("camera") != camera:
            continue
        end = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
        intervals.append((end - float(event.get("duration_ms", 0.0)) / 1000.0, end))
    total = sum(end - start for start, end in intervals)
    union, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            union += end - max(start, reach)
            reach = end
    return total, union


Run = TypeVar("Run")


def interleaved(
    repeats: int, bare: Callable[[], dict[str, Any]], stage: Callable[[int], Run]
) -> tuple[list[dict[str, Any]], list[Run]]:
    """bare, stage, bare, stage, …, bare: both sides see the same stretch of machine load."""
    passes, runs = [bare()], []
    for index in range(repeats):
        runs.append(stage(index))
        passes.append(bare())
    return passes, runs


#: a glibc tunable set to its default value: every framepipe process then leaves glibc's
#: allocator as it is (framepipe.core.allocator), for a same-run comparison.
DEFAULT_ALLOCATOR_ENV = {"GLIBC_TUNABLES": "glibc.malloc.perturb=0"}


def allocator_choice(default: bool) -> bool:
    """Tune this process's allocator as the stages do, or (``default``) leave every process
    started from here on glibc's defaults; True when tuned."""
    from framepipe.core.allocator import tune_allocator

    if default:
        os.environ.update(DEFAULT_ALLOCATOR_ENV)
    return tune_allocator().tuned
