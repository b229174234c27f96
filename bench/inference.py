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
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, bench_settings, interleaved, machine, pyplot, save_figure
from bench.inference_stage import stage
from bench.inference_sweep import gpu, sweep
from framepipe.core import messages
from framepipe.core.messages import Detection, DetectionsMessage, FrameBatch, FrameDetections
from framepipe.core.settings import Settings
from framepipe.media.letterbox import Letterbox
from framepipe.stages.inference.backends import available_cpus, ort_threads
from framepipe.stages.inference.detectors import build_detector
from framepipe.stages.inference.detectors.blazeface import FaceDetector, preprocess


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


def plot(result: dict[str, Any], path: Path) -> bool:
    """Three panels: bare vs stage (the ratio), the batch sweep per thread count, and the
    stage's time per message split into the steps ``breakdown`` measured."""
    plt = pyplot()
    if plt is None:
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
    parser.add_argument("--out", type=Path, default=RESULTS / "inference.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.repeats = 512, 2
    if args.stage_runs is None:
        args.stage_runs = args.repeats
    if args.stage_runs < 1:
        parser.error("--stage-runs must be at least 1")
    settings = bench_settings()
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
