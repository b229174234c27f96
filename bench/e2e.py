"""End to end: the full pipeline over JetStream vs an in-process monolith.

Both do the same work on the same GOPs: decode → letterbox → BlazeFace →
draw → libx264 segment. The monolith runs it in one process, decoding each GOP
once. The pipeline runs every stage as its own process over a real nats-server
(the encoder decodes the GOP a second time, at full resolution, by design).
The ratio pipeline_fps / monolith_fps is measured in the same run on the same
machine. Writes ``bench/results/e2e.json``.

    python -m bench.e2e [--quick] [--cameras N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from bench.common import machine
from framepipe.media.annotate import draw_detections
from framepipe.media.codec import decode_gop, encode_segment
from framepipe.media.gop import GopCutter
from framepipe.media.letterbox import Letterbox
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.pipeline.config import Settings
from framepipe.pipeline.messages import Detection, GopMessage
from framepipe.pipeline.natsserver import NatsServer
from framepipe.pipeline.supervisor import LocalSystem
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
from framepipe.stages.inference.backends import OnnxRuntimeBackend
from framepipe.stages.inference.blazeface import BlazeFaceDecoder
from framepipe.stages.inference.stage import FaceDetector

REPO = Path(__file__).resolve().parents[1]


def load_gops(path: Path, camera: str = "bench") -> list[GopMessage]:
    container, stream = open_input(str(path))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base)
        return [gop_message(camera, g, params) for g in cutter.cut(iter_packets(container, stream))]


def monolith(gops: list[GopMessage], settings: Settings) -> dict[str, Any]:
    """Decode once, detect, draw, encode — all in this process."""
    cfg = settings.inference
    detector = FaceDetector(
        OnnxRuntimeBackend(cfg.model_path, cfg.intra_op_threads),
        BlazeFaceDecoder(cfg.model, cfg.score_threshold, cfg.nms_iou),
        cfg.max_batch,
    )
    frames_done = 0
    started = time.perf_counter()
    per_gop: list[float] = []
    for gop in gops:
        t0 = time.perf_counter()
        frames = list(decode_gop(gop))
        letterbox = Letterbox(cfg.input_size, gop.width, gop.height)
        tensors = np.stack([letterbox.apply(f) for f in frames])
        found = detector.detect(tensors)
        annotated: list[av.VideoFrame] = []
        for frame, dets in zip(frames, found, strict=True):
            if dets:
                image = frame.to_ndarray(format="rgb24")
                draw_detections(image, [Detection(letterbox.to_source(d.box), d.score) for d in dets])
                drawn = av.VideoFrame.from_ndarray(image, format="rgb24")
                drawn.pts = frame.pts
                frame = drawn
            annotated.append(frame)
        enc = settings.encoder
        codec = "libx264" if enc.codec == "auto" else enc.codec
        encode_segment(annotated, Fraction(*gop.time_base), codec=codec, preset=enc.preset, crf=enc.crf)
        frames_done += len(frames)
        per_gop.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {"frames": frames_done, "seconds": elapsed, "fps": frames_done / elapsed, "per_gop_s": per_gop}


def pipeline(clip: Path, cameras: int, settings: Settings, workdir: Path) -> dict[str, Any]:
    """All stages as processes over a real nats-server; N cameras at max speed."""
    server = NatsServer(store_dir=workdir / "jetstream").start(log_file=workdir / "nats.log")
    try:
        settings = settings.replace(
            nats={"url": server.url},
            sink={"output_dir": str(workdir / "out")},
            local={"state_dir": str(workdir / "state")},
        )
        with LocalSystem(settings, workdir / "state", embedded_nats=False) as system:
            system.start()
            system.wait_ready()
            started = time.perf_counter()
            gateways = [system.add_camera(f"cam{i}", str(clip), "fast") for i in range(cameras)]
            results = [system.wait_for_camera(f"cam{i}", gw) for i, gw in enumerate(gateways)]
            elapsed = time.perf_counter() - started
        frames = 0
        for i in range(cameras):
            lines = (workdir / "out" / f"cam{i}" / "detections.jsonl").read_text().splitlines()
            frames += len(lines)
        stage_ms: dict[str, list[float]] = {}
        for log in (workdir / "state" / "logs").glob("*.log"):
            for line in log.read_text().splitlines():
                if '"gop.done"' in line:
                    event = json.loads(line)
                    stage_ms.setdefault(event.get("stage", "?"), []).append(event["duration_ms"])
        return {
            "cameras": cameras,
            "complete": all(r.complete for r in results),
            "frames": frames,
            "seconds": elapsed,
            "fps": frames / elapsed,
            "stage_mean_ms": {k: round(float(np.mean(v)), 1) for k, v in sorted(stage_ms.items())},
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small clip, one camera")
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "e2e.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.cameras, args.seconds, args.width, args.height = 1, 2.0, 640, 360
    spec = ClipSpec(width=args.width, height=args.height, seconds=args.seconds, gop=30)
    settings = Settings().replace(inference={"models_dir": str(REPO / ".cache" / "models")})
    with tempfile.TemporaryDirectory(prefix="fp-bench-") as tmp:
        work = Path(tmp)
        clip = make_clip(work / "clip.mp4", spec)
        gops = load_gops(clip)
        baseline = monolith(gops * args.cameras, settings)
        distributed = pipeline(clip, args.cameras, settings, work)
    result = {
        "benchmark": "e2e",
        "machine": machine(),
        "params": {"cameras": args.cameras, "clip": spec.__dict__, "gops_per_camera": len(gops)},
        "monolith": baseline,
        "pipeline": distributed,
        "summary": {
            "monolith_fps": round(baseline["fps"], 2),
            "pipeline_fps": round(distributed["fps"], 2),
            "ratio_pipeline_over_monolith": round(distributed["fps"] / baseline["fps"], 3),
            "pipeline_complete": distributed["complete"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
