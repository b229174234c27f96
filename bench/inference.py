"""Inference: bare ONNX Runtime vs the inference stage through JetStream, plus a batch sweep.

Both sides run the same BlazeFace model on the same frame batches (FrameBatch
messages of ``--frames-per-message`` letterboxed frames). "bare" calls the
detector (ONNX Runtime + BlazeFace decode) in this process; "stage" publishes
the messages to FRAMES on a real nats-server and times a real ``framepipe
stage inference`` process from its first DETECTIONS message to its last
(process start-up and model load excluded). Stage runs alternate with bare
passes (bare, stage, bare, …, bare); the headline ratio is the median over the
stage runs of each against the mean of the bare passes either side of it, so
drifting load on a shared machine hits both sides alike. The sweep runs the bare backend
at batch 1/4/8/16/32 (at the configured ONNX Runtime threads, and at 1 and all
cores to show where batching pays). With a GPU and tensorrt it adds TensorRT vs
ORT CUDA.

Where the stage's time goes: ``breakdown`` times each step of the stage's path
for one message in this process (msgpack decode, pre-processing, model,
post-processing, DETECTIONS encode); ``stage.cpu_ms_per_frame`` is the CPU the
stage process and nats-server spent per frame in the timed window, next to the
bare loop's, so contention on a shared machine does not hide the overhead.
Writes ``bench/results/inference.json`` and ``inference.png`` (matplotlib).

    python -m bench.inference [--quick] [--threads N]
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

from bench.common import interleaved, machine, save_figure
from framepipe.core import bus, messages, topology
from framepipe.core.bus import setup_topology
from framepipe.core.messages import Detection, DetectionsMessage, FrameBatch, FrameDetections
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.natsserver import NatsServer
from framepipe.media.letterbox import Letterbox
from framepipe.stages.inference.backends import OnnxRuntimeBackend, available_cpus, ort_threads
from framepipe.stages.inference.detectors import build_detector
from framepipe.stages.inference.detectors.blazeface import FaceDetector, preprocess

REPO = Path(__file__).resolve().parents[1]
SWEEP = (1, 4, 8, 16, 32)


def make_frames(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Astronaut (a face) letterboxed to ``size`` with per-frame noise, so outputs differ."""
    from skimage import data, transform

    astronaut = data.astronaut()  # type: ignore[no-untyped-call]
    resized = transform.resize(astronaut, (size, size), preserve_range=True)  # type: ignore[no-untyped-call]
    image = np.asarray(resized).astype(np.uint8)
    rng = np.random.default_rng(seed)
    noise = rng.integers(-8, 9, size=(count, size, size, 3))
    frames: np.ndarray = np.clip(image[None].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return frames


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
                time_base=(1, 15360),
            )
        )
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def detector(settings: Settings) -> FaceDetector:
    """The stage's own detector (threads, frames per model call), so both sides match."""
    built = build_detector(settings.inference)
    assert isinstance(built, FaceDetector)
    return built


def bare(settings: Settings, msgs: list[FrameBatch], repeats: int) -> dict[str, Any]:
    """Same work as the stage's model path: per message, detect its frames."""
    det = detector(settings)
    arrays = [np.frombuffer(m.pixels, dtype=np.uint8).reshape(m.shape) for m in msgs]
    det.detect(arrays[0])  # warm-up
    samples, cpu = [], []
    frames = sum(len(a) for a in arrays)
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        for a in arrays:
            det.detect(a)
        samples.append(frames / (time.perf_counter() - started))
        cpu.append(1000 * (time.process_time() - cpu_started) / frames)
    det.backend.close()
    return {
        "frames": frames,
        "fps_samples": samples,
        "fps": float(np.median(samples)),
        "cpu_ms_per_frame": float(np.median(cpu)),
    }


