"""On-demand output: how long after a viewer appears its first annotated live segment is served.

One real-time camera in ``[output] mode = "on-demand"`` on a running pipeline (every stage a
process on a real nats-server, ``framepipe web``, the local autoscaler polling once a second).
A viewer is an HLS client reloading ``/<camera>/live.m3u8`` every 0.25 s; a trial measures
from its first request to the first ``live_<gop>.ts`` in the playlist, then the viewer leaves
and the bench waits for its ``FP_VIEWERS`` key to expire.

- **cold**: the encoder is at 0 replicas when the viewer arrives; the autoscaler sees the
  first live GOP's ENCODE item, starts an encoder process, which loads and pulls it;
- **warm** (the baseline, same run, trials interleaved with the cold ones): one encoder
  replica is already running (autoscaling off), so only the routing and the encode remain.

cold / warm says what sleeping at zero costs a new viewer; cold - warm is roughly the
autoscaler's poll plus an encoder process's start. Either includes waiting for the GOP being
captured to finish (a viewer arrives mid-GOP). Not part of CI; writes
``bench/results/on_demand.json``.

    python -m bench.on_demand [--trials 3] [--gop-s 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import RESULTS, bench_settings, clip, ratio, stats, write_result
from framepipe.core import bus
from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.settings import Settings
from framepipe.core.topology import Names, process_kind
from framepipe.local.natsserver import NatsServer
from framepipe.local.supervisor import LocalSystem
from framepipe.media.sample import ClipSpec

LIVE_URI = re.compile(r"^live_(\d+)\.ts$", re.M)
VIEWER_TTL_S = 2.0
CAMERA = "ondemand"


def _scaling() -> StageScaling:
    """Second-scale polling and cooldown (KEDA's defaults are 10 s and 300 s: see the note)."""
    fast = ScalingSettings(
        min_replicas=1, max_replicas=1, polling_interval_s=1, cooldown_period_s=2, fallback_replicas=1
    )
    return StageScaling(decoder=fast, inference=fast, analysis=fast, encoder=fast)


async def _encoder_pulling(settings: Settings) -> bool:
    nc = await bus.connect(settings, "bench-on-demand", retry_initial=False)
    try:
        info = await nc.jetstream(timeout=10.0).consumer_info(Names.ENCODE, Names.ENCODER)
        return bool(info.num_waiting)
    finally:
        await nc.close()


def _encoders_alive(system: LocalSystem) -> bool:
    """Any encoder process still running (a draining one may still take the first live GOP)."""
    return any(m.alive for m in system.processes if process_kind(m.name) == Names.ENCODER)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def _wait(system: LocalSystem, done: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        system.supervise()
        time.sleep(0.1)


def _viewer(system: LocalSystem, web: str, timeout: float = 60.0) -> float:
    """Seconds from a new viewer's first request to the first live segment listed."""
    start = time.monotonic()
    while not LIVE_URI.search(_get(web + f"{CAMERA}/live.m3u8")):
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"no live segment within {timeout:.0f} s of a viewer")
        system.supervise()
        time.sleep(0.25)
    return time.monotonic() - start


def _leave(system: LocalSystem) -> None:
    """Let the viewer's key expire and its live run end (no live GOP for 6 s) before the next
    trial: a request now would itself count as a viewer."""
    until = time.monotonic() + VIEWER_TTL_S + 6.0 + 3.0
    while time.monotonic() < until:
        system.supervise()
        time.sleep(0.1)


def run(trials: int, gop_s: float) -> dict[str, Any]:
    fps = 15
    seconds = 20 + trials * 30.0  # enough real-time video for every trial
    source = clip(ClipSpec(width=640, height=360, fps=fps, seconds=seconds, gop=round(fps * gop_s)))
    with tempfile.TemporaryDirectory(prefix="fp-ondemand-") as tmp:
        workdir = Path(tmp)
        server = NatsServer(store_dir=workdir / "jetstream").start(log_file=workdir / "nats.log")
        settings = bench_settings(
            nats={"url": server.url},
            output={"mode": "on-demand"},
            streams={"viewer_ttl_s": VIEWER_TTL_S},
            encoder={"in_flight": 1, "fetch_batch": 1},
            sink={"output_dir": str(workdir / "out")},
            local={"state_dir": str(workdir / "state"), "max_replicas": 1},
        )
        system = LocalSystem(settings, workdir / "state", embedded_nats=False, monitor_url=server.monitor_url)
        cold: list[float] = []
        warm: list[float] = []
        try:
            system.start({Names.ENCODER: 1})
            system.wait_ready()
            web = system.start_web()
            system.add_camera(CAMERA, str(source), "realtime")
            _wait(system, lambda: (workdir / "out" / CAMERA / "seg_000001.ts").is_file(), 60, "first GOPs")
            for _ in range(trials):
                system.enable_autoscaling(_scaling())
                _wait(system, lambda: not _encoders_alive(system), 30, "encoder at 0, drained and gone")
                cold.append(_viewer(system, web))
                _leave(system)
                system.autoscaler = None  # warm: one encoder replica stays up
                system.scale(Names.ENCODER, 1)
                # the encoder replica connected and pulling before the viewer comes
                _wait(system, lambda: asyncio.run(_encoder_pulling(settings)), 60, "encoder pulling")
                warm.append(_viewer(system, web))
                _leave(system)
        finally:
            system.stop()
            server.stop()
    cold_s, warm_s = stats(cold), stats(warm)
    return {
        "gop_s": gop_s,
        "viewer_ttl_s": VIEWER_TTL_S,
        "autoscaler_polling_s": 1,
        "cold_s": cold,
        "warm_s": warm,
        "summary": {
            "first_live_segment_cold_s": cold_s,
            "first_live_segment_warm_s": warm_s,
            "cold_over_warm": ratio(cold_s["p50"], warm_s["p50"]),
            "cold_minus_warm_s": round(cold_s["p50"] - warm_s["p50"], 2),
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--gop-s", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = run(args.trials, args.gop_s)
    return write_result(
        result, RESULTS / "on_demand.json", " ".join(["python -m bench.on_demand", *sys.argv[1:]])
    )


if __name__ == "__main__":
    main()
