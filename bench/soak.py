"""Soak: several cameras at real time for a long run; does anything grow after warm-up?

A real local system (embedded nats-server, or ``--cluster`` for the 3-node one,
every stage as its own process) plays ``--cameras`` file cameras paced to real
time; each camera is added again under a new name when its clip ends, so work
never stops. Every ``--interval`` seconds it samples, for every process (stages,
sink, nats-server nodes; gateways come and go and are not tracked): RSS, open
file descriptors and threads from ``/proc``, and each stage consumer's backlog
(KEDA's lag) from ``/jsz``. The summary compares the median of the last fifth of
the run with the median just after warm-up (the first ``--warmup`` fraction).
Not part of CI (``make soak``). Writes ``bench/results/soak.json``.

    python -m bench.soak [--minutes 30] [--cameras 3] [--cluster]
    make soak                      # the same; SOAK_MINUTES, SOAK_CAMERAS override

Run it on a quiet machine with enough cores for the cameras at real time (on 2
shared cores one inference replica falls behind two 360p cameras, and a growing
backlog then says nothing about leaks). **Steady state** (:func:`steady_state`)
means, comparing the end with just after warm-up, for every process: RSS within
``RSS_RATIO`` (×1.10), open fds and threads within ``HANDLES_SLACK`` (+2), and
for every stage a backlog that did not grow (end ≤ after warm-up + 20 % + 10
messages). The run prints the verdict and exits 1 when it is not steady. Every store's
retention (``--store-window``, 5 min) ends inside the warm-up, so that stores which grow
by design are full before the comparison (:func:`store_window`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, bench_settings, write_result
from framepipe.core.topology import SCALED_STAGES
from framepipe.local.processes import Managed
from framepipe.local.supervisor import LocalSystem
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.scaling.jsz import fetch_lags

CLIP = ClipSpec(width=640, height=360, seconds=60.0, gop=30, bframes=2)


def store_window(seconds: float) -> dict[str, float]:
    """Stream, ledger and registry limits that fill up within ``seconds``.

    With the defaults (VIDEO an hour, OUTPUT and the camera registry a day, DETECTIONS
    a week) every store grows for the whole soak by design, and the nats-server's RSS
    with it; a soak must tell that from a leak. With every retention window ending
    inside the warm-up, the stores are full (old entries expire as new ones come) by
    the time the soak compares, so what still grows is a leak."""
    return {
        "video_max_age_s": seconds,
        "output_max_age_s": seconds,
        "detections_max_age_s": seconds,
        "ledger_ttl_s": seconds,
        "duplicate_window_s": min(seconds, 300.0),
    }


def proc_sample(pid: int) -> dict[str, int] | None:
    """RSS (KiB), open fds and threads of ``pid``; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "fds": fds,
        "threads": int(fields["Threads"].strip()),
    }


def sample(system: LocalSystem) -> dict[str, Any]:
    row: dict[str, Any] = {"t": time.time(), "procs": {}, "backlog": {}}
    for managed in system.processes:
        if managed.name.startswith("gateway-") or managed.process is None:
            continue
        got = proc_sample(managed.process.pid)
        if got is not None:
            row["procs"][managed.name] = got
    for index, node in enumerate(system.server.nodes if system.server else ()):
        if node.process is not None and (got := proc_sample(node.process.pid)) is not None:
            row["procs"][f"nats-{index}"] = got
    if system.monitor_url:
        try:
            nodes = tuple(system.server.monitor_urls) if system.server else ()
            lags = fetch_lags(system.monitor_url, SCALED_STAGES, nodes=nodes)
            row["backlog"] = {s: None if lag is None else lag.lag for s, lag in lags.items()}
        except Exception as exc:  # noqa: BLE001 - a missed sample is recorded, not fatal
            row["backlog"] = {"error": str(exc)}
    return row


RSS_RATIO = 1.10
HANDLES_SLACK = 2
BACKLOG_SLACK = (1.2, 10)


def steady_state(growth: dict[str, Any]) -> list[str]:
    """What grew past the steady-state bounds (see the module docstring); empty when steady."""
    grew = []
    for name, entry in growth.items():
        if name.startswith("backlog-"):
            factor, extra = BACKLOG_SLACK
            if entry["end"] > entry["after_warmup"] * factor + extra:
                grew.append(f"{name} {entry['after_warmup']:g} -> {entry['end']:g}")
            continue
        rss = entry.get("rss_kib")
        if rss and rss["ratio"] is not None and rss["ratio"] > RSS_RATIO:
            grew.append(f"{name} RSS x{rss['ratio']}")
        for metric in ("fds", "threads"):
            got = entry.get(metric)
            if got and got["end"] - got["after_warmup"] > HANDLES_SLACK:
                grew.append(f"{name} {metric} {got['after_warmup']:g} -> {got['end']:g}")
    return grew