def breakdown(settings: Settings, msgs: list[FrameBatch], repeats: int) -> dict[str, float]:
    """Milliseconds per message of each step on the stage's path, timed in this process.

    The stage also does bus work this cannot see (fetch, publish/ack round trips,
    ledger compare-and-set, nats-server storing and delivering the frames): that
    is the rest of the stage's wall time per message.
    """
    det = detector(settings)
    wire = [messages.encode(m) for m in msgs]
    steps = ("msgpack_decode", "frombuffer", "preprocess", "model", "postprocess", "detections_encode")
    spent = dict.fromkeys(steps, 0.0)
    det.backend.run(preprocess(np.frombuffer(msgs[0].pixels, np.uint8).reshape(msgs[0].shape)[:1]))

    def timed(step: str, started: float) -> float:
        now = time.perf_counter()
        spent[step] += now - started
        return now

    for _ in range(repeats):
        for headers, body in wire:
            t = time.perf_counter()
            batch = messages.decode(headers, body, FrameBatch)
            t = timed("msgpack_decode", t)
            frames = np.frombuffer(batch.pixels, dtype=np.uint8).reshape(batch.shape)
            t = timed("frombuffer", t)
            found = []
            for start in range(0, len(frames), det.max_batch):
                x = preprocess(frames[start : start + det.max_batch])
                t = timed("preprocess", t)
                outputs = det.backend.run(x)
                t = timed("model", t)
                regressors = next(v for v in outputs.values() if v.shape[-1] == 16)
                scores = next(v for v in outputs.values() if v.shape[-1] == 1)
                found.extend(det.decoder.decode(regressors, scores))
                t = timed("postprocess", t)
            letterbox = Letterbox(frames.shape[1], *batch.source_size)
            per_frame = tuple(
                FrameDetections(i, p, tuple(Detection(letterbox.to_source(d.box), d.score) for d in dets))
                for i, p, dets in zip(batch.frame_indices, batch.pts, found, strict=True)
            )
            messages.encode(DetectionsMessage(batch.camera, batch.gop, 0, 1, per_frame, "bench"))
            timed("detections_encode", t)
    det.backend.close()
    count = repeats * len(wire)
    return {step: round(1000 * spent[step] / count, 3) for step in steps}


def _round_robin(
    backend: Any, frames: np.ndarray, batches: tuple[int, ...], repeats: int
) -> dict[int, list[float]]:
    """Images/s per batch size; repeats interleave the sizes so drifting load hits them alike."""
    # Short passes (one per batch size, in turn) and many of them: the median then
    # shrugs off the seconds when other work on the machine takes a core.
    width = max(batches)
    passes = max(1, len(frames) // width)
    chunks: dict[int, list[list[Any]]] = {}
    for batch in batches:
        chunks[batch] = [
            [preprocess(frames[p * width + i : p * width + i + batch]) for i in range(0, width, batch)]
            for p in range(passes)
        ]
        backend.run(chunks[batch][0][0])  # warm-up: ORT sizes its arena per shape
    samples: dict[int, list[float]] = {batch: [] for batch in batches}
    for _ in range(repeats):
        for p in range(passes):
            for batch in batches:
                started = time.perf_counter()
                for chunk in chunks[batch][p]:
                    backend.run(chunk)
                samples[batch].append(width / (time.perf_counter() - started))
    return samples


def _images_per_second(backend: Any, frames: np.ndarray, batch: int, repeats: int) -> list[float]:
    return _round_robin(backend, frames, (batch,), repeats)[batch]


def sweep(settings: Settings, frames: np.ndarray, repeats: int, threads: int | None = None) -> dict[str, Any]:
    """Model call only (pre-processing + ORT run) at each batch size, images/s."""
    cfg = settings.inference
    count = ort_threads(cfg.intra_op_threads, cfg.replicas) if threads is None else threads
    backend = OnnxRuntimeBackend(cfg.model_path, count, use_cuda=False)
    samples = _round_robin(backend, frames, SWEEP, repeats)
    backend.close()
    return {str(b): {"fps_samples": v, "fps": float(np.median(v))} for b, v in samples.items()}


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
    settings: Settings,
    msgs: list[FrameBatch],
    proc: subprocess.Popen[bytes],
    server_pid: int,
    timeout_s: float,
) -> dict[str, Any]:
    nc = await bus.connect(settings, "bench-inference")
    js = nc.jetstream(timeout=10.0)
    received: list[tuple[float, int]] = []
    cpu: list[tuple[float, float]] = []  # (stage, nats-server) CPU seconds at first and last
    done = asyncio.Event()
    want = len(msgs)

    async def on_detections(msg: Any) -> None:
        body = messages.decode(msg.headers or {}, msg.data, messages.DetectionsMessage)
        assert isinstance(body, messages.DetectionsMessage)
        received.append((time.perf_counter(), len(body.frames)))
        if len(received) in (1, want):
            cpu.append((cpu_seconds(proc.pid), cpu_seconds(server_pid)))
        if len(received) >= want:
            done.set()

    sub = await nc.subscribe(Names.wildcard(Names.DETECTIONS), cb=on_detections)
    # Publish once the stage pulls, so its start-up does not overlap the publishing.
    spec = topology.consumer_spec(Names.INFERENCE)
    deadline = time.monotonic() + 120
    while (await js.consumer_info(spec.stream, spec.durable)).num_waiting < 1:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the inference stage did not start (exit {proc.poll()})")
        await asyncio.sleep(0.1)
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
    result: dict[str, Any] = {
        "messages": len(received),
        "complete": len(received) == want,
        "frames": sum(n for _, n in received),
        "seconds_first_to_last": elapsed,
        "fps": frames_after_first / elapsed,
    }
    if len(cpu) == 2:
        result["cpu_ms_per_frame"] = {
            "stage": 1000 * (cpu[1][0] - cpu[0][0]) / frames_after_first,
            "nats_server": 1000 * (cpu[1][1] - cpu[0][1]) / frames_after_first,
        }
    return result


