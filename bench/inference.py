"""Inference: bare ONNX Runtime vs the inference stage through JetStream, plus a batch sweep.

Both sides run the same BlazeFace model on the same frame batches (FrameBatch
messages of ``--frames-per-message`` letterboxed frames). "bare" calls the
detector (ONNX Runtime + BlazeFace decode) in this process; "stage" publishes
the messages to FRAMES on a real nats-server and times a real ``framepipe
stage inference`` process from its first DETECTIONS message to its last
(process start-up and model load excluded). The sweep runs the bare backend
at batch 1/4/8/16/32. With a GPU and tensorrt it adds TensorRT vs ORT CUDA.
Writes ``bench/results/inference.json`` (and ``inference.png`` with matplotlib).

    python -m bench.inference [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine
from framepipe.pipeline import bus, messages
from framepipe.pipeline.config import Names, Settings
from framepipe.pipeline.messages import FrameBatch
from framepipe.pipeline.natsserver import NatsServer
from framepipe.pipeline.supervisor import setup_topology
from framepipe.stages.inference.backends import OnnxRuntimeBackend
from framepipe.stages.inference.blazeface import BlazeFaceDecoder, preprocess
from framepipe.stages.inference.stage import FaceDetector

REPO = Path(__file__).resolve().parents[1]
SWEEP = (1, 4, 8, 16, 32)


def make_frames(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Astronaut (a face) letterboxed to ``size`` with per-frame noise, so outputs differ."""
    from skimage import data, transform

    image = transform.resize(data.astronaut(), (size, size), preserve_range=True).astype(np.uint8)
    rng = np.random.default_rng(seed)
    noise = rng.integers(-8, 9, size=(count, size, size, 3))
    return np.clip(image[None].astype(np.int16) + noise, 0, 255).astype(np.uint8)


def make_messages(frames: np.ndarray, per_message: int, cameras: int) -> list[FrameBatch]:
    out: list[FrameBatch] = []
    size = frames.shape[1]
    for index, start in enumerate(range(0, len(frames), per_message)):
        chunk = frames[start : start + per_message]
        n = len(chunk)
        out.append(
            FrameBatch(
                camera=f"cam{index % cameras}",
                gop=index // cameras,
                part=0,
                parts=1,
                video_seq=index + 1,
                frame_indices=tuple(range(n)),
                pts=tuple(range(n)),
                source_size=(size, size),
                scale=1.0,
                pad=(0, 0),
                shape=(n, size, size, 3),
                pixels=chunk.tobytes(),
                gop_frames=n,
            )
        )
    return out


def detector(settings: Settings, max_batch: int) -> FaceDetector:
    cfg = settings.inference
    return FaceDetector(
        OnnxRuntimeBackend(cfg.model_path, cfg.intra_op_threads),
        BlazeFaceDecoder(cfg.model, cfg.score_threshold, cfg.nms_iou),
        max_batch,
    )


def bare(settings: Settings, msgs: list[FrameBatch], repeats: int) -> dict[str, Any]:
    """Same work as the stage's model path: per message, detect its frames."""
    det = detector(settings, settings.inference.max_batch)
    arrays = [np.frombuffer(m.pixels, dtype=np.uint8).reshape(m.shape) for m in msgs]
    det.detect(arrays[0])  # warm-up
    samples = []
    frames = sum(len(a) for a in arrays)
    for _ in range(repeats):
        started = time.perf_counter()
        for a in arrays:
            det.detect(a)
        samples.append(frames / (time.perf_counter() - started))
    det.backend.close()
    return {"frames": frames, "fps_samples": samples, "fps": float(np.median(samples))}


