"""Where density's CPU goes: CPU seconds per camera-second of each process kind in one trial.

Runs one ``bench.density`` trial (overlay by default) of N real-time cameras on the same
pipeline (every stage a process on a real nats-server) and reads ``/proc/<pid>/stat`` of
every process before and after: gateways, each stage's replicas, nats-server, and this
bench process (its polling is not framepipe's). Beside it, the same run's bare-library
costs (``bench.density.bare_costs``), so each stage's CPU reads as a multiple of the bare
work it does. Not part of CI; short trials on a shared machine, read with the load.

    python -m bench.density_cpu [--cameras 8] [--seconds 10] [--mode overlay]
        [--nats-profile nats.pprof]   # then: go tool pprof -top $(which nats-server) nats.pprof
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import RESULTS, allocator_choice, bench_settings, clip, load_gops, write_result
from bench.density import bare_costs, bare_per_camera
from bench.latency import RealtimePipeline
from framepipe.local.natsserver import NatsServer
from framepipe.media.sample import ClipSpec

TICK = os.sysconf("SC_CLK_TCK")


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _kind(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if pid == os.getpid():
        return "bench"
    if any("nats-server" in w for w in words[:1]):
        return "nats-server"
    if "stage" in words:
        return words[words.index("stage") + 1]
    if "gateway" in words:
        return "gateway"
    return " ".join(Path(w).name for w in words[:3])


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


class CpuSampler(threading.Thread):
    """Last CPU reading of every descendant (processes that end keep their last one)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.series: list[tuple[float, dict[str, float]]] = []

    def sample(self) -> None:
        for pid in _descendants(os.getpid()):
            kind = self.seen.get(pid, (None, 0.0))[0] or _kind(pid)
            self.seen[pid] = (kind, max(_cpu(pid), self.seen.get(pid, ("", 0.0))[1]))

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.sample()
            self.series.append((time.monotonic(), self.totals()))

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, cpu in self.seen.values():
            key = re.sub(r"\s+", " ", kind)
            out[key] = out.get(key, 0.0) + cpu
        return out


def steady_window(seconds: float) -> tuple[float, float]:
    """(start, length) in seconds from the trial's start of its steady state: the middle of
    the trial, after every gateway started (a process start, ~1 s of imports, happens once
    per camera and would weigh heavily in a short clip)."""
    begin = 0.35 * seconds + 3.0
    return begin, seconds - begin


class NatsProfile(threading.Thread):
    """nats-server's CPU profile of the steady window, from its Go profiler on loopback."""

    def __init__(self, server: NatsServer, out: Path, begin_s: float, length_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.out, self.begin_s = server.cpu_profile_url(length_s), out, begin_s
        self.error = ""

    def run(self) -> None:
        time.sleep(self.begin_s)
        try:
            with urllib.request.urlopen(self.url, timeout=self.begin_s + 120) as response:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                self.out.write_bytes(response.read())
        except OSError as exc:
            self.error = str(exc)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--resolution", default="720p")
    parser.add_argument("--mode", default="overlay")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="inference.intra_op_threads, 0: auto")
    parser.add_argument("--out", type=Path, default=RESULTS / "density_cpu.json")
    parser.add_argument(
        "--default-allocator", action="store_true", help="every process on glibc's malloc defaults"
    )
    parser.add_argument(
        "--live-packets",
        default="watched",
        choices=("watched", "always", "off"),
        help="gateway.live_packets (nobody watches in the bench: 'always' is the cost of forwarding anyway)",
    )
    parser.add_argument(
        "--nats-profile",
        type=Path,
        help="also write nats-server's CPU profile of the steady window here (read: go tool pprof -top)",
    )
    args = parser.parse_args(argv)
    allocator_tuned = allocator_choice(args.default_allocator)
    spec = ClipSpec.named(args.resolution, gop=30, seconds=args.seconds)
    source = clip(spec)
    gops = load_gops(source)
    cores = os.cpu_count() or 1
    settings = bench_settings(
        decoder={"replicas": cores},
        encoder={"replicas": cores if args.mode == "burn-in" else 1},
        analysis={"replicas": cores if args.mode == "overlay" else 1},
    ).replace(
        inference={"detect_fps": 5.0, "intra_op_threads": args.intra_op_threads},
        output={"mode": args.mode},
        analysis={"recognise_faces": False},
        gateway={"live_packets": args.live_packets},
    )
    costs = bare_costs(gops[: max(2, len(gops) // 4)], settings)
    with (
        tempfile.TemporaryDirectory(prefix="fp-density-cpu-") as tmp,
        RealtimePipeline(settings, Path(tmp), nats_profiler=args.nats_profile is not None) as rt,
    ):
        rt.trial(source, 1, "warm", spec.gop / spec.fps, stall_s=30.0)
        sampler = CpuSampler()
        sampler.sample()
        before = sampler.totals()
        sampler.start()
        started = time.monotonic()
        profiler = None
        if args.nats_profile is not None:
            profiler = NatsProfile(rt.server, args.nats_profile, *steady_window(args.seconds))
            profiler.start()
        result = rt.trial(source, args.cameras, "p", spec.gop / spec.fps, stall_s=30.0)
        wall = time.monotonic() - started
        if profiler is not None:
            profiler.join(timeout=30.0)
        sampler.stop.set()
        sampler.join()
        sampler.sample()
        after = sampler.totals()
    camera_s = args.cameras * args.seconds
    per_camera_s = {k: round((after[k] - before.get(k, 0.0)) / camera_s, 5) for k in sorted(after)}
    begin, length = steady_window(args.seconds)
    t0, t1 = started + begin, started + begin + length
    window = [(t, v) for t, v in sampler.series if t0 <= t <= t1]
    steady: dict[str, float] = {}
    if len(window) >= 2:
        (ta, va), (tb, vb) = window[0], window[-1]
        steady = {k: round((vb[k] - va.get(k, 0.0)) / (tb - ta) / args.cameras, 5) for k in sorted(vb)}
    # the mode's own bare work: a burn-in trial is measured against the re-decode and encode
    bare = bare_per_camera(costs, args.mode)
    framepipe = sum(v for k, v in per_camera_s.items() if k != "bench")
    steady_total = sum(v for k, v in steady.items() if k != "bench")
    out = {
        "benchmark": "density_cpu",
        "params": vars(args) | {"out": str(args.out), "nats_profile": str(args.nats_profile or "")},
        "allocator_tuned": allocator_tuned,
        "bare_costs_s_per_camera_s": costs,
        "cpu_s_per_camera_s": per_camera_s,
        "steady_cpu_s_per_camera_s": steady,
        "summary": {
            "framepipe_cpu_per_camera_s": round(framepipe, 5),
            "bare_cpu_per_camera_s": round(bare, 5),
            "overhead_ratio": round(framepipe / bare, 3) if bare else None,
            "steady_framepipe_cpu_per_camera_s": round(steady_total, 5),
            "steady_overhead_ratio": round(steady_total / bare, 3) if bare else None,
            "wall_s": round(wall, 1),
            "sustained": result["sustained"],
            "latency_p50_s": result["latency_s"].get("p50"),
        },
    }
    if profiler is not None:
        found = args.nats_profile.is_file() and not profiler.error
        out["nats_profile"] = {"path": str(args.nats_profile), "written": found, "error": profiler.error}
    write_result(out, args.out, " ".join(["python -m bench.density_cpu", *(argv or sys.argv[1:])]))
    return out


if __name__ == "__main__":
    main()