def stage(settings: Settings, msgs: list[FrameBatch], workdir: Path, max_batch: int) -> dict[str, Any]:
    """One stage run on its own nats-server and store under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
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
                "FRAMEPIPE_INFERENCE__INTRA_OP_THREADS": str(settings.inference.intra_op_threads),
                "FRAMEPIPE_INFERENCE__METRICS_PORT": "-1",
            }
        )
        log = (workdir / f"stage-{max_batch}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "framepipe", "stage", "inference"], env=env, stdout=log, stderr=log
        )
        try:
            assert server.process is not None
            return asyncio.run(_publish_and_collect(settings, msgs, proc, server.process.pid, timeout_s=120))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    finally:
        server.stop()


def plot(result: dict[str, Any], path: Path) -> bool:
    """Three panels: bare vs stage (the ratio), the batch sweep per thread count, and the
    stage's time per message split into the steps ``breakdown`` measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.5))
    s = result["summary"]
    a.bar(["bare ORT", "stage via JetStream"], [s["bare_fps"], s["stage_fps"]], color=["grey", "tab:blue"])
    a.axhline(0.9 * s["bare_fps"], color="tab:red", linestyle="--", linewidth=1, label="0.9 × bare (goal)")
    a.set_ylabel("frames/s")
    a.set_title(f"stage / bare = {s['ratio_stage_over_bare']} (median of paired runs)")
    a.legend(loc="lower right")
    for threads, table in result["sweep_by_threads"].items():
        sizes = sorted(int(x) for x in table)
        b.plot(sizes, [table[str(x)]["fps"] for x in sizes], marker="o", label=f"{threads} thread(s)")
    b.set_xscale("log", base=2)
    b.set_xlabel("frames per model call")
    b.set_ylabel("images/s (ONNX Runtime CPU)")
    b.set_title("batch sweep")
    b.legend()
    # CPU time rather than wall time: other work on a shared machine inflates wall
    # time of whichever side it overlaps, CPU per frame much less.
    steps = result["breakdown"]
    total = sum(steps.values()) or 1.0
    per_frame = s["bare_cpu_ms_per_frame"]
    bottom = 0.0
    palette = [plt.get_cmap("Pastel2")(i) for i in range(8)]
    for index, (step, ms) in enumerate(steps.items()):
        share = per_frame * ms / total
        c.bar(
            ["bare (in-process)"],
            [share],
            bottom=bottom,
            color=palette[index % len(palette)],
            label=f"{step} {100 * ms / total:.1f}%",
        )
        bottom += share
    stage_cpu = s["stage_cpu_ms_per_frame"]
    c.bar(
        ["stage process + nats-server"],
        [stage_cpu.get("stage", 0.0)],
        color="tab:blue",
        label="stage process",
    )
    c.bar(
        ["stage process + nats-server"],
        [stage_cpu.get("nats_server", 0.0)],
        bottom=[stage_cpu.get("stage", 0.0)],
        color="tab:orange",
        label="nats-server",
    )
    c.set_ylabel("CPU ms per frame")
    c.set_title("CPU per frame (bare split by step)")
    c.legend(fontsize=7, loc="lower right")
    return save_figure(plt, fig, path, dpi=100)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats (< 2 min)")
    parser.add_argument("--frames", type=int, default=1920)
    parser.add_argument("--frames-per-message", type=int, default=32)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="sweep and breakdown repeats")
    parser.add_argument(
        "--stage-runs",
        type=int,
        default=None,
        help="stage runs, each between two bare passes (default: repeats)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: the setting)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "inference.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.repeats = 512, 2
    if args.stage_runs is None:
        args.stage_runs = args.repeats
    if args.stage_runs < 1:
        parser.error("--stage-runs must be at least 1")
    settings = Settings().replace(inference={"models_dir": str(REPO / ".cache" / "models")})
    if args.threads is not None:
        settings = settings.replace(inference={"intra_op_threads": args.threads})
    threads = ort_threads(settings.inference.intra_op_threads, settings.inference.replicas)
    frames = make_frames(args.frames, settings.inference.input_size)
    msgs = make_messages(frames, args.frames_per_message, args.cameras)
    sweep_frames = frames[: min(len(frames), 256)]
    # bare, stage, bare, stage, …, bare: load on a shared machine drifts, so each stage
    # run is compared with the bare passes right before and after it (paired ratio).
    with tempfile.TemporaryDirectory(prefix="fp-bench-inf-") as tmp:
        passes, runs = interleaved(
            args.stage_runs,
            lambda: bare(settings, msgs, 1),
            lambda i: stage(settings, msgs, Path(tmp) / f"run-{i}", settings.inference.max_batch),
        )
        on_gpu = gpu(settings, sweep_frames, args.repeats, Path(tmp))
    bare_samples = [p["fps_samples"][0] for p in passes]
    baseline = {
        "frames": passes[0]["frames"],
        "fps_samples": bare_samples,
        "fps": float(np.median(bare_samples)),
        "cpu_ms_per_frame": float(np.median([p["cpu_ms_per_frame"] for p in passes])),
    }
    pairs = [round(run["fps"] / float(np.mean(bare_samples[i : i + 2])), 3) for i, run in enumerate(runs)]
    staged = sorted(runs, key=lambda run: run["fps"])[len(runs) // 2]
    staged = {**staged, "fps_samples": [run["fps"] for run in runs], "paired_ratios": pairs}
    swept = sweep(settings, sweep_frames, args.repeats)
    by_threads = {str(threads): swept}
    for count in sorted({1, available_cpus()} - {threads}):
        by_threads[str(count)] = sweep(settings, sweep_frames, args.repeats, threads=count)
    steps = breakdown(settings, msgs[: min(len(msgs), 8)], args.repeats)
    result: dict[str, Any] = {
        "benchmark": "inference",
        "machine": machine(),
        "params": {
            "frames": args.frames,
            "frames_per_message": args.frames_per_message,
            "cameras": args.cameras,
            "repeats": args.repeats,
            "stage_runs": args.stage_runs,
            "model": settings.inference.model,
            "max_batch": settings.inference.max_batch,
            "cpu_max_batch": settings.inference.cpu_max_batch,
            "intra_op_threads": threads,
        },
        "bare": baseline,
        "stage": staged,
        "sweep": swept,
        "sweep_by_threads": by_threads,
        "breakdown": steps,
        "gpu": on_gpu,
        "summary": {
            "bare_fps": round(baseline["fps"], 1),
            "stage_fps": round(staged["fps"], 1),
            "ratio_stage_over_bare": round(float(np.median(pairs)), 3),
            "ratio_best_vs_best": round(max(r["fps"] for r in runs) / max(bare_samples), 3),
            "paired_ratios": pairs,
            "stage_complete": all(run["complete"] for run in runs),
            "bare_cpu_ms_per_frame": round(baseline["cpu_ms_per_frame"], 2),
            "stage_cpu_ms_per_frame": {k: round(v, 2) for k, v in staged.get("cpu_ms_per_frame", {}).items()},
            "breakdown_ms_per_message": steps,
            "sweep_fps": {k: round(v["fps"], 1) for k, v in swept.items()},
            "batch_gain_over_1": {
                t: {k: round(v["fps"] / table["1"]["fps"], 2) for k, v in table.items()}
                for t, table in by_threads.items()
            },
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