def _images_per_second(backend: Any, frames: np.ndarray, batch: int, repeats: int) -> list[float]:
    """Warm up once, then time ``repeats`` passes over the frames in ``batch``-sized calls."""
    usable = (len(frames) // batch) * batch
    chunks = [preprocess(frames[i : i + batch]) for i in range(0, usable, batch)]
    backend.run(chunks[0])
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for chunk in chunks:
            backend.run(chunk)
        samples.append(usable / (time.perf_counter() - started))
    return samples


def sweep(settings: Settings, frames: np.ndarray, repeats: int) -> dict[str, Any]:
    """Model call only (pre-processing + ORT run) at each batch size, images/s."""
    cfg = settings.inference
    backend = OnnxRuntimeBackend(cfg.model_path, cfg.intra_op_threads)
    out: dict[str, Any] = {}
    for batch in SWEEP:
        samples = _images_per_second(backend, frames, batch, repeats)
        out[str(batch)] = {"fps_samples": samples, "fps": float(np.median(samples))}
    backend.close()
    return out


def gpu(settings: Settings, frames: np.ndarray, repeats: int, workdir: Path) -> dict[str, Any]:
    """TensorRT FP16 vs ONNX Runtime CUDA at each batch size; skipped without a GPU."""
    from framepipe.stages.inference.tensorrt import TensorRTBackend, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    cfg = settings.inference
    backends: dict[str, Any] = {
        "tensorrt_fp16": TensorRTBackend(cfg.model_path, workdir / "engines", max_batch=max(SWEEP)),
        "onnxruntime_cuda": OnnxRuntimeBackend(cfg.model_path, cfg.intra_op_threads, use_cuda=True),
    }
    out: dict[str, Any] = {}
    for name, backend in backends.items():
        out[name] = {}
        for batch in SWEEP:
            samples = _images_per_second(backend, frames, batch, repeats)
            out[name][str(batch)] = float(np.median(samples))
        backend.close()
    return out


async def _publish_and_collect(
    settings: Settings, msgs: list[FrameBatch], proc: subprocess.Popen[bytes], timeout_s: float
) -> dict[str, Any]:
    nc = await bus.connect(settings, "bench-inference")
    js = nc.jetstream(timeout=10.0)
    received: list[tuple[float, int]] = []
    done = asyncio.Event()
    want = len(msgs)

    async def on_detections(msg: Any) -> None:
        body = messages.decode(msg.headers or {}, msg.data, messages.DetectionsMessage)
        assert isinstance(body, messages.DetectionsMessage)
        received.append((time.perf_counter(), len(body.frames)))
        if len(received) >= want:
            done.set()

    sub = await nc.subscribe(Names.wildcard(Names.DETECTIONS), cb=on_detections)
    for m in msgs:
        headers, body = messages.encode(m)
        await bus.publish(
            js, Names.subject(Names.FRAMES, m.camera), body, headers, f"bench:{m.camera}:{m.gop}"
        )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout_s)
    await sub.unsubscribe()
    await nc.close()
    if len(received) < 2:
        raise RuntimeError(f"stage produced {len(received)} of {want} detections (exit {proc.poll()})")
    received.sort()
    frames_after_first = sum(n for _, n in received[1:])
    elapsed = received[-1][0] - received[0][0]
    return {
        "messages": len(received),
        "complete": len(received) == want,
        "frames": sum(n for _, n in received),
        "seconds_first_to_last": elapsed,
        "fps": frames_after_first / elapsed,
    }


def stage(settings: Settings, msgs: list[FrameBatch], workdir: Path, max_batch: int) -> dict[str, Any]:
    server = NatsServer(store_dir=workdir / f"js-{max_batch}").start(log_file=workdir / "nats.log")
    try:
        settings = settings.replace(nats={"url": server.url})
        asyncio.run(setup_topology(settings))
        env = dict(os.environ)
        env.update(
            {
                "FRAMEPIPE_NATS__URL": server.url,
                "FRAMEPIPE_INFERENCE__MODELS_DIR": settings.inference.models_dir,
                "FRAMEPIPE_INFERENCE__MAX_BATCH": str(max_batch),
                "FRAMEPIPE_INFERENCE__METRICS_PORT": "-1",
            }
        )
        log = (workdir / f"stage-{max_batch}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "framepipe", "stage", "inference"], env=env, stdout=log, stderr=log
        )
        try:
            return asyncio.run(_publish_and_collect(settings, msgs, proc, timeout_s=120))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    finally:
        server.stop()


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    s = result["summary"]
    a.bar(["bare ORT", "stage via JetStream"], [s["bare_fps"], s["stage_fps"]])
    a.set_ylabel("frames/s")
    a.set_title(f"ratio {s['ratio_stage_over_bare']}")
    sizes = list(result["sweep"])
    b.plot([int(x) for x in sizes], [result["sweep"][x]["fps"] for x in sizes], marker="o")
    b.set_xscale("log", base=2)
    b.set_xlabel("batch")
    b.set_ylabel("images/s (ORT CPU)")
    fig.tight_layout()
    fig.savefig(path)
    return True


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats (< 2 min)")
    parser.add_argument("--frames", type=int, default=1920)
    parser.add_argument("--frames-per-message", type=int, default=32)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "inference.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.repeats = 512, 2
    settings = Settings().replace(inference={"models_dir": str(REPO / ".cache" / "models")})
    frames = make_frames(args.frames, settings.inference.input_size)
    msgs = make_messages(frames, args.frames_per_message, args.cameras)
    baseline = bare(settings, msgs, args.repeats)
    swept = sweep(settings, frames[: min(len(frames), 256)], args.repeats)
    with tempfile.TemporaryDirectory(prefix="fp-bench-inf-") as tmp:
        staged = stage(settings, msgs, Path(tmp), settings.inference.max_batch)
        on_gpu = gpu(settings, frames[: min(len(frames), 256)], args.repeats, Path(tmp))
    result: dict[str, Any] = {
        "benchmark": "inference",
        "machine": machine(),
        "params": {
            "frames": args.frames,
            "frames_per_message": args.frames_per_message,
            "cameras": args.cameras,
            "repeats": args.repeats,
            "model": settings.inference.model,
            "max_batch": settings.inference.max_batch,
            "intra_op_threads": settings.inference.intra_op_threads,
        },
        "bare": baseline,
        "stage": staged,
        "sweep": swept,
        "gpu": on_gpu,
        "summary": {
            "bare_fps": round(baseline["fps"], 1),
            "stage_fps": round(staged["fps"], 1),
            "ratio_stage_over_bare": round(staged["fps"] / baseline["fps"], 3),
            "stage_complete": staged["complete"],
            "sweep_fps": {k: round(v["fps"], 1) for k, v in swept.items()},
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    if plot(result, args.out.with_suffix(".png")):
        print(f"wrote {args.out.with_suffix('.png')}")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
