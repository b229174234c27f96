"""Scaling: throughput of 1, 2, … replicas of each stage, and efficiency per replica.

For each scaled stage (decoder, inference, analysis, encoder), N real stage
processes consume one backlog of the same work (GOPs of a generated 720p30 clip;
frame batches made exactly as the decoder makes them; ANALYZE and ENCODE items
with the astronaut's true face box in every frame) from a fresh nats-server.
The clock runs from the first publish (every replica already pulling, model
loaded) to the last output in the stage's output stream.
Efficiency(N) = throughput(N) / (N × throughput(1)), both measured in this run.
N goes up to the number of cores (``--max-replicas``). The decoder and encoder
(and analysis) fetch one GOP at a time here (``fetch_batch=1``; a replica still holds up to its
``in_flight`` of 2) so that the last few GOPs are not stuck in one replica while
the other idles; the inference stage keeps its default, because it batches
frames across the messages in flight. Analysis embeds ``analysis.crops_per_track``
crops of the one face track per GOP (one face in view: the cost of a GOP with a
person; a GOP without faces costs it one publish, so this is its busy rate).

``summary.per_replica.<stage>.gops_per_s`` (one replica, at ``params.gop_frames``
frames per GOP) is what ``framepipe scale tune`` reads. Writes
``bench/results/scaling.json`` and ``scaling.png``.

    python -m bench.scaling [--quick] [--max-replicas N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.baselines import frame_batches
from bench.codec_stages import decoder_parts, detections, gop_inputs, outgoing
from bench.common import (
    RESULTS,
    Outgoing,
    StageHarness,
    bench_settings,
    clip,
    finish,
    load_gops,
    pyplot,
    ratio,
    save_figure,
)
from framepipe.core.messages import EncodeItem, GopMessage
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.media.sample import ClipSpec

STAGES = (Names.DECODER, Names.INFERENCE, Names.ANALYSIS, Names.ENCODER)


def backlog(spec: ClipSpec, cameras: int) -> list[GopMessage]:
    """The clip's GOPs once per camera (distinct names, so nothing is de-duplicated)."""
    path = clip(spec)
    return [g for i in range(cameras) for g in load_gops(path, camera=f"cam{i}")]


def run_stage(
    stage: str, replicas: int, gops: list[GopMessage], spec: ClipSpec, settings: Settings, workdir: Path
) -> dict[str, Any]:
    frames = sum(len(g.packets) for g in gops)
    with StageHarness(workdir / f"{stage}-{replicas}", settings) as harness:
        inputs: list[Outgoing]
        if stage == Names.DECODER:
            inputs, out_stream, expect = gop_inputs(gops), Names.FRAMES, decoder_parts(gops, settings)
        elif stage == Names.INFERENCE:
            batches = frame_batches(gops, settings)
            inputs = [
                outgoing(b, Names.FRAMES, Names.msg_id(b.camera, b.gop, Names.DECODER, b.part))
                for b in batches
            ]
            out_stream, expect = Names.DETECTIONS, len(batches)
        else:
            # Both re-read the GOP from VIDEO: publish it outside the timed window.
            seqs = harness.publish(gop_inputs(gops))
            into, out_stream = (
                (Names.ANALYZE, Names.ENCODE) if stage == Names.ANALYSIS else (Names.ENCODE, Names.OUTPUT)
            )
            inputs = [
                outgoing(
                    EncodeItem(camera=g.camera, gop=g.gop, video_seq=seq, frames=detections(spec, g)),
                    into,
                    Names.msg_id(g.camera, g.gop, Names.INFERENCE),
                )
                for g, seq in zip(gops, seqs, strict=True)
            ]
            expect = len(gops)
        run = harness.run(stage, replicas, inputs, out_stream, expect)
    return {
        "replicas": replicas,
        "complete": run.complete,
        "gops": len(gops),
        "frames": frames,
        "seconds": run.seconds,
        "gops_per_s": len(gops) / run.seconds,
        "frames_per_s": frames / run.seconds,
        "stage_cpu_s": round(run.cpu_s, 3),
        "nats_server_cpu_s": round(run.server_cpu_s, 3),
    }


def plot(result: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for stage, runs in result["runs"].items():
        n = [r["replicas"] for r in runs]
        a.plot(n, [r["gops_per_s"] for r in runs], marker="o", label=stage)
        b.plot(n, [result["summary"]["efficiency"][stage][str(k)] for k in n], marker="o", label=stage)
    a.set_xlabel("replicas")
    a.set_ylabel("GOPs/s")
    a.legend()
    b.set_xlabel("replicas")
    b.set_ylabel("efficiency per replica")
    b.set_ylim(0, 1.2)
    return save_figure(plt, fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one camera's backlog (8 GOPs)")
    parser.add_argument("--resolution", default="720p")
    parser.add_argument("--gop", type=int, default=30, help="GOP length in frames")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length")
    parser.add_argument("--cameras", type=int, default=3, help="copies of the clip in the backlog")
    parser.add_argument("--max-replicas", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.cameras = 1
    settings = bench_settings(
        decoder={"fetch_batch": 1}, analysis={"fetch_batch": 1}, encoder={"fetch_batch": 1}
    )
    spec = ClipSpec.named(args.resolution, gop=args.gop, seconds=args.seconds)
    gops = backlog(spec, args.cameras)
    stages = [s for s in args.stages.split(",") if s]
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="fp-bench-scaling-") as tmp:
        for stage in stages:
            runs[stage] = [
                run_stage(stage, n, gops, spec, settings, Path(tmp)) for n in range(1, args.max_replicas + 1)
            ]
    per_replica = {
        stage: {"gops_per_s": round(r[0]["gops_per_s"], 3), "frames_per_s": round(r[0]["frames_per_s"], 2)}
        for stage, r in runs.items()
    }
    efficiency = {
        stage: {str(x["replicas"]): ratio(x["gops_per_s"], x["replicas"] * r[0]["gops_per_s"]) for x in r}
        for stage, r in runs.items()
    }
    result: dict[str, Any] = {
        "benchmark": "scaling",
        "params": {
            "resolution": args.resolution,
            "width": spec.width,
            "height": spec.height,
            "gop_frames": args.gop,
            "fps": spec.fps,
            "gops_per_run": len(gops),
            "max_replicas": args.max_replicas,
            "fetch_batch": {s: settings.consumer(s).fetch_batch for s in STAGES},
            "inference_max_batch": settings.inference.max_batch,
        },
        "runs": runs,
        "summary": {
            "per_replica": per_replica,
            "efficiency": efficiency,
            "complete": all(x["complete"] for r in runs.values() for x in r),
        },
    }
    command = "python -m bench.scaling" + (" --quick" if args.quick else "")
    return finish(result, args.out, command, plot)


if __name__ == "__main__":
    main()
