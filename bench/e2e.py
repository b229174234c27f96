"""End to end: the full pipeline over JetStream vs an in-process monolith.

Both do the same work on the same GOPs: decode → letterbox → BlazeFace →
draw → libx264 segment. The monolith runs it in one process, decoding each GOP
once. The pipeline runs every stage as its own process over a real nats-server
(the encoder decodes the GOP a second time, at full resolution, by design).
The ratio pipeline_fps / monolith_fps is measured in the same run on the same
machine.

Then, on the same running pipeline, cameras playing the clip at real-time
30 fps are added trial by trial (1, 2, …): a trial is sustained when every GOP
arrives and the per-GOP glass-to-output latency does not climb by a GOP's
duration or more over the clip (a growing backlog shows as climbing latency; the
consumer lag is sampled too). ``summary.realtime_cameras_sustained`` is the
largest sustained count. Writes ``bench/results/e2e.json`` and ``e2e.png``.

    python -m bench.e2e [--quick] [--cameras N] [--seconds S] [--max-cameras M]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
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
)
from bench.latency import RealtimePipeline
from framepipe.media.sample import ClipSpec

__all__ = ["load_gops", "main", "monolith", "pipeline", "sustained"]


def pipeline(rt: RealtimePipeline, source: Path, cameras: int) -> dict[str, Any]:
    """All stages as processes over a real nats-server; N cameras at max speed."""
    system = rt.system
    names = [f"fast{i}" for i in range(cameras)]
    started = time.perf_counter()
    gateways = [system.add_camera(name, str(source), "fast") for name in names]
    results = [system.wait_for_camera(name, gw) for name, gw in zip(names, gateways, strict=True)]
    elapsed = time.perf_counter() - started
    out = Path(rt.settings.sink.output_dir)
    frames = sum(len((out / name / "detections.jsonl").read_text().splitlines()) for name in names)
    stage_ms: dict[str, list[float]] = {}
    for event in gop_done_events(sorted((rt.workdir / "state" / "logs").glob("*.log"))):
        if event.get("camera") in names:
            stage_ms.setdefault(event.get("stage", "?"), []).append(event["duration_ms"])
    return {
        "cameras": cameras,
        "complete": all(r.complete for r in results),
        "frames": frames,
        "seconds": elapsed,
        "fps": frames / elapsed,
        "stage_mean_ms": {k: round(float(np.mean(v)), 1) for k, v in sorted(stage_ms.items())},
    }


def sustained(rt: RealtimePipeline, source: Path, spec: ClipSpec, max_cameras: int) -> list[dict[str, Any]]:
    """Real-time cameras, one more per trial, until the backlog grows (or ``max_cameras``)."""
    trials = []
    for cameras in range(1, max_cameras + 1):
        trial = rt.trial(source, cameras, f"rt{cameras}", spec.gop / spec.fps)
        trials.append(trial)
        if not trial["sustained"]:
            break
    return trials


def plot(result: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    s = result["summary"]
    a.bar(["monolith", "pipeline"], [s["monolith_fps"], s["pipeline_fps"]])
    a.set_ylabel("frames/s")
    a.set_title(f"ratio {s['ratio_pipeline_over_monolith']}")
    for trial in result["realtime"]:
        lag = trial["samples"]["lag"]
        b.plot([x["t_s"] for x in lag], [x["total"] for x in lag], label=f"{trial['cameras']} cam")
    b.set_xlabel("s")
    b.set_ylabel("consumer lag at real time (messages)")
    if result["realtime"]:
        b.legend(fontsize=7)
    return save_figure(plt, fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="360p, 6 s clip, up to 2 real-time cameras")
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--resolution", default="720p")
    parser.add_argument("--gop", type=int, default=30, help="GOP length in frames")
    parser.add_argument(
        "--max-cameras", type=int, default=4, help="real-time trials up to this many (0: none)"
    )
    parser.add_argument("--rt-seconds", type=float, default=10.0, help="clip length of the real-time trials")
    parser.add_argument("--out", type=Path, default=RESULTS / "e2e.json")
    args = parser.parse_args(argv)
    if args.quick:
        # A short run mostly measures pipeline fill (a GOP's trip through four stages);
        # 2 cameras × 12 GOPs amortise it.
        args.cameras, args.seconds, args.resolution, args.max_cameras = 2, 6.0, "360p", 2
        args.gop, args.rt_seconds = 15, 6.0
    spec = ClipSpec.named(args.resolution, gop=args.gop, seconds=args.seconds)
    settings = bench_settings()
    source = clip(spec)
    gops = load_gops(source)
    baseline = monolith(gops * args.cameras, settings)
    with tempfile.TemporaryDirectory(prefix="fp-bench-") as tmp, RealtimePipeline(settings, Path(tmp)) as rt:
        distributed = pipeline(rt, source, args.cameras)
        rt_spec = ClipSpec.named(args.resolution, gop=args.gop, seconds=args.rt_seconds)
        trials = sustained(rt, clip(rt_spec), rt_spec, args.max_cameras)
    kept = [t["cameras"] for t in trials if t["sustained"]]
    result: dict[str, Any] = {
        "benchmark": "e2e",
        "params": {
            "cameras": args.cameras,
            "clip": spec.__dict__,
            "gops_per_camera": len(gops),
            "max_cameras": args.max_cameras,
            "realtime_clip_seconds": args.rt_seconds,
        },
        "monolith": baseline,
        "pipeline": distributed,
        "realtime": trials,
        "summary": {
            "monolith_fps": round(baseline["fps"], 2),
            "pipeline_fps": round(distributed["fps"], 2),
            "ratio_pipeline_over_monolith": ratio(distributed["fps"], baseline["fps"]),
            "pipeline_complete": distributed["complete"],
            "realtime_cameras_sustained": max(kept, default=0),
            "realtime_cameras_tried": len(trials),
            "realtime_cameras_by_monolith_fps": round(baseline["fps"] / spec.fps, 2),
        },
    }
    command = "python -m bench.e2e" + (" --quick" if args.quick else "")
    return finish(result, args.out, command, plot)


if __name__ == "__main__":
    main()