def summarize(rows: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """Per process and metric: median after warm-up, median at the end, growth ratio."""
    start = max(1, int(len(rows) * warmup))
    early, late = rows[start : start + max(1, len(rows) // 5)], rows[-max(1, len(rows) // 5) :]
    out: dict[str, Any] = {}
    names = sorted({name for row in rows for name in row["procs"]})
    for name in names:
        entry: dict[str, Any] = {}
        for metric in ("rss_kib", "fds", "threads"):
            a = [r["procs"][name][metric] for r in early if name in r["procs"]]
            b = [r["procs"][name][metric] for r in late if name in r["procs"]]
            if a and b:
                first, last = statistics.median(a), statistics.median(b)
                entry[metric] = {
                    "after_warmup": first,
                    "end": last,
                    "ratio": round(last / first, 3) if first else None,
                }
        out[name] = entry
    for stage in SCALED_STAGES:
        a = [r["backlog"][stage] for r in early if r["backlog"].get(stage) is not None]
        b = [r["backlog"][stage] for r in late if r["backlog"].get(stage) is not None]
        if a and b:
            out[f"backlog-{stage}"] = {"after_warmup": statistics.median(a), "end": statistics.median(b)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=0.2)
    parser.add_argument("--cluster", action="store_true", help="run the 3-node NATS cluster")
    parser.add_argument(
        "--store-window",
        type=float,
        default=300.0,
        help="seconds the streams, the ledger and the camera registry keep entries (see STORE_WINDOW)",
    )
    args = parser.parse_args()
    if args.store_window >= args.minutes * 60 * args.warmup:
        parser.error("--store-window must end inside the warm-up (minutes x warmup x 60 s)")
    clip = RESULTS.parent.parent / ".cache" / "bench-media" / "soak_360p_60s.mp4"
    if not clip.is_file():
        make_clip(clip, CLIP)
    with tempfile.TemporaryDirectory(prefix="fp-soak-") as tmp:
        state = Path(tmp) / "state"
        settings = bench_settings(
            sink={"output_dir": str(Path(tmp) / "out")},
            local={"state_dir": str(state), "autoscale": False, "nats_cluster": 3 if args.cluster else 1},
            streams=store_window(args.store_window),
        )
        rows: list[dict[str, Any]] = []
        rounds: dict[str, int] = {}
        with LocalSystem(settings, state) as system:
            system.start()
            system.wait_ready()
            cameras: dict[str, Managed] = {}
            for i in range(args.cameras):
                cameras[f"soak{i}"] = system.add_camera(f"soak{i}-r0", str(clip), "realtime")
            deadline = time.monotonic() + args.minutes * 60
            next_sample = time.monotonic()
            while time.monotonic() < deadline:
                system.supervise()
                for camera, gateway in list(cameras.items()):
                    if not gateway.alive:  # clip ended: the camera plays again under a new name
                        rounds[camera] = rounds.get(camera, 0) + 1
                        cameras[camera] = system.add_camera(
                            f"{camera}-r{rounds[camera]}", str(clip), "realtime"
                        )
                if time.monotonic() >= next_sample:
                    rows.append(sample(system))
                    next_sample += args.interval
                time.sleep(0.5)
            restarts = {m.name: m.restarts for m in system.processes if m.restarts}
    growth = summarize(rows, args.warmup)
    grew = steady_state(growth)
    result = {
        "params": vars(args) | {"clip": f"{CLIP.width}x{CLIP.height} {CLIP.seconds:.0f}s gop {CLIP.gop}"},
        "samples": rows,
        "summary": {"growth": growth, "replays": rounds, "restarts": restarts, "grew": grew},
    }
    write_result(
        result,
        RESULTS / "soak.json",
        "python -m bench.soak "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if not isinstance(v, bool))
        + (" --cluster" if args.cluster else ""),
    )
    if grew:
        raise SystemExit(f"soak: not steady after warm-up: {'; '.join(grew)}")
    print("soak: steady after warm-up (RSS, fds, threads and backlogs within bounds)")


if __name__ == "__main__":
    main()
